"""GPU (NVML) and host figures of schema v1, read in a worker thread; no sensor, no series."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pynvml

log = logging.getLogger(__name__)

CGROUP_V2_LIMIT = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
#: cgroup v1 reports "no limit" as a huge number.
_NO_LIMIT = 1 << 60

#: (family, labels, value) of one series.
Sample = tuple[str, dict[str, str], float]


@dataclass
class Snapshot:
    """One reading: samples per family and when it was taken."""

    samples: list[Sample] = field(default_factory=list)
    at: float | None = None


def memory_limit() -> int | None:
    """The cgroup memory limit (v2, else v1), None when none is set."""
    for path in (CGROUP_V2_LIMIT, CGROUP_V1_LIMIT):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        value = int(text)
        return None if value >= _NO_LIMIT else value
    return None


class HostReader:
    """CPU busy / steal ratios between two readings, memory, the HF cache's free disk."""

    def __init__(self, hf_cache: Path) -> None:
        self.hf_cache = hf_cache
        self._last = psutil.cpu_times()

    def read(self) -> Snapshot:
        """Take one reading."""
        now = psutil.cpu_times()
        deltas = {k: getattr(now, k) - getattr(self._last, k) for k in now._fields}
        self._last = now
        total = sum(deltas.values())
        samples: list[Sample] = []
        if total > 0:
            idle = deltas.get("idle", 0.0) + deltas.get("iowait", 0.0)
            samples.append(("mlnode_host_cpu_busy_ratio", {}, 1.0 - idle / total))
            if "steal" in deltas:
                samples.append(("mlnode_host_cpu_steal_ratio", {}, deltas["steal"] / total))
        samples.append(("mlnode_host_memory_used_bytes", {}, float(psutil.virtual_memory().used)))
        limit = memory_limit()
        if limit is not None:
            samples.append(("mlnode_host_memory_limit_bytes", {}, float(limit)))
        probe = self.hf_cache
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        samples.append(
            ("mlnode_host_hf_cache_free_bytes", {}, float(shutil.disk_usage(probe).free))
        )
        return Snapshot(samples, time.time())


class GpuReader:
    """NVML readings of every GPU, and XID critical errors counted through NVML events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = False
        self._events: object | None = None
        self._xids: dict[tuple[str, str], int] = {}

    def _start(self) -> bool:
        if self._started:
            return True
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:
            return False
        self._started = True
        try:
            self._events = pynvml.nvmlEventSetCreate()
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                pynvml.nvmlDeviceRegisterEvents(
                    handle, pynvml.nvmlEventTypeXidCriticalError, self._events
                )
        except pynvml.NVMLError as exc:
            log.info("NVML XID events unavailable: %s", exc)
        return True

    def read(self) -> Snapshot:
        """Take one reading; empty without an NVIDIA driver."""
        with self._lock:
            if not self._start():
                return Snapshot()
            samples: list[Sample] = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                samples.extend(_device_samples(i))
            self._drain_xids()
            samples.extend(
                ("mlnode_gpu_xid_events_total", {"gpu_index": gpu, "xid": xid}, float(n))
                for (gpu, xid), n in sorted(self._xids.items())
            )
            return Snapshot(samples, time.time())

    def _drain_xids(self) -> None:
        if self._events is None:
            return
        while True:
            try:
                event = pynvml.nvmlEventSetWait_v2(self._events, 0)
            except pynvml.NVMLError:
                return
            index = str(pynvml.nvmlDeviceGetIndex(event.device))
            key = (index, str(event.eventData))
            self._xids[key] = self._xids.get(key, 0) + 1

    def close(self) -> None:
        """Release NVML."""
        with self._lock:
            if self._started:
                pynvml.nvmlShutdown()
                self._started = False


def _device_samples(index: int) -> list[Sample]:
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
    except pynvml.NVMLError:
        return []
    labels = {
        "gpu_index": str(index),
        "gpu_model": name.decode() if isinstance(name, bytes) else name,
    }
    reads: dict[str, Callable[[], Any]] = {
        "mlnode_gpu_temp_core_celsius": lambda: pynvml.nvmlDeviceGetTemperature(
            handle, pynvml.NVML_TEMPERATURE_GPU
        ),
        "mlnode_gpu_temp_hbm_celsius": lambda: (
            pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_MEMORY_TEMP])[0].value.uiVal
        ),
        "mlnode_gpu_power_draw_watts": lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
        "mlnode_gpu_power_limit_watts": lambda: (
            pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
        ),
        "mlnode_gpu_sm_clock_hertz": lambda: (
            pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM) * 1e6
        ),
        "mlnode_gpu_sm_clock_max_hertz": lambda: (
            pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM) * 1e6
        ),
        "mlnode_gpu_clocks_event_reasons": lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(
            handle
        ),
        "mlnode_gpu_memory_used_bytes": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used,
        "mlnode_gpu_memory_free_bytes": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).free,
        "mlnode_gpu_ecc_dbe_total": lambda: pynvml.nvmlDeviceGetTotalEccErrors(
            handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
        ),
        "mlnode_gpu_pcie_replay_total": lambda: pynvml.nvmlDeviceGetPcieReplayCounter(handle),
    }
    samples: list[Sample] = []
    for family, read in reads.items():
        try:
            samples.append((family, labels, float(read())))
        except (pynvml.NVMLError, AttributeError, IndexError):
            continue
    return samples
