"""Service lifecycle shared by every feature package.

A `Service` holds the GPU while it runs; the `ServiceGate` lets at most one service run at a time.
`JobState` is the stored, thread-safe state machine behind `status()`: an exception in a worker
lands in `last_error` and the `FAILED` phase, never lost, and is cleared by the next start.
`WorkerService` runs blocking work in a thread, off the event loop.

A stop wins over a start still in progress: each start has a generation (`JobState.begin`), and
a start whose job was stopped, or replaced by a newer start, while it awaited its preparation
(a slow peer's listing, a model being built) launches nothing (`StoppedWhileStarting`, 409).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, Field
from typing_extensions import TypeVar as DefaultedTypeVar

from mlnode.common.errors import MLNodeError, ServiceConflict
from mlnode.common.hygiene import redact_text

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ServiceT = TypeVar("ServiceT", bound="Service[Any]")
#: The progress model of a service's status (each package has its own; any when unspecified).
ProgressT = DefaultedTypeVar("ProgressT", default=Any)
StatusT = TypeVar("StatusT", bound="ServiceStatus[Any]")


class ServiceKind(StrEnum):
    """The node states a service puts the node in (the network node's names, plus FUSE)."""

    POW = "POW"
    INFERENCE = "INFERENCE"
    TRAIN = "TRAIN"
    FUSE = "FUSE"


class Phase(StrEnum):
    """Where a service's current (or last) job stands."""

    IDLE = "IDLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


ACTIVE_PHASES = frozenset({Phase.STARTING, Phase.RUNNING, Phase.STOPPING})


class ServiceStatus(BaseModel, Generic[ProgressT]):
    """Status of one service, as every package reports it; `progress` has the package's schema."""

    kind: ServiceKind = Field(description="Which service this is.")
    phase: Phase = Field(description="Phase of the current or last job.")
    running: bool = Field(description="True while the service holds the GPU.")
    healthy: bool = Field(description="False when the last job failed.")
    started_at: datetime | None = Field(None, description="When the current or last job started.")
    finished_at: datetime | None = Field(None, description="When the last job ended.")
    last_error: str | None = Field(None, description="Why the last job failed or was refused.")
    progress: ProgressT | None = Field(
        None, description="Service-specific figures of the current or last job; null before one."
    )


def describe_error(exc: BaseException) -> str:
    """A one-line cause for status bodies."""
    if isinstance(exc, MLNodeError):
        return redact_text(exc.message)
    return redact_text(f"{type(exc).__name__}: {exc}")


class JobState:
    """Thread-safe phase, timestamps and error of a service's job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.phase = Phase.IDLE
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.last_error: str | None = None
        #: Counts starts; a start remembers its own, so it can tell a stop or restart came since.
        self.generation = 0
        self._halted = 0

    @property
    def active(self) -> bool:
        """True while a job is starting, running or stopping."""
        return self.phase in ACTIVE_PHASES

    def begin(self) -> None:
        """A new job starts: clear the previous outcome."""
        with self._lock:
            self.generation += 1
            self.phase = Phase.STARTING
            self.started_at = datetime.now(UTC)
            self.finished_at = None
            self.last_error = None

    def set_phase(self, phase: Phase) -> None:
        """Move to a phase; terminal phases stamp `finished_at`."""
        with self._lock:
            self.phase = phase
            if phase not in ACTIVE_PHASES:
                self.finished_at = datetime.now(UTC)

    def halt(self) -> None:
        """A stop was asked for: the current generation's start may launch nothing more."""
        with self._lock:
            self._halted = self.generation

    def is_current(self, generation: int) -> bool:
        """True while the job of `generation` is neither stopped nor replaced by a newer one."""
        with self._lock:
            return self.generation == generation and self._halted != generation

    def fail(self, exc: BaseException | str) -> None:
        """Record a failure; the service is unhealthy until its next start or stop."""
        message = exc if isinstance(exc, str) else describe_error(exc)
        with self._lock:
            self.phase = Phase.FAILED
            self.last_error = message
            self.finished_at = datetime.now(UTC)
        log.error("job failed: %s", message)

    def refuse(self, exc: MLNodeError) -> None:
        """A start was refused for bad input: nothing ran, the service stays healthy."""
        with self._lock:
            self.phase = Phase.STOPPED
            self.last_error = exc.message
            self.finished_at = datetime.now(UTC)

    def snapshot(
        self,
        kind: ServiceKind,
        progress: BaseModel | None,
        model: type[StatusT] = ServiceStatus,  # type: ignore[assignment]
    ) -> StatusT:
        """A consistent copy for status routes, as `model` (the service's status class)."""
        with self._lock:
            return model(
                kind=kind,
                phase=self.phase,
                running=self.phase in ACTIVE_PHASES,
                healthy=self.phase is not Phase.FAILED,
                started_at=self.started_at,
                finished_at=self.finished_at,
                last_error=self.last_error,
                progress=progress,
            )


class ServiceGate:
    """Registry of the node's services; lets at most one of them run at a time.

    The node registers the services it built (`mlnode.api.create_app`); a service never registers
    itself, and one that is not registered cannot start, so none runs unseen by the others.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: list[Service[Any]] = []

    def register(self, service: Service[Any]) -> None:
        """Add a service built for this gate; one per class."""
        if service._gate is not self:
            raise ValueError(f"{type(service).__name__} was built for another gate")
        if any(type(s) is type(service) for s in self._services):
            raise ValueError(f"{type(service).__name__} is registered already")
        self._services.append(service)

    @property
    def services(self) -> tuple[Service[Any], ...]:
        """Every registered service."""
        return tuple(self._services)

    def get(self, cls: type[ServiceT]) -> ServiceT:
        """The registered instance of a service class."""
        for service in self._services:
            if isinstance(service, cls):
                return service
        raise LookupError(f"no {cls.__name__} registered")

    def running(self) -> Service[Any] | None:
        """The service that holds the GPU, if any."""
        return next((s for s in self._services if s.is_running()), None)

    def claim(self, service: Service[Any]) -> None:
        """Atomically check that no other service runs and mark `service` as starting."""
        if not any(s is service for s in self._services):
            raise RuntimeError(f"{type(service).__name__} is not registered with the node's gate")
        with self._lock:
            other = next((s for s in self._services if s is not service and s.is_running()), None)
            if other is not None:
                raise ServiceConflict(other.kind, service.kind)
            service._enter_starting()


class AlreadyRunning(MLNodeError):
    """The service is running already and does not accept a second start."""

    status_code = 409
    code = "already_running"


class StoppedWhileStarting(MLNodeError):
    """A stop (or a newer start) came while this start was still preparing; nothing was started."""

    status_code = 409
    code = "stopped_while_starting"


#: The generation of the start the current task is running (`Service.start` sets it).
_START_GENERATION: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "mlnode_start_generation", default=None
)


class Service(ABC, Generic[RequestT]):
    """Base of every package's manager: start / stop / status / is_running / healthy."""

    kind: ClassVar[ServiceKind]
    #: The status class whose `progress` field documents this service's figures.
    status_model: ClassVar[type[ServiceStatus[Any]]] = ServiceStatus
    #: Whether `start` while running is passed on to `_start` (PoW re-init) instead of a 409.
    restart_while_running: ClassVar[bool] = False

    def __init__(self, gate: ServiceGate) -> None:
        self.job = JobState()
        self._gate = gate

    def _enter_starting(self) -> None:
        if self.job.active and not self.restart_while_running:
            raise AlreadyRunning(f"{self.kind} is running already")
        if not self.job.active:
            self.job.begin()

    async def start(self, request: RequestT) -> ServiceStatus:
        """Claim the GPU and start a job; 409 when another service runs or a stop came first."""
        self._gate.claim(self)
        generation = self.job.generation
        token = _START_GENERATION.set(generation)
        try:
            await self._start(request)
        except BaseException as exc:
            # A job stopped or replaced meanwhile is no longer this start's to mark.
            if self.job.is_current(generation):
                if isinstance(exc, MLNodeError) and exc.status_code < 500:
                    self.job.refuse(exc)
                else:
                    self.job.fail(exc)
            raise
        finally:
            _START_GENERATION.reset(token)
        return self.status()

    def ensure_still_starting(self) -> None:
        """Inside `_start`, before launching anything: StoppedWhileStarting when a stop came.

        A service whose `_start` awaits its preparation calls this after it, so a job that
        `stop()` has stopped (and whose GPU another service may hold by now) never starts.
        """
        generation = _START_GENERATION.get()
        if generation is not None and not self.job.is_current(generation):
            raise StoppedWhileStarting(
                f"{self.kind} was stopped (POST /stop) or restarted while it was starting; "
                "this start launched nothing"
            )

    @abstractmethod
    async def _start(self, request: RequestT) -> None:
        """Start the job; return once it runs (or, for some services, once it serves)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop the job if one runs; idempotent."""

    def progress(self) -> BaseModel | None:
        """Service-specific figures for `status().progress` (a model of `status_model`'s type)."""
        return None

    def status(self) -> ServiceStatus[Any]:
        """Current status, as `status_model`; never blocks."""
        return self.job.snapshot(self.kind, self.progress(), self.status_model)

    def is_running(self) -> bool:
        """True while the service holds the GPU."""
        return self.job.active

    def healthy(self) -> bool:
        """False when the last job failed."""
        return self.job.phase is not Phase.FAILED

    async def open(self) -> None:
        """Called once when the server starts (background tasks, listeners)."""

    async def close(self) -> None:
        """Called once when the server shuts down; stops any job."""
        await self.stop()


class WorkerService(Service[RequestT]):
    """A service whose job is one blocking function run in a worker thread."""

    join_timeout_s: ClassVar[float] = 30.0

    def __init__(self, gate: ServiceGate) -> None:
        super().__init__(gate)
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

    @abstractmethod
    def run(self, request: RequestT, stop: threading.Event) -> None:
        """The job. Return when done or when `stop` is set; raise to fail."""

    async def _start(self, request: RequestT) -> None:
        if not await self.stop_worker():
            raise AlreadyRunning(f"{self.kind}'s previous worker has not stopped yet")
        # No await from here to the thread's start: a stop cannot slip in between.
        self.ensure_still_starting()
        self._stop_event = threading.Event()
        self._thread = threading.Thread(
            target=self._run_guarded,
            args=(request, self._stop_event),
            name=f"{self.kind.lower()}-worker",
            daemon=True,
        )
        self.job.set_phase(Phase.RUNNING)
        self._thread.start()

    def _run_guarded(self, request: RequestT, stop: threading.Event) -> None:
        try:
            self.run(request, stop)
        except BaseException as exc:
            if self._stop_event is stop and stop.is_set():
                log.info("%s worker ended on stop: %s", self.kind, describe_error(exc))
                self.job.set_phase(Phase.STOPPED)
                return
            log.exception("%s worker failed", self.kind)
            self.job.fail(exc)
            return
        if self._stop_event is stop:
            self.job.set_phase(Phase.STOPPED if stop.is_set() else Phase.FINISHED)

    async def stop_worker(self) -> bool:
        """Signal the worker and wait for it off the event loop; False while it still runs."""
        thread = self._thread
        if thread is None:
            return True
        self._stop_event.set()
        await asyncio.to_thread(thread.join, self.join_timeout_s)
        if thread.is_alive():
            log.warning(
                "%s worker did not stop within %.0f s; the service stays STOPPING until it does",
                self.kind,
                self.join_timeout_s,
            )
            return False
        self._thread = None
        return True

    async def stop(self) -> None:
        """Stop the worker; the phase ends STOPPED (a failure's message stays in `last_error`).

        A worker that does not end within `join_timeout_s` leaves the phase STOPPING, which
        keeps the gate claimed: no other service starts beside it. It turns STOPPED when the
        worker ends.
        """
        self.job.halt()
        if self.job.active:
            self.job.set_phase(Phase.STOPPING)
        if not await self.stop_worker():
            return
        if self.job.active or self.job.phase is Phase.FAILED:
            self.job.set_phase(Phase.STOPPED)
