"""What the proxy and the engine plugin agree on: argument names and the readiness probe."""

from __future__ import annotations

import json

#: `vllm_xargs` key carrying the ids to force, one per output position.
FORCED_IDS_XARG = "mlnode_forced_ids"
#: `vllm_xargs` key of the readiness probe; the plugin refuses such a request with its status.
PROBE_XARG = "mlnode_forcing_probe"
#: Prefix of the probe's refusal message.
PROBE_MARKER = "mlnode-forcing-status:"
#: `--logits-processors` value that loads the plugin (either model runner).
PROCESSOR_FQCN = "mlnode.infer.forcing.processor:ForcedTokens"
#: Logprobs modes whose reported values come from the sampler's processed logits.
PROCESSED_MODES = frozenset({"processed_logprobs", "processed_logits"})
#: Ids the proxy passes for tokens outside any vocabulary (they end the forced run).
OUT_OF_VOCAB = -1


def probe_message(ready: bool, reason: str) -> str:
    """The refusal text the plugin answers the probe with."""
    return PROBE_MARKER + json.dumps({"ready": ready, "reason": reason})


def read_probe(message: str) -> tuple[bool, str] | None:
    """`(ready, reason)` from an engine's error message; None when it is not a probe answer."""
    start = message.find(PROBE_MARKER)
    if start < 0:
        return None
    try:
        decoded, _ = json.JSONDecoder().raw_decode(message[start + len(PROBE_MARKER) :])
    except ValueError:
        return None
    if not isinstance(decoded, dict):
        return None
    return bool(decoded.get("ready")), str(decoded.get("reason", ""))
