"""onnxruntime sessions of a package's decoder, and how a batch of latents runs through one.

``open_session`` picks the graph for the execution provider (fp16 on CUDA), applies the process's
thread and spinning settings, and refuses a graph whose names, shapes or metadata do not match its
manifest. A batch runs with plain ``session.run``, or with ORT IO binding.

With CUDA, IO binding keeps one preallocated device input and one output buffer per batch size:
the latents are copied into the device buffer, the graph writes uint8 images (4x smaller than
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
    if [i.name for i in inputs] != ["z"] or inputs[0].shape[1] != package.latent_dim:
        raise ModelPackageError(
            f"{path}: expected input z [batch, {package.latent_dim}], got {[(i.name, i.shape) for i in inputs]}"
        )
    if [o.name for o in outputs] != ["images"] or list(outputs[0].shape[1:]) != list(package.image_shape):
        raise ModelPackageError(
            f"{path}: expected output images [batch, {', '.join(map(str, package.image_shape))}], "
            f"got {[(o.name, o.shape) for o in outputs]}"
        )
    _check_metadata(package, path, session)
    return session


class IoBindingRunner:
    """Runs one session with preallocated input and output buffers, one pair per batch size."""

    def __init__(self, model: LoadedModel, device: str = "cuda", device_id: int = 0) -> None:
        self.session = model.session
        self.device = device
        self.device_id = device_id
        self.latent_dim = model.package.latent_dim
        self.image_shape = model.package.image_shape
        self._buffers: dict[int, tuple[ort.OrtValue, ort.OrtValue, ort.IOBinding]] = {}
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

    def _buffers_for(self, n: int) -> tuple[ort.OrtValue, ort.OrtValue, ort.IOBinding]:
        if n not in self._buffers:
            z = ort.OrtValue.ortvalue_from_shape_and_type([n, self.latent_dim], np.float32, self.device, self.device_id)
            images = ort.OrtValue.ortvalue_from_shape_and_type(
                [n, *self.image_shape], np.uint8, self.output_device, self.device_id
            )
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("z", z)
            binding.bind_ortvalue_output("images", images)
            self._buffers[n] = (z, images, binding)
        return self._buffers[n]

    def __call__(self, z: np.ndarray) -> np.ndarray:
        with self._lock:
            z_value, images, binding = self._buffers_for(len(z))
            z_value.update_inplace(np.ascontiguousarray(z, dtype=np.float32))
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
