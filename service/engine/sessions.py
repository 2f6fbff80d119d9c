"""onnxruntime sessions of a package's decoder, and how a batch of latents runs through one.

``open_session`` picks the graph for the execution provider (fp16 on CUDA), applies the process's
thread and spinning settings, and refuses a graph whose names, shapes or metadata do not match its
manifest. A batch runs with plain ``session.run``, or with ORT IO binding.

With CUDA, IO binding keeps preallocated device inputs and one output buffer per batch size:
the latents (and a conditional model's one-hot attributes) are copied into the device buffers, the graph writes uint8 images (4x smaller than
float32) into its output buffer, and only those bytes come back to the host. The output buffer is
page-locked host memory (``cuda_pinned``) when onnxruntime offers it, so the copy back is a DMA.
On CPU the same code binds numpy-backed buffers, which is what the tests exercise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from synthgen.core.errors import ModelPackageError
from synthgen.core.package import ModelPackage, graph_metadata_mismatch

if TYPE_CHECKING:
    from service.engine.registry import LoadedModel

log = logging.getLogger(__name__)
Runner = Callable[[np.ndarray], np.ndarray]


def pick_providers(preference: str) -> list[str]:
    """CUDA when asked for (or 'auto') and present, else CPU."""
    available = ort.get_available_providers()
    if preference in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if preference == "cuda":
        log.warning("CUDA requested but onnxruntime has no CUDAExecutionProvider (%s); using CPU", available)
    return ["CPUExecutionProvider"]


def decoder_for(package: ModelPackage, providers: list[str]) -> Path:
    """The fp16 decoder on CUDA, when the package has one; the fp32 decoder everywhere else (never fp16 on CPU)."""
    if providers[0] == "CUDAExecutionProvider" and package.decoder_fp16_path is not None:
        return package.decoder_fp16_path
    return package.decoder_path


def _check_metadata(package: ModelPackage, path: Path, session: ort.InferenceSession) -> None:
    wrong = graph_metadata_mismatch(package, session.get_modelmeta().custom_metadata_map)
    if wrong:
        raise ModelPackageError(f"{path}: graph metadata {wrong} does not match manifest {package.ref} (mismatched package?)")


def graph_inputs(package: ModelPackage) -> dict[str, int]:
    """The decoder's inputs and their widths: ``z``, and for a conditional model the one-hot ``y``."""
    inputs = {"z": package.latent_dim}
    if package.condition_dim:
        inputs["y"] = package.condition_dim
    return inputs


def open_session(package: ModelPackage, providers: list[str], threads: int = 0, spinning: bool = False) -> ort.InferenceSession:
    """An onnxruntime session of the package's decoder, refused unless its names, shapes and metadata match."""
    path = decoder_for(package, providers)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    # Idle pool threads sleep instead of spinning: on a machine shared with the encoder threads, the
    # api and Redis, spinning burns the cores that they need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
        raise ModelPackageError(f"{path}: onnxruntime cannot load it ({exc})") from exc
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = graph_inputs(package)
    if [(i.name, i.shape[1]) for i in inputs] != list(expected.items()):
        want = " and ".join(f"{name} [batch, {width}]" for name, width in expected.items())
        raise ModelPackageError(f"{path}: expected input {want}, got {[(i.name, i.shape) for i in inputs]}")
    if [o.name for o in outputs] != ["images"] or list(outputs[0].shape[1:]) != list(package.image_shape):
        raise ModelPackageError(
            f"{path}: expected output images [batch, {', '.join(map(str, package.image_shape))}], "
            f"got {[(o.name, o.shape) for o in outputs]}"
        )
    _check_metadata(package, path, session)
    return session


class IoBindingRunner:
    """Runs one session with preallocated input and output buffers, one set per batch size.

    A decode row ``[z | y]`` is split into the graph's inputs as it is copied into their buffers.
    """

    def __init__(self, model: LoadedModel, device: str = "cuda", device_id: int = 0) -> None:
        self.model = model
        self.session = model.session
        self.device = device
        self.device_id = device_id
        self.inputs = graph_inputs(model.package)
        self.image_shape = model.package.image_shape
        self._buffers: dict[int, tuple[dict[str, ort.OrtValue], ort.OrtValue, ort.IOBinding]] = {}
        self._lock = threading.Lock()  # one batch at a time uses the buffers
        self.output_device = self._pick_output_device()

    def _pick_output_device(self) -> str:
        if self.device != "cuda":
            return self.device
        try:
            ort.OrtValue.ortvalue_from_shape_and_type([1, *self.image_shape], np.uint8, "cuda_pinned", 0)
            return "cuda_pinned"
        except Exception as exc:  # not every onnxruntime build offers pinned host buffers
            log.info("no cuda_pinned buffers (%s); images come back through device memory", exc)
            return "cuda"

    def _buffers_for(self, n: int) -> tuple[dict[str, ort.OrtValue], ort.OrtValue, ort.IOBinding]:
        if n not in self._buffers:
            binding = self.session.io_binding()
            values = {}
            for name, width in self.inputs.items():
                values[name] = ort.OrtValue.ortvalue_from_shape_and_type([n, width], np.float32, self.device, self.device_id)
                binding.bind_ortvalue_input(name, values[name])
            images = ort.OrtValue.ortvalue_from_shape_and_type(
                [n, *self.image_shape], np.uint8, self.output_device, self.device_id
            )
            binding.bind_ortvalue_output("images", images)
            self._buffers[n] = (values, images, binding)
        return self._buffers[n]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        with self._lock:
            values, images, binding = self._buffers_for(len(rows))
            for name, feed in self.model.feeds(rows).items():
                values[name].update_inplace(feed)
            binding.synchronize_inputs()
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return np.array(images.numpy(), copy=True)  # the buffer is reused by the next batch


def make_runner(model: LoadedModel, io_binding: str) -> Runner:
    """``auto``: IO binding on CUDA, plain run on CPU; ``on`` / ``off`` force it."""
    on_cuda = model.provider == "CUDAExecutionProvider"
    if io_binding == "on" or (io_binding == "auto" and on_cuda):
        return IoBindingRunner(model, "cuda" if on_cuda else "cpu")
    return model.decode
