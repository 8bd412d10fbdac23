"""Schema fuzz of a running MLNode's REST API: every operation of its OpenAPI document, every field.

Cases come from schemathesis (Hypothesis strategies built from the schema), valid ones and
ones that break the schema, a bounded number per operation. After each case the node must have
answered below 500 (or with a 5xx the operation documents, such as 503 while no engine serves)
and still answer `/livez`; its memory (the process and its children) is sampled throughout.
Used by the integration tier (a few cases per operation) and `make bench`.
schemathesis is a dev dependency, imported only here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mlnode.common.testing.pressure import tree_rss

#: Operations that end the node's work on purpose; fuzzed last so the rest runs against a node
#: that may hold a service.
LAST = ("/api/v1/stop",)


@dataclass
class FuzzReport:
    """What a fuzz run saw."""

    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    peak_rss: int = 0
    seconds: float = 0.0

    def note(
        self, label: str, status: int, body: str, documented: frozenset[str] = frozenset()
    ) -> None:
        """One answer; a 5xx the operation documents (503 without an engine) is no server error."""
        self.cases += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if status >= 500 and (status == 500 or str(status) not in documented):
            self.server_errors.append(f"{label} -> {status}: {body[:300]}")


def fuzz_rest_api(
    base_url: str,
    pid: int,
    examples_per_operation: int,
    headers: dict[str, str] | None = None,
    skip: Iterable[str] = (),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> FuzzReport:
    """Fuzz every operation of the node at `base_url` (process `pid`); raises nothing on 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=headers or {})
    operations: list[Any] = []
    for result in schema.get_all_operations():
        if isinstance(result, schemathesis.core.result.Err):
            raise AssertionError(f"the node's OpenAPI document is invalid: {result.err()}")
        operations.append(result.ok())
    operations.sort(key=lambda op: op.path in LAST)
    report = FuzzReport()
    skipped = set(skip)
    started = time.monotonic()
    session_headers = dict(headers or {})

    for operation in operations:
        if operation.label in skipped:
            continue
        report.operations.append(operation.label)
        if progress is not None:
            progress(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @hypothesis_seed(seed)
            @settings(
                max_examples=examples_per_operation,
                deadline=None,
                database=None,
                derandomize=False,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                _one_case(case, base_url, pid, session_headers, report)

            try:
                run()
            except _NodeDown:
                raise
            except Unsatisfiable:
                continue  # an operation without parameters has no schema-breaking case
            except Exception as exc:  # schemathesis may fail to build a case
                report.transport_errors.append(f"{operation.label}: {type(exc).__name__}: {exc}")
    report.seconds = time.monotonic() - started
    return report


class _NodeDown(AssertionError):
    """The node stopped answering."""


def _one_case(
    case: Any, base_url: str, pid: int, headers: dict[str, str], report: FuzzReport
) -> None:
    label = f"{case.operation.label}"
    try:
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        raw = case.operation.definition.raw
        documented = frozenset(str(code) for code in (raw or {}).get("responses", {}))
        report.note(label, response.status_code, response.text, documented)
    except Exception as exc:  # a refused or reset connection is what we look for
        report.transport_errors.append(f"{label}: {type(exc).__name__}: {exc}")
    report.peak_rss = max(report.peak_rss, tree_rss(pid))
    try:
        alive = httpx.get(f"{base_url}/livez", timeout=10).status_code == 200
    except httpx.HTTPError:
        alive = False
    if not alive:
        raise _NodeDown(f"the node stopped answering /livez after {label}")
