from pathlib import Path

import psutil
import torch

from mlnode.common.hardware import discover_hardware


def test_hardware_reports_this_machine(tmp_path: Path) -> None:
    hardware = discover_hardware(tmp_path)
    assert hardware.cpu_cores >= 1
    assert hardware.ram_total_bytes == psutil.virtual_memory().total
    assert 0 < hardware.disk_free_bytes
    assert len(hardware.gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
