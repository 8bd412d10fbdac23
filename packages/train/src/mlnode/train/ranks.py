"""Local rank 0's side: start the follower processes, command them, stop them (see `local`).

A follower that dies fails the job with a message naming it: its exit is noticed before each
command, turns the error of a broken collective into `LocalRankFailed`, and (nccl, where a dead
peer leaves collectives hanging) makes a watcher thread abort the process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import TCPStore

from mlnode.train.inner import InnerLoop
from mlnode.train.local import (
    COMMAND_KEY,
    HOST,
    READY_KEY,
    Command,
    FollowerSpec,
    has_adam_state,
    join_group,
    local_step,
    sync_state,
    weights_agree,
)
from mlnode.train.schemas import LocalRankInfo, TrainRequest

log = logging.getLogger(__name__)

POLL_S = 0.5
#: How long a follower gets to exit after `stop` before it is killed.
EXIT_GRACE_S = 10.0
#: After a collective failed, how long to wait for a follower's exit to show.
DEATH_GRACE_S = 3.0


class LocalRankFailed(RuntimeError):
    """A follower process died or never started."""


@dataclass
class Follower:
    """One follower process."""

    rank: int
    device: torch.device
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def name(self) -> str:
        """How errors name it."""
        return f"local rank {self.rank} (pid {self.process.pid}, {self.device})"

    def exit_message(self) -> str | None:
        """Why it is gone, or None while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        return f"{self.name()} exited with code {code}: {self._last_line()} (log {self.log_path})"

    def _last_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][-300:] if lines else "empty log"

    def kill(self) -> None:
        """Kill its whole session and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log_file.close()


class LocalRanks:
    """Local ranks 1..N-1 of a node's training job, driven from rank 0 (this process)."""

    def __init__(
        self,
        devices: tuple[torch.device, ...],
        log_dir: Path,
        timeout_s: float,
        torch_threads: int | None = None,
    ) -> None:
        self.devices = list(devices)
        self.log_dir = log_dir
        self.timeout_s = timeout_s
        self.torch_threads = torch_threads
        self.followers: list[Follower] = []
        self._store: TCPStore | None = None
        self._seq = 0
        self._joined = False
        self._closing = threading.Event()
        self._lock = threading.Lock()

    @property
    def world(self) -> int:
        """Number of local ranks, this one included."""
        return len(self.devices)

    def start(self, request: TrainRequest, inner: InnerLoop, stop: threading.Event) -> bool:
        """Start the followers and join them; False when `stop` came first."""
        if dist.is_initialized():
            raise RuntimeError("a torch.distributed process group is up in this process already")
        store = TCPStore(
            HOST, 0, self.world, is_master=True, wait_for_workers=False,
            timeout=timedelta(seconds=self.timeout_s),
        )  # fmt: skip
        self._store = store
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for rank in range(1, self.world):
            self.followers.append(self._spawn(rank, request, store.port))
        if not self._await_ready(store, stop):
            return False
        with self._guard():
            join_group(store, 0, self.devices, self.timeout_s)
            self._joined = True
            inner.distribute()
        threading.Thread(target=self._watch, name="train-local-ranks", daemon=True).start()
        return True

    def _spawn(self, rank: int, request: TrainRequest, port: int) -> Follower:
        spec = FollowerSpec(
            request=request,
            local_rank=rank,
            devices=[str(d) for d in self.devices],
            port=port,
            timeout_s=self.timeout_s,
            torch_threads=self.torch_threads,
            parent_pid=os.getpid(),
        )
        path = self.log_dir / f"local-rank-{rank}.log"
        log_file = path.open("ab")
        log_file.write(f"--- local rank {rank} of task {request.task_id}\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "mlnode.train.follower"],
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        follower = Follower(rank, self.devices[rank], process, path, log_file)
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: the exit says why
            process.stdin.write(spec.model_dump_json().encode())
            process.stdin.close()
        log.info("started %s, log %s", follower.name(), path)
        return follower

    def _await_ready(self, store: TCPStore, stop: threading.Event) -> bool:
        deadline = time.monotonic() + self.timeout_s
        pending = list(self.followers)
        while pending:
            if stop.is_set():
                return False
            self._raise_if_dead()
            if not store.check([READY_KEY.format(pending[0].rank)]):
                if time.monotonic() > deadline:
                    raise LocalRankFailed(
                        f"{pending[0].name()} did not start within {self.timeout_s:.0f} s"
                    )
                time.sleep(POLL_S / 5)
                continue
            pending.pop(0)
        return True

    def describe(self) -> list[LocalRankInfo]:
        """Every local rank, for status bodies."""
        me = LocalRankInfo(local_rank=0, device=str(self.devices[0]), pid=os.getpid(), log=None)
        return [me] + [
            LocalRankInfo(
                local_rank=f.rank, device=str(f.device), pid=f.process.pid, log=str(f.log_path)
            )
            for f in self.followers
        ]

    def step(self, inner: InnerLoop, batch: torch.Tensor, step: int) -> float:
        """Inner step `step` of the node's `batch` on every local rank; the node's mean loss."""
        self._post(Command(cmd="step", step=step))
        with self._guard():
            return local_step(inner, batch, step, 0, self.world)

    def sync(self, inner: InnerLoop, optimizer: bool = False) -> None:
        """Give every follower this rank's weights (and AdamW state, where it has some)."""
        optimizer = optimizer and has_adam_state(inner)
        self._post(Command(cmd="sync", optimizer=optimizer))
        with self._guard():
            sync_state(inner, optimizer)

    def weights_agree(self, inner: InnerLoop) -> bool:
        """Whether every local rank holds the same weights as this one."""
        self._post(Command(cmd="check"))
        with self._guard():
            return weights_agree(inner, self.world)

    def _post(self, command: Command) -> None:
        self._raise_if_dead()
        assert self._store is not None
        self._store.set(COMMAND_KEY.format(self._seq), command.model_dump_json())
        if self._seq >= 2:
            self._store.delete_key(COMMAND_KEY.format(self._seq - 2))
        self._seq += 1

    def _dead(self) -> list[str]:
        return [m for m in (f.exit_message() for f in self.followers) if m is not None]

    def _raise_if_dead(self) -> None:
        dead = self._dead()
        if dead:
            raise LocalRankFailed("; ".join(dead))

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """A collective that fails because a follower died fails with the follower's name."""
        try:
            yield
        except Exception as exc:
            deadline = time.monotonic() + DEATH_GRACE_S
            while not self._dead() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._dead():
                raise LocalRankFailed("; ".join(self._dead())) from exc
            raise

    def _watch(self) -> None:
        """Nccl collectives hang on a dead peer: abort the group so rank 0's wait ends."""
        while not self._closing.wait(POLL_S):
            dead = self._dead()
            if not dead:
                continue
            log.error("local rank died: %s", "; ".join(dead))
            with self._lock:
                if self.devices[0].type == "cuda" and dist.is_initialized():
                    dist.distributed_c10d._abort_process_group()
            return

    def close(self) -> None:
        """Stop the followers (killed after a grace period) and destroy the process group."""
        self._closing.set()
        graceful = self._joined and not self._dead()
        if graceful:
            with contextlib.suppress(Exception):
                self._post(Command(cmd="stop"))
        deadline = time.monotonic() + (EXIT_GRACE_S if graceful else 0.0)
        for follower in self.followers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                follower.process.wait(max(0.0, deadline - time.monotonic()))
            follower.kill()
        with self._lock:
            if dist.is_initialized():
                try:
                    dist.destroy_process_group()
                except Exception:  # a broken group is gone all the same
                    log.warning("destroying the local process group failed", exc_info=True)
        self._store = None
