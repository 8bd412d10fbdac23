"""Schema v1's allow-list and the pure rewrite of engine families into it.

vLLM families keep only allow-listed names; each sample gets `replica` (the instance's
position), `model_name` becomes the served name, and vLLM's `engine` label and any placement
label are dropped. Families of several replicas are merged into one family per name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

SCHEMA_VERSION = "1"

#: Family names as prometheus-client's parser gives them: a counter's without `_total`
#: (`vllm:prompt_tokens_total` is family `vllm:prompt_tokens`); `vllm:iteration_tokens_total`
#: is a histogram and keeps its name.
ENGINE_FAMILIES = frozenset(
    {
        # P0
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions",
        "vllm:time_to_first_token_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:request_success",
        # P1
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:iteration_tokens_total",
        "vllm:cache_config_info",
    }
)
#: Labels never exported: placement, host and the engine's internal index.
DROPPED_LABELS = frozenset({"engine", "node_id", "instance", "job", "host", "hostname", "pod"})


def allowed(metric: Metric) -> bool:
    """Whether schema v1 exports this engine family (counters named without `_total`)."""
    return metric.name in ENGINE_FAMILIES


def rewrite(
    text: str, replica: int, model_name: str | None, max_series: int
) -> tuple[list[Metric], bool]:
    """Allow-listed families of one engine's exposition, relabelled; True when cut at the cap."""
    kept: list[Metric] = []
    count = 0
    for family in text_string_to_metric_families(text):
        if not allowed(family):
            continue
        out = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            if count >= max_series:
                return kept + ([out] if out.samples else []), True
            labels = {k: v for k, v in sample.labels.items() if k not in DROPPED_LABELS}
            if "model_name" in labels and model_name:
                labels["model_name"] = model_name
            labels["replica"] = str(replica)
            out.add_sample(sample.name, labels, sample.value, sample.timestamp)
            count += 1
        kept.append(out)
    return kept, False


def merge(per_replica: Iterable[Sequence[Metric]]) -> list[Metric]:
    """One family per name, with every replica's samples."""
    merged: dict[str, Metric] = {}
    for families in per_replica:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = into
            into.samples.extend(family.samples)
    return list(merged.values())
