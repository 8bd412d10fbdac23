"""`GET /api/v1/metrics` in gonka's schema v1: what is exported, relabelling, the off switch."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mlnode.api.app import create_app
from mlnode.api.federation.schema import merge, rewrite
from mlnode.api.federation.settings import MetricsSettings
from mlnode.api.testing import make_settings

ENGINE = """# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="/cache/snapshots/abc"} 2.0
# HELP vllm:prompt_tokens_total Prompt tokens.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="/cache/snapshots/abc"} 17.0
# HELP vllm:secret_thing Not in the schema.
# TYPE vllm:secret_thing gauge
vllm:secret_thing{engine="0"} 1.0
"""


def test_engine_families_are_allow_listed_and_relabelled() -> None:
    first, cut = rewrite(ENGINE, 0, "gonka/Tiny", 100)
    second, _ = rewrite(ENGINE, 1, "gonka/Tiny", 100)
    assert not cut
    merged = {f.name: f for f in merge([first, second])}
    assert set(merged) == {"vllm:num_requests_running", "vllm:prompt_tokens"}
    running = merged["vllm:num_requests_running"].samples
    assert [s.labels for s in running] == [
        {"model_name": "gonka/Tiny", "replica": "0"},
        {"model_name": "gonka/Tiny", "replica": "1"},
    ]
    assert merged["vllm:prompt_tokens"].type == "counter"


def test_series_beyond_the_cap_are_cut() -> None:
    families, cut = rewrite(ENGINE, 0, None, 1)
    assert cut and sum(len(f.samples) for f in families) == 1


def test_export_full_has_schema_version_and_host(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        exporter = client.app.state.exporter  # type: ignore[attr-defined]
        client.portal.call(exporter.refresh)  # type: ignore[union-attr]
        answer = client.get("/api/v1/metrics")
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    assert families["gonka_metrics_schema_info"].samples[0].labels == {"version": "1"}
    assert "version" in families["mlnode_version_info"].samples[0].labels
    assert families["mlnode_host_memory_used_bytes"].samples[0].value > 0
    sources = {
        s.labels["source"] for s in families["mlnode_source_scrape_timestamp_seconds"].samples
    }
    assert "host" in sources
    assert not [name for name in families if name.startswith("vllm:")]


def test_export_off_answers_404(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, metrics={"export": "off"}))) as client:
        assert client.get("/api/v1/metrics").status_code == 404
        assert client.get("/v3.0.8/api/v1/metrics").status_code == 404
        assert client.get("/metrics").status_code == 200


def test_gonka_variable_and_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GONKA_METRICS", "off")
    assert not MetricsSettings(_env_file=None).enabled
    monkeypatch.setenv("GONKA_METRICS", "loud")
    assert MetricsSettings(_env_file=None).enabled
