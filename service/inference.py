"""How a batch of latents runs through the decoder: plain ``session.run``, or ORT IO binding.

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

import numpy as np
import onnxruntime as ort

from service.registry import LoadedModel

log = logging.getLogger(__name__)
Runner = Callable[[np.ndarray], np.ndarray]


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
