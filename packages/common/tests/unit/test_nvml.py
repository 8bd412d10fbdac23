"""NVML reads: with no NVIDIA driver an empty list and a clear 503, never an unhandled error."""

import pytest

from mlnode.common.errors import Unavailable
from mlnode.common.nvml import read_devices, read_driver


def test_devices_and_driver_agree_about_the_driver() -> None:
    devices = read_devices()
    assert devices.count == len(devices.devices)
    if devices.count == 0:
        assert devices.error_message is not None and "NVIDIA" in devices.error_message
        with pytest.raises(Unavailable, match="no NVIDIA driver"):
            read_driver()
    else:
        driver = read_driver()
        assert driver.driver_version and driver.nvml_version
        assert all(d.total_memory_mb > 0 for d in devices.devices if d.is_available)
