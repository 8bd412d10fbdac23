"""Fixtures of the fusion unit tests: an in-memory transport between peers that registered keys."""

from __future__ import annotations

import pytest

from mlnode.common.testing import TransportHub


@pytest.fixture
def network() -> TransportHub:
    return TransportHub(registered_only=True)
