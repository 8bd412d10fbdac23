"""Validation of the `additional_args` a network node passes to vLLM.

The node owns where an engine listens and which model it serves, so those flags are refused; the
tensor- and pipeline-parallel sizes are read in every spelling vLLM's parser accepts
(`--tensor-parallel-size 2`, `--tensor-parallel-size=2`, `--tensor_parallel_size 2`, `-tp 2`,
`-tp=2`, and unambiguous abbreviations such as `--tensor-parallel 2`, which argparse accepts)
because they decide how many GPUs each engine instance gets.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

from mlnode.common.errors import InvalidRequest

#: Flags whose value the node decides (bind address, port, model), in their canonical spelling.
NODE_OWNED_FLAGS = frozenset({"--host", "--port", "--uds", "--model"})

_SIZE_FLAGS = {
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size",
    "-pp": "pipeline_parallel_size",
}


@dataclass(frozen=True)
class EngineArgs:
    """`additional_args` after validation, with the parallel sizes they ask for."""

    args: tuple[str, ...]
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1

    @property
    def devices_per_instance(self) -> int:
        """GPUs one engine instance spans."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


def _canonical(flag: str) -> str:
    """`--tensor_parallel_size` -> `--tensor-parallel-size` (vLLM accepts both)."""
    if flag.startswith("--"):
        return "--" + flag[2:].replace("_", "-")
    return flag


def _matches(name: str, flag: str) -> bool:
    """`name` is `flag` or an argparse abbreviation of it."""
    return name == flag or (name.startswith("--") and len(name) > 3 and flag.startswith(name))


def split_args(raw: Sequence[str]) -> list[str]:
    """Flatten items such as `"--max-model-len 512"` into separate tokens, as a shell would."""
    tokens: list[str] = []
    for item in raw:
        if item.startswith("-") and any(c.isspace() for c in item.strip()):
            try:
                tokens.extend(shlex.split(item))
            except ValueError as exc:
                raise InvalidRequest(
                    f"cannot split {item!r}: {exc}", param="additional_args"
                ) from exc
        else:
            tokens.append(item)
    return tokens


def _positive_int(flag: str, value: str | None) -> int:
    if value is None:
        raise InvalidRequest(f"{flag} needs a value", param="additional_args")
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise InvalidRequest(
            f"{flag} must be a positive integer, got {value!r}", param="additional_args"
        )
    return size


def parse_additional_args(raw: Sequence[str]) -> EngineArgs:
    """Validate `additional_args`; raises `InvalidRequest` (422) naming the offending flag."""
    tokens = split_args(raw)
    sizes = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1}
    for i, token in enumerate(tokens):
        if not token.startswith("-") or token == "-":
            continue
        flag, has_eq, inline = token.partition("=")
        name = _canonical(flag)
        if any(_matches(name, owned) for owned in NODE_OWNED_FLAGS):
            raise InvalidRequest(
                f"{flag} is set by the MLNode and may not appear in additional_args",
                param="additional_args",
            )
        field = next((f for known, f in _SIZE_FLAGS.items() if _matches(name, known)), None)
        if field is None:
            continue
        value = inline if has_eq else (tokens[i + 1] if i + 1 < len(tokens) else None)
        sizes[field] = _positive_int(flag, value)
    return EngineArgs(args=tuple(tokens), **sizes)


#: Entry point group where a project package publishes its vLLM worker extension (mlnode-pow:
#: the worker half of the PoC v2 plugin, whose routes attach only when it is set).
WORKER_EXTENSION_GROUP = "mlnode.vllm_worker_extensions"
_PLUGIN_GROUPS = ("vllm.general_plugins", "vllm.endpoint_plugins")


def project_worker_extension() -> str | None:
    """The worker extension a project package publishes, as vLLM's dotted class name, or None.

    vLLM takes one `--worker-extension-cls`, so a second published extension is refused.
    """
    found = sorted(
        f"{ep.module}.{ep.attr}"
        for ep in entry_points(group=WORKER_EXTENSION_GROUP)
        if ep.dist is not None and ep.dist.name.startswith("mlnode-")
    )
    if len(found) > 1:
        raise ValueError(f"more than one worker extension in {WORKER_EXTENSION_GROUP}: {found}")
    return found[0] if found else None


def with_plugin_args(args: Sequence[str]) -> tuple[str, ...]:
    """`args` plus the project's `--worker-extension-cls`, unless they set one already."""
    extension = project_worker_extension()
    if extension is None or any(
        _matches(_canonical(t.partition("=")[0]), "--worker-extension-cls") for t in args
    ):
        return tuple(args)
    return (*args, "--worker-extension-cls", extension)


def project_plugin_names() -> tuple[str, ...]:
    """Names of the vLLM plugins the project's packages (`mlnode-*`) register, sorted."""
    found = {
        ep.name
        for group in _PLUGIN_GROUPS
        for ep in entry_points(group=group)
        if ep.dist is not None and ep.dist.name.startswith("mlnode-")
    }
    return tuple(sorted(found))


def plugin_env(env: Mapping[str, str]) -> dict[str, str]:
    """`VLLM_PLUGINS` for an engine: names already in `env` plus the project's plugins.

    vLLM loads endpoint plugins (the PoC routes) only when named there, and once the variable
    is set it loads only the general plugins it names, so every project plugin is listed. Without
    project plugins the variable is left as it is (an empty list would disable every plugin).
    """
    current = env.get("VLLM_PLUGINS")
    names = [n.strip() for n in (current or "").split(",") if n.strip()]
    ours = [n for n in project_plugin_names() if n not in names]
    return {"VLLM_PLUGINS": ",".join(names + ours)} if ours else {}


#: Flags that keep vLLM from loading custom logits processors (it refuses them at start-up).
_NO_PROCESSOR_FLAGS = ("--speculative-config", "-sc")


def flag_value(args: EngineArgs, flag: str) -> str | None:
    """The value `args` give `flag` (any spelling vLLM accepts; the last one wins), or None."""
    found: str | None = None
    tokens = args.args
    for i, token in enumerate(tokens):
        name, has_eq, inline = token.partition("=")
        if token.startswith("-") and _matches(_canonical(name), flag):
            found = inline if has_eq else (tokens[i + 1] if i + 1 < len(tokens) else "")
    return found


@dataclass(frozen=True)
class ValidationFlags:
    """How engines are started for inference validation (forced replay, logprobs mode)."""

    args: EngineArgs
    logprobs_mode: str
    forcing: bool


def add_validation_flags(args: EngineArgs, logprobs_mode: str, forcing: bool) -> ValidationFlags:
    """`args` plus `--logprobs-mode` and the forcing plugin's `--logits-processors`.

    A `--logprobs-mode` in `args` wins over the setting. The plugin is left out where vLLM
    would refuse to start with it (speculative decoding); forced replays then answer 503.
    """
    from mlnode.infer.forcing.protocol import PROCESSOR_FQCN

    extra: list[str] = []
    mode = flag_value(args, "--logprobs-mode")
    if mode is None:
        mode = logprobs_mode
        extra += ["--logprobs-mode", mode]
    forcing = forcing and not any(flag_value(args, f) is not None for f in _NO_PROCESSOR_FLAGS)
    if forcing:
        extra += ["--logits-processors", PROCESSOR_FQCN]
    return ValidationFlags(
        args=EngineArgs(
            args=(*args.args, *extra),
            tensor_parallel_size=args.tensor_parallel_size,
            pipeline_parallel_size=args.pipeline_parallel_size,
        ),
        logprobs_mode=mode,
        forcing=forcing,
    )
