"""vLLM engine processes: start, readiness, health, and stopping the whole process group.

Each instance is `python -m vllm.entrypoints.openai.api_server` in a session of its own (so one
signal reaches the server and every worker it forks), bound to loopback on a free port, with its
output in its own log file; the tail of that file is the cause quoted when an engine fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from mlnode.common.engines import EngineClient
from mlnode.common.errors import EngineFailed, InvalidRequest
from mlnode.common.hygiene import child_env, mask_values, redact_argv, secret_values
from mlnode.infer.args import EngineArgs, plugin_env, with_plugin_args
from mlnode.infer.balancer import Backend
from mlnode.infer.reaper import EngineRecord
from mlnode.infer.settings import InferSettings, inherited_env

log = logging.getLogger(__name__)

_TAIL_BYTES = 64 * 1024
_READY_POLL_S = 0.25


class InstanceState(StrEnum):
    """Life of one engine instance."""

    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DEAD = "dead"
    STOPPED = "stopped"


@dataclass(frozen=True)
class EngineLaunch:
    """What every instance of one `/inference/up` runs."""

    model: str
    dtype: str
    args: EngineArgs


def free_port(host: str) -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def read_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(fh.seek(0, os.SEEK_END) - _TAIL_BYTES, 0))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def plan_gpu_groups(gpus: Sequence[int], per_instance: int) -> list[tuple[int, ...]]:
    """Slices of `gpus` for one instance each; `[()]` (one CPU instance) without GPUs."""
    if not gpus:
        return [()]
    if len(gpus) < per_instance:
        raise InvalidRequest(
            f"tensor x pipeline parallel size is {per_instance} GPUs per instance, "
            f"but only {len(gpus)} GPU(s) are available",
            param="additional_args",
        )
    count = len(gpus) // per_instance
    if count * per_instance != len(gpus):
        log.warning("%d GPU(s) left unused", len(gpus) - count * per_instance)
    return [tuple(gpus[i * per_instance : (i + 1) * per_instance]) for i in range(count)]


@dataclass
class EngineInstance:
    """One engine process group on one slice of GPUs (or on CPU)."""

    index: int
    gpus: tuple[int, ...]
    log_path: Path
    record: EngineRecord = field(repr=False)
    port: int = 0
    state: InstanceState = InstanceState.STOPPED
    restarts: int = 0
    exit_code: int | None = None
    pid: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    backend: Backend | None = None
    started_at: float = 0.0
    signal: str = "health"
    reason: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def spawn(self, settings: InferSettings, launch: EngineLaunch) -> None:
        """Start the process on a fresh port; the previous log is kept as `.1`."""
        self.port = free_port(settings.engine_host)
        self.backend = Backend(
            key=f"{self.index}:{self.port}", host=settings.engine_host, port=self.port
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        argv = [
            settings.python,
            *("-m", settings.engine_module),
            *("--model", launch.model, "--dtype", launch.dtype),
            *("--host", settings.engine_host, "--port", str(self.port)),
            *("--shutdown-timeout", str(settings.engine_shutdown_timeout_s)),
            *with_plugin_args(launch.args.args),
        ]
        # Engines (and any model code they run) see only what they need, not the node's secrets.
        env = {**child_env(inherited_env()), **settings.engine_env}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
        else:
            env.update(settings.cpu_engine_env)
        env.update(plugin_env(env))
        with self.log_path.open("wb") as out:
            self.secrets = tuple(secret_values(argv))
            shown = " ".join(redact_argv(argv))
            out.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {shown}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.proc.pid
        self.record.add(self.pid)
        self.state = InstanceState.STARTING
        self.exit_code = None
        self.started_at = time.monotonic()
        self.signal, self.reason = "health", None
        log.info(
            "engine %d started: pid %d port %d gpus %s", self.index, self.pid, self.port, self.gpus
        )

    def poll(self) -> int | None:
        """Exit code once the server process has ended (its group is killed then, once)."""
        if self.proc is None:
            return self.exit_code
        code = self.proc.poll()
        if code is not None:
            _kill_group(self.proc.pid, signal.SIGKILL)
            self.record.remove(self.proc.pid)
            self.exit_code = code
            self.proc = None
        return code

    def tail(self, lines: int) -> str:
        """The last lines this instance printed (vLLM prints its arguments: secrets masked)."""
        return mask_values(read_tail(self.log_path, lines), self.secrets)

    async def check_health(self, client: EngineClient, timeout_s: float) -> bool:
        """GET /health answers 200."""
        if self.backend is None:
            return False
        try:
            answer = await client.get(self.backend, "/health", timeout_s=timeout_s)
        except EngineFailed:
            return False
        return answer.status_code == 200

    async def wait_ready(self, client: EngineClient, timeout_s: float, tail_lines: int) -> None:
        """Return once /health answers 200; `EngineFailed` with the log tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.poll()
            if code is not None:
                self.state = InstanceState.DEAD
                raise EngineFailed(
                    f"engine {self.index} exited with code {code} during start-up; "
                    f"last lines of {self.log_path}:\n{self.tail(tail_lines)}"
                )
            if await self.check_health(client, min(_READY_POLL_S * 8, timeout_s)):
                self.state = InstanceState.HEALTHY
                return
            await asyncio.sleep(_READY_POLL_S)
        raise EngineFailed(
            f"engine {self.index} did not answer /health within {timeout_s:.0f} s; "
            f"last lines of {self.log_path}:\n{self.tail(tail_lines)}"
        )

    async def terminate(self, timeout_s: float) -> None:
        """SIGTERM the group, wait, then SIGKILL whatever is left of it."""
        proc = self.proc
        if proc is None:
            if self.state is not InstanceState.DEAD:
                self.state = InstanceState.STOPPED
            return
        if proc.poll() is None:
            _kill_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        _kill_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            await asyncio.to_thread(proc.wait)
        self.record.remove(proc.pid)
        self.exit_code = proc.returncode
        self.proc = None
        self.state = InstanceState.STOPPED


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class VLLMGroup:
    """Every engine instance of one `/inference/up`: one per GPU group, or one on CPU."""

    def __init__(
        self,
        settings: InferSettings,
        launch: EngineLaunch,
        gpu_groups: Sequence[tuple[int, ...]],
        log_dir: Path,
        record: EngineRecord,
    ) -> None:
        self.settings = settings
        self.launch = launch
        self.instances = [
            EngineInstance(i, gpus, log_dir / f"engine-{i}.log", record)
            for i, gpus in enumerate(gpu_groups)
        ]

    async def start(self, client: EngineClient) -> None:
        """Spawn every instance and wait until all serve; on failure nothing is left running."""
        try:
            for instance in self.instances:
                instance.spawn(self.settings, self.launch)
            await asyncio.gather(*(self._ready(i, client) for i in self.instances))
        except BaseException:
            await self.stop()
            raise

    async def _ready(self, instance: EngineInstance, client: EngineClient) -> None:
        await instance.wait_ready(
            client, self.settings.startup_timeout_s, self.settings.log_tail_lines
        )

    async def restart(self, instance: EngineInstance, client: EngineClient) -> None:
        """Replace a dead instance with a new process on a new port."""
        await instance.terminate(self.settings.stop_timeout_s)
        instance.restarts += 1
        instance.spawn(self.settings, self.launch)
        try:
            await self._ready(instance, client)
        except BaseException:
            await instance.terminate(self.settings.stop_timeout_s)
            instance.state = InstanceState.DEAD
            raise

    async def stop(self) -> None:
        """Stop every instance's process group."""
        await asyncio.gather(
            *(i.terminate(self.settings.stop_timeout_s) for i in self.instances),
            return_exceptions=True,
        )

    def healthy_backends(self) -> list[Backend]:
        """Backends of the instances that serve now."""
        return [
            i.backend
            for i in self.instances
            if i.state is InstanceState.HEALTHY and i.backend is not None
        ]
