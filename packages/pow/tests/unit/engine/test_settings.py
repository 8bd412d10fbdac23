"""Engine-side PoC settings as `.env.template` writes them."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlnode.pow.engine.settings import PocEngineSettings

TEMPLATE = Path(__file__).resolve().parents[5] / ".env.template"


def test_the_template_block_parses_to_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line for line in TEMPLATE.read_text().splitlines() if line.startswith("MLNODE_POC_")]
    assert len(lines) >= 20
    for line in lines:
        name, _, value = line.partition("=")
        monkeypatch.setenv(name, value)
    assert PocEngineSettings(_env_file=None) == PocEngineSettings(_env_file=None, _env_prefix="X_")
    documented = {x.partition("=")[0].removeprefix("MLNODE_POC_").lower() for x in lines}
    assert documented == set(PocEngineSettings.model_fields)


def test_codebook_path_and_hash_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLNODE_POC_CODEBOOK_PATH", "/somewhere/codebook.safetensors")
    with pytest.raises(ValidationError, match="go together"):
        PocEngineSettings(_env_file=None)
    monkeypatch.setenv("MLNODE_POC_CODEBOOK_SHA256", "ab" * 32)
    assert PocEngineSettings(_env_file=None).codebook_sha256 == "ab" * 32


def test_a_malformed_hash_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLNODE_POC_CODEBOOK_PATH", "/c")
    monkeypatch.setenv("MLNODE_POC_CODEBOOK_SHA256", "not-a-hash")
    with pytest.raises(ValidationError, match="codebook_sha256"):
        PocEngineSettings(_env_file=None)
