"""The inference port's routing: version prefix, open paths, token, relayed engine paths."""

import pytest

from mlnode.common.urlprefix import VersionPrefix
from mlnode.infer.routing import InferenceRoutes, Route


@pytest.mark.parametrize(
    ("target", "stripped"),
    [
        (b"/v3.0.8/v1/chat/completions", b"/v1/chat/completions"),
        (b"/v3.0.8/tokenize?x=1", b"/tokenize?x=1"),
        (b"/v3.0.8?x=1", b"/?x=1"),
        (b"/v3.0.8", b"/"),
        (b"/v3.0.14-rc1/health", b"/health"),
        (b"/v3.1.0-vllm-0.28.0/api/v1/state", b"/api/v1/state"),
        (b"/v3.1.0-vllm-0.28.0-rc.1/v1/models?x=1", b"/v1/models?x=1"),
        (b"/v3.1.0-/v1/models", b"/v3.1.0-/v1/models"),
        (b"/v1/models", b"/v1/models"),
        (b"/v3.0/v1/models", b"/v3.0/v1/models"),
        (b"/v3.0.8x/v1/models", b"/v3.0.8x/v1/models"),
        (b"/api/v3.0.8/x", b"/api/v3.0.8/x"),
    ],
)
def test_version_prefix_is_stripped_only_in_front(target: bytes, stripped: bytes) -> None:
    prefix = VersionPrefix()
    assert prefix.strip_target(target) == stripped
    path = target.split(b"?")[0].decode()
    assert prefix.strip_path(path) == stripped.split(b"?")[0].decode()


def test_an_empty_pattern_turns_stripping_off() -> None:
    assert VersionPrefix("").strip_path("/v3.0.8/api/v1/state") == "/v3.0.8/api/v1/state"
    assert VersionPrefix(r"release-\d+").strip_path("/release-7/api/v1/state") == "/api/v1/state"


def test_routes_without_token() -> None:
    routes = InferenceRoutes()
    assert routes.route(b"/health", None) is Route.HEALTH
    assert routes.route(b"/livez", None) is Route.LIVEZ
    for path in (b"/v1/chat/completions", b"/tokenize", b"/detokenize", b"/version", b"/v2/x"):
        assert routes.route(path, None) is Route.ENGINE, path
    for path in (b"/api/v1/pow/status", b"/metrics", b"/tokenizer", b"/v1", b"/"):
        assert routes.route(path, None) is Route.NOT_FOUND, path


def test_routes_with_token() -> None:
    routes = InferenceRoutes(token="s3cret", relayed=["/v1/", "/tokenize"])
    assert routes.route(b"/health", None) is Route.HEALTH
    assert routes.route(b"/v1/models", None) is Route.UNAUTHORIZED
    assert routes.route(b"/v1/models", b"Bearer wrong") is Route.UNAUTHORIZED
    assert routes.route(b"/v1/models", b"Bearer s3cret") is Route.ENGINE
    assert routes.route(b"/tokenize/x", b"Bearer s3cret") is Route.ENGINE
    assert routes.route(b"/version", b"Bearer s3cret") is Route.NOT_FOUND
