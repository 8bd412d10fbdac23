"""`python -m mlnode.fuse config.yaml`: fuse local checkpoints without a running node.

The YAML file holds a fusion request, the body of `POST /api/v1/fuse/start`. Peers are reached
only through a running node's transport, so the command line takes local paths.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

import yaml
from pydantic import ValidationError

from mlnode.fuse.executor import FusionProgress, NonFiniteTensor
from mlnode.fuse.job import NoTransport, prepare, run
from mlnode.fuse.schemas import FuseRequest
from mlnode.fuse.service import BAD_INPUT

log = logging.getLogger("mlnode.fuse")

EXIT_BAD_INPUT = 2


class ConfigError(ValueError):
    """The config file cannot be read as a fusion request."""


def load_request(path: Path) -> FuseRequest:
    """Read and validate a YAML fusion request."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return FuseRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc


def fuse(request: FuseRequest) -> Path:
    """Run one fusion here, logging progress."""
    prepared = prepare(request, transport=None)
    progress = FusionProgress()
    output = run(prepared, progress, threading.Event())
    done = progress.snapshot()
    log.info(
        "%d tensors, %.2f GB at %.2f GB/s",
        done.tensors_done,
        done.bytes_done / 1e9,
        done.bytes_per_s / 1e9,
    )
    return output


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input)."""
    parser = argparse.ArgumentParser(prog="python -m mlnode.fuse", description=__doc__)
    parser.add_argument("config", type=Path, help="YAML file with a fusion request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        output = fuse(load_request(args.config))
    except (ConfigError, NoTransport, NonFiniteTensor, *BAD_INPUT) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_BAD_INPUT
    print(output)  # noqa: T201
    return 0
