"""What the node serves, as `mlnode_config_info` and the engines' `model_name` report it."""

from __future__ import annotations

from pathlib import PurePath

from mlnode.api.federation.exporter import ServingConfig
from mlnode.infer import EngineArgs, InferService, UpPhase, flag_value


def normalise_model_name(name: str) -> str:
    """The served name as is; a local path (never exported) becomes its last component."""
    if name.startswith(("/", "./", "../", "~")):
        return PurePath(name).name
    return name


def serving_config(infer: InferService | None) -> ServingConfig | None:
    """The running engines' configuration; None while inference does not run."""
    if infer is None:
        return None
    status = infer.inference_status()
    served = infer.served_model()
    if status.status is not UpPhase.RUNNING or served is None:
        return None
    args = EngineArgs(args=tuple(status.additional_args))
    return ServingConfig(
        model_name=normalise_model_name(served),
        dtype=status.dtype or "",
        replicas=len(status.instances),
        max_num_seqs=flag_value(args, "--max-num-seqs") or "",
        max_model_len=flag_value(args, "--max-model-len") or "",
        tensor_parallel_size=str(status.tensor_parallel_size or ""),
        pipeline_parallel_size=str(status.pipeline_parallel_size or ""),
    )
