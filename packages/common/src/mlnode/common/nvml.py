"""NVIDIA devices and driver through NVML (nvidia-ml-py), as the network node reads them.

Blocking (NVML calls the driver); call from a thread. Without an NVIDIA driver the device list
is empty and the driver read raises `Unavailable`, never an unhandled error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pynvml
from pydantic import BaseModel, Field

from mlnode.common.errors import Unavailable

_MIB = 1024 * 1024
_lock = threading.Lock()


class GpuDevice(BaseModel):
    """One device (`GET /api/v1/gpu/devices`)."""

    index: int = Field(description="NVML device index.")
    name: str = Field(description="Device name.")
    total_memory_mb: int = Field(description="Device memory, MiB.")
    free_memory_mb: int = Field(description="Free device memory, MiB.")
    used_memory_mb: int = Field(description="Used device memory, MiB.")
    utilization_percent: int | None = Field(None, description="GPU utilisation, percent.")
    temperature_c: int | None = Field(None, description="GPU temperature, Celsius.")
    is_available: bool = Field(description="False when NVML could not read the device.")
    error_message: str | None = Field(None, description="Why the device could not be read.")


class GpuDevices(BaseModel):
    """`GET /api/v1/gpu/devices`."""

    devices: list[GpuDevice] = Field(description="Every NVIDIA device; empty without a driver.")
    count: int = Field(description="Number of devices.")
    error_message: str | None = Field(None, description="Why there are none, when NVML failed.")


class GpuDriver(BaseModel):
    """`GET /api/v1/gpu/driver`."""

    driver_version: str = Field(description="NVIDIA driver version.")
    cuda_driver_version: str = Field(description="Highest CUDA version the driver supports.")
    nvml_version: str = Field(description="NVML library version.")


@contextmanager
def _nvml() -> Iterator[None]:
    with _lock:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise Unavailable(f"no NVIDIA driver: NVML cannot start ({exc})") from exc
        try:
            yield
        finally:
            pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _device(index: int) -> GpuDevice:
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(pynvml.nvmlDeviceGetName(handle))
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    except pynvml.NVMLError as exc:
        return GpuDevice(
            index=index, name="unknown", total_memory_mb=0, free_memory_mb=0, used_memory_mb=0,
            is_available=False, error_message=str(exc),
        )  # fmt: skip
    device = GpuDevice(
        index=index,
        name=name,
        total_memory_mb=int(memory.total) // _MIB,
        free_memory_mb=int(memory.free) // _MIB,
        used_memory_mb=int(memory.used) // _MIB,
        is_available=True,
    )
    try:
        device.utilization_percent = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        device.temperature_c = int(
            pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        )
    except pynvml.NVMLError as exc:
        device.error_message = f"partial read: {exc}"
    return device


def read_devices() -> GpuDevices:
    """Every device; `count: 0` with the reason where there is no NVIDIA driver."""
    try:
        with _nvml():
            devices = [_device(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Unavailable as exc:
        return GpuDevices(devices=[], count=0, error_message=exc.message)
    return GpuDevices(devices=devices, count=len(devices))


def read_driver() -> GpuDriver:
    """Driver, CUDA and NVML versions; `Unavailable` (503) without an NVIDIA driver."""
    with _nvml():
        cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
        return GpuDriver(
            driver_version=_text(pynvml.nvmlSystemGetDriverVersion()),
            cuda_driver_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
            nvml_version=_text(pynvml.nvmlSystemGetNVMLVersion()),
        )
