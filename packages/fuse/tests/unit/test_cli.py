"""`python -m mlnode.fuse config.yaml`: a fused checkpoint, or exit status 2 with the cause."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mlnode.fuse.cli import EXIT_BAD_INPUT, main
from mlnode.fuse.testing import write_checkpoint


def config(tmp_path: Path, **change: object) -> Path:
    a = write_checkpoint(tmp_path / "a", {"w": torch.tensor([1.0, 2.0])})
    b = write_checkpoint(tmp_path / "b", {"w": torch.tensor([3.0, 4.0])})
    body = {
        "task_id": "cli",
        "method": "fedavg",
        "sources": [{"path": str(a), "weight": 1}, {"path": str(b), "weight": 3}],
        "output": {"path": str(tmp_path / "out"), "max_shard_size": "1GB"},
        **change,
    }
    path = tmp_path / "fuse.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_cli_fuses_a_config_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlnode.fuse", str(config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "out")
    fused = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(fused["w"], torch.tensor([2.5, 3.5]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "average"}, "method: Input should be"),
        ({"params": {"t": 1}}, "fedavg has no parameter t"),
        ({"sources": [{"path": "/missing", "weight": 1}]}, "/missing: no such file"),
        ({"sources": [{"peer_id": "p", "weight": 1}]}, "no transport"),
    ],
)
def test_cli_bad_input_exits_2_with_the_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], message: str
) -> None:
    assert main([str(config(tmp_path, **change))]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_unreadable_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text("method: [unclosed")
    assert main([str(tmp_path / "bad.yaml")]) == EXIT_BAD_INPUT
    assert "bad.yaml" in capsys.readouterr().err
