"""When the node refuses to serve its REST API without a token."""

from typing import Any

import pytest

from mlnode.api.exposure import exposure_problem, is_loopback
from mlnode.common.settings import NodeSettings


def node(**values: Any) -> NodeSettings:
    return NodeSettings(_env_file=None, **values)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert exposure_problem(node(host=host)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "mlnode.example"])
def test_public_bind_needs_a_token_or_an_explicit_yes(host: str) -> None:
    problem = exposure_problem(node(host=host))
    assert problem is not None and "MLNODE_ALLOW_UNAUTHENTICATED_PUBLIC=1" in problem
    assert exposure_problem(node(host=host, api_token="t")) is None
    assert exposure_problem(node(host=host, allow_unauthenticated_public=True)) is None
    assert exposure_problem(node(host=host, api_token="")) is not None
