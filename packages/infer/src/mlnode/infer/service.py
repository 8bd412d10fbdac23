"""`InferService`: the engines' lifecycle, their health loop, and the inference port."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mlnode.common.context import NodeContext
from mlnode.common.engines import EngineClient
from mlnode.common.errors import EngineFailed, NotRunning, Unavailable
from mlnode.common.hardware import discover_gpus
from mlnode.common.hygiene import redact_argv
from mlnode.common.lifecycle import Phase, Service, ServiceKind, ServiceStatus
from mlnode.common.urlprefix import VersionPrefix
from mlnode.infer.args import EngineArgs, add_validation_flags, flag_value, parse_additional_args
from mlnode.infer.asgi_relay import EngineAsgi
from mlnode.infer.balancer import Backend, LeastConnections
from mlnode.infer.engine import (
    EngineInstance,
    EngineLaunch,
    InstanceState,
    VLLMGroup,
    plan_gpu_groups,
)
from mlnode.infer.health import HealthWatch, register_metrics
from mlnode.infer.limits import http_limits
from mlnode.infer.proxy import Relay
from mlnode.infer.reaper import EngineRecord
from mlnode.infer.routing import InferenceRoutes
from mlnode.infer.schemas import (
    InferenceStatus,
    InferenceUpRequest,
    InferenceUpResponse,
    InferenceUpStatus,
    InferProgress,
    InferServiceStatus,
    InstanceStatus,
    UpPhase,
)
from mlnode.infer.server import InferenceServer
from mlnode.infer.settings import InferSettings
from mlnode.infer.upstream import UpstreamPool
from mlnode.infer.validation.hook import ValidationGate
from mlnode.infer.validation.replay import FieldLimits

log = logging.getLogger(__name__)

#: Seconds the client is told to wait before asking `/inference/up` again.
UP_RETRY_AFTER_S = 10


class StillStarting(Unavailable):
    """The engines still load: 503, which the newest client retries (409/429/408/5xx are)."""

    code = "starting"
    headers = {"Retry-After": str(UP_RETRY_AFTER_S)}


_UP_PHASES = {
    Phase.IDLE: UpPhase.IDLE,
    Phase.STARTING: UpPhase.STARTING,
    Phase.RUNNING: UpPhase.RUNNING,
    Phase.FAILED: UpPhase.FAILED,
}


def _describe(instance: EngineInstance) -> str:
    cause = f" ({instance.signal}: {instance.reason})" if instance.reason else ""
    return f"engine {instance.index} is {instance.state}{cause}"


class InferService(Service[InferenceUpRequest]):
    """Starts vLLM engines for `/inference/up`, watches them and proxies `/v1/*` to them."""

    kind = ServiceKind.INFERENCE
    status_model = InferServiceStatus

    def __init__(self, settings: InferSettings, ctx: NodeContext) -> None:
        super().__init__(ctx.gate)
        self.settings = settings
        self.log_dir = settings.log_dir or ctx.settings.state_dir / "infer"
        self._record = EngineRecord(self.log_dir / "engines.pgid")
        self.balancer = LeastConnections()
        pool = UpstreamPool(
            settings.connect_timeout_s, settings.read_timeout_s, settings.max_idle_connections
        )
        self.validation = ValidationGate(
            lambda: self.balancer.backends,
            self.engine_client,
            max_body_bytes=settings.max_body_bytes,
            rewrite_token_ids=settings.rewrite_token_ids,
            field_limits=FieldLimits(
                max_enforced_str_chars=settings.max_enforced_str_chars,
                max_enforced_tokens=settings.max_enforced_tokens,
                max_prompt_chars=settings.max_prompt_chars,
            ),
        )
        token = ctx.settings.api_token
        routes = InferenceRoutes(
            VersionPrefix(ctx.settings.version_prefix_pattern),
            settings.relayed_paths,
            token.get_secret_value() if token is not None else None,
        )
        self.relay = Relay(
            self.balancer,
            pool,
            lambda: bool(self.balancer.backends),
            http_limits(settings),
            validation=self.validation,
            routes=routes,
        )
        self.engine_asgi = EngineAsgi(self.relay)
        self._server = InferenceServer(self.relay, settings.host, settings.port)
        self._listen_error: str | None = None
        self._client: EngineClient | None = None
        self._request: InferenceUpRequest | None = None
        self._engine_args: EngineArgs | None = None
        self._group: VLLMGroup | None = None
        self._startup: asyncio.Task[None] | None = None
        self._watch: HealthWatch | None = None
        self._metrics = register_metrics(ctx.metrics, self.balancer)

    def serving_engines(self) -> tuple[Backend, ...]:
        """The healthy engine instances now (`ServingEngines`, read by pow's PoC fan-out)."""
        return self.balancer.backends

    def engine_client(self) -> EngineClient:
        """The client for engine calls (`ServingEngines`); `Unavailable` until opened."""
        if self._client is None:
            raise Unavailable("the inference service is not open")
        return self._client

    async def open(self) -> None:
        """Open the engine client and the inference port."""
        # httpx logs every request at INFO: a line per health check.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._client = EngineClient()
        await asyncio.to_thread(self._record.reap, self.settings.engine_module)
        await self._listen()

    async def _listen(self) -> None:
        """Open the inference port; a port in use is reported, and retried by the next start."""
        try:
            await self._server.start()
        except OSError as exc:
            self._listen_error = f"inference port {self.settings.port} cannot be opened: {exc}"
            log.error("%s", self._listen_error)
        else:
            self._listen_error = None

    async def close(self) -> None:
        """Stop the engines, then the inference port and the clients."""
        await self.stop()
        await self._server.stop()
        self.relay.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _gpus(self) -> list[int]:
        if self.settings.gpus is not None:
            return list(self.settings.gpus)
        found = await asyncio.to_thread(discover_gpus)
        return [gpu.index for gpu in found]

    async def _start(self, request: InferenceUpRequest) -> None:
        flags = add_validation_flags(
            parse_additional_args(request.additional_args),
            self.settings.logprobs_mode,
            self.settings.forcing,
        )
        engine_args = flags.args
        if self._listen_error is not None:
            await self._listen()
            if self._listen_error is not None:
                raise Unavailable(self._listen_error)
        groups = plan_gpu_groups(await self._gpus(), engine_args.devices_per_instance)
        launch = EngineLaunch(model=request.model, dtype=request.dtype, args=engine_args)
        self._request, self._engine_args = request, engine_args
        self.validation.configure(flags.logprobs_mode, flags.forcing)
        self._group = VLLMGroup(self.settings, launch, groups, self.log_dir, self._record)
        self._startup = asyncio.create_task(self._launch(self._group))

    async def _launch(self, group: VLLMGroup) -> None:
        assert self._client is not None, "InferService.open() was not called"
        try:
            await group.start(self._client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.job.fail(exc)
            return
        self.job.set_phase(Phase.RUNNING)
        self._watch = HealthWatch(
            group, self.settings, self._client, self.balancer, self.job, self._metrics
        )
        self._watch.start()

    async def up(self, request: InferenceUpRequest) -> InferenceUpResponse:
        """Start the engines and return once they serve; `EngineFailed` with the log tail if not.

        The same request again while it starts or runs joins it (a retry). After `up_wait_s`
        an engine still loading is answered `StillStarting` (503, Retry-After), which the
        newest client retries, where a 202 would read as a permanent failure.
        """
        if not self._same_job(request):
            await self.start(request)
        task = self._startup
        if task is not None:
            await asyncio.wait([task], timeout=self.settings.up_wait_s)
            if not task.done():
                raise StillStarting(
                    "the engines are still loading; retry, or poll GET /inference/up/status"
                )
        if self.job.phase is Phase.FAILED:
            raise EngineFailed(self.job.last_error or "the engine failed to start")
        if self.job.phase is not Phase.RUNNING:
            raise NotRunning("inference was stopped before the engine served")
        return InferenceUpResponse(status="OK", message=None)

    def _same_job(self, request: InferenceUpRequest) -> bool:
        return self.job.phase in (Phase.STARTING, Phase.RUNNING) and self._request == request

    async def up_async(self, request: InferenceUpRequest) -> InferenceUpResponse:
        """Start the engines in the background; poll `up_status`."""
        await self.start(request)
        return InferenceUpResponse(status="starting", message="poll GET /inference/up/status")

    async def stop(self) -> None:
        """Stop the health loop and every engine process group; idempotent."""
        if self.job.active:
            self.job.set_phase(Phase.STOPPING)
        tasks: list[asyncio.Task[Any]] = [t for t in (self._startup,) if t is not None]
        if self._watch is not None:
            tasks.extend(self._watch.tasks())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._startup, self._watch = None, None
        self.balancer.set_backends(())
        if self._group is not None:
            await self._group.stop()
        if self.job.active or self.job.phase is Phase.FAILED:
            self.job.set_phase(Phase.STOPPED)

    async def down(self) -> InferenceUpResponse:
        """`/inference/down`: stop everything."""
        await self.stop()
        return InferenceUpResponse(status="OK", message=None)

    def _problem(self) -> str | None:
        if self.job.phase is Phase.RUNNING and self._group is not None:
            bad = [i for i in self._group.instances if i.state is not InstanceState.HEALTHY]
            if bad:
                return "; ".join(_describe(i) for i in bad)
        return None

    def served_model(self) -> str | None:
        """The name clients use: `--served-model-name` (its first name), else the model."""
        if self._request is None:
            return None
        served = flag_value(self._engine_args, "--served-model-name") if self._engine_args else None
        return served or self._request.model

    def loaded_model(self) -> str | None:
        """The served model's name while inference runs (the network node compares it)."""
        if self.job.phase is Phase.RUNNING:
            return self.served_model()
        return None

    def healthy(self) -> bool:
        """False when the last start failed or an instance is not serving."""
        return super().healthy() and self._problem() is None

    def status(self) -> ServiceStatus[Any]:
        """Node-level status; a dead instance shows in `last_error`."""
        status = super().status()
        if status.last_error is None:
            status.last_error = self._problem()
        return status

    def progress(self) -> InferProgress:
        """Instances, healthy instances and requests in flight."""
        instances = self._group.instances if self._group is not None else []
        return InferProgress(
            instances=len(instances),
            healthy_instances=sum(i.state is InstanceState.HEALTHY for i in instances),
            requests_in_flight=self.balancer.total_in_flight(),
            inference_port=self.settings.port,
        )

    def up_status(self) -> InferenceUpStatus:
        """`/inference/up/status`."""
        return InferenceUpStatus(
            status=_UP_PHASES.get(self.job.phase, UpPhase.STOPPED),
            error=self.job.last_error,
            model=self._request.model if self._request is not None else None,
        )

    def inference_status(self) -> InferenceStatus:
        """`/inference/status`: the engines, their ports, health, restarts and load."""
        request, args = self._request, self._engine_args
        return InferenceStatus(
            status=_UP_PHASES.get(self.job.phase, UpPhase.STOPPED),
            healthy=self.healthy(),
            model=request.model if request else None,
            dtype=request.dtype if request else None,
            additional_args=redact_argv(request.additional_args) if request else [],
            tensor_parallel_size=args.tensor_parallel_size if args else None,
            pipeline_parallel_size=args.pipeline_parallel_size if args else None,
            inference_port=self.settings.port,
            inference_port_error=self._listen_error,
            requests_in_flight=self.balancer.total_in_flight(),
            started_at=self.job.started_at,
            error=self.job.last_error or self._problem(),
            instances=self._instances(),
        )

    def _instances(self) -> list[InstanceStatus]:
        if self._group is None:
            return []
        return [
            InstanceStatus(
                index=i.index,
                state=i.state.value,
                healthy=i.state is InstanceState.HEALTHY,
                port=i.port or None,
                pid=i.pid,
                gpus=list(i.gpus),
                restarts=i.restarts,
                exit_code=i.exit_code,
                requests_in_flight=self.balancer.in_flight(i.backend) if i.backend else 0,
                signal=i.signal,
                reason=i.reason,
                log_file=str(i.log_path),
                log_tail=i.tail(self.settings.log_tail_lines)
                if i.state is InstanceState.DEAD
                else None,
            )
            for i in self._group.instances
        ]
