"""GPU utilization and memory as Prometheus gauges, read through NVML when it is present.

``nvidia-ml-py`` comes with the ``gpu`` extra. Without it, or without an NVIDIA driver, nothing is
registered and the process runs as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
_registered = False


class NvmlCollector(Collector):
    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        utilization = GaugeMetricFamily(
            "synthgen_gpu_utilization_ratio", "GPU busy fraction over the last sample period", labels=["gpu"]
        )
        memory = GaugeMetricFamily("synthgen_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        for i, handle in enumerate(self.handles):
            try:
                rates = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                info = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # NVML errors are its own types; a failed read must not break /metrics
                log.debug("NVML read failed for GPU %d: %s", i, exc)
                continue
            utilization.add_metric([str(i)], rates.gpu / 100.0)
            memory.add_metric([str(i)], float(info.used))
        yield utilization
        yield memory


def register_gpu_metrics() -> bool:
    """Register the NVML collector once; returns whether GPU metrics are available."""
    global _registered
    if _registered:
        return True
    try:
        import pynvml

        pynvml.nvmlInit()
        REGISTRY.register(NvmlCollector(pynvml))
    except Exception as exc:  # no package, no driver, or no GPU
        log.debug("no GPU metrics: %s", exc)
        return False
    _registered = True
    log.info("GPU metrics from NVML enabled")
    return True
