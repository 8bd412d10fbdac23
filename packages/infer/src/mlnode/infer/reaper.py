"""Engines left running by a node that was killed are found and killed at the next start.

Engines run in sessions of their own, so they outlive a SIGKILLed node; each spawned engine's
process group is recorded in the log directory, and the node's next start kills what is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


class EngineRecord:
    """The process groups of running engines, one id per line in a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> set[int]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return set()
        return {int(line) for line in text.split() if line.isdigit()}

    def _write(self, pgids: set[int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(f"{pgid}\n" for pgid in sorted(pgids)))

    def add(self, pgid: int) -> None:
        """An engine started."""
        self._write(self._read() | {pgid})

    def remove(self, pgid: int) -> None:
        """An engine's group is gone."""
        self._write(self._read() - {pgid})

    def reap(self, marker: str) -> list[int]:
        """Kill recorded groups whose leader still runs a command line containing `marker`."""
        killed = []
        for pgid in self._read():
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                leader = psutil.Process(pgid)
                if os.getpgid(pgid) == pgid and marker in " ".join(leader.cmdline()):
                    os.killpg(pgid, signal.SIGKILL)
                    killed.append(pgid)
        if killed:
            log.warning("killed engines left by a previous run: process groups %s", killed)
        self._write(set())
        return killed
