"""Test helpers: real MLNode processes on loopback, and an in-memory tensor transport."""

from mlnode.common.testing.fake_transport import FakeTransport, TransportHub
from mlnode.common.testing.node_process import MLNodeProcess, free_port

__all__ = ["FakeTransport", "MLNodeProcess", "TransportHub", "free_port"]
