"""GPU utilization and memory from NVML (nvidia-ml-py). No GPU or no driver: no readings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPUReading:
    index: int
    utilization: float  # 0..1, busy fraction over NVML's last sample period
    memory_used_bytes: int
    memory_total_bytes: int


class GPUInfo:
    """Reads every visible GPU; initialises NVML once and degrades to [] when it is unavailable."""

    def __init__(self) -> None:
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._count = pynvml.nvmlDeviceGetCount()
        except Exception as exc:  # no libnvidia-ml / no driver / no GPU: a normal CPU worker
            log.debug("NVML unavailable: %s", exc)
            self._nvml = None
            self._count = 0

    @property
    def available(self) -> bool:
        return self._nvml is not None and self._count > 0

    def read(self) -> list[GPUReading]:
        if not self.available:
            return []
        nvml = self._nvml
        readings = []
        for i in range(self._count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # a GPU that fell off the bus must not break /metrics
                log.warning("NVML read of GPU %d failed: %s", i, exc)
                continue
            readings.append(GPUReading(i, util.gpu / 100.0, int(mem.used), int(mem.total)))
        return readings
