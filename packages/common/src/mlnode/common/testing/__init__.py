"""Helpers for the integration tiers of every package: real MLNodes, callbacks, peer keys, fakes.

`fixtures` (loaded by the root conftest) gives tests `mlnode_factory`, backed by local processes or,
with `MLNODE_IT_BACKEND=container`, by containers of the MLNode image. `TransportHub` is an
in-memory tensor transport for the unit tests of every package; `wait_until` is the one way tests
wait for a condition.
"""

from mlnode.common.testing.backends import (
    BackendUnavailable,
    MLNodeBackend,
    MLNodeHandle,
    open_backend,
)
from mlnode.common.testing.callback_receiver import CallbackReceiver
from mlnode.common.testing.fake_transport import DictProvider, FakeTransport, TransportHub
from mlnode.common.testing.node_process import MLNodeProcess, free_port
from mlnode.common.testing.peer_mesh import MeshNode, register_mesh
from mlnode.common.testing.wait import WaitTimeout, not_none, wait_until, wait_until_async

__all__ = [
    "BackendUnavailable",
    "CallbackReceiver",
    "DictProvider",
    "FakeTransport",
    "MLNodeBackend",
    "MLNodeHandle",
    "MLNodeProcess",
    "MeshNode",
    "TransportHub",
    "WaitTimeout",
    "free_port",
    "not_none",
    "open_backend",
    "register_mesh",
    "wait_until",
    "wait_until_async",
]
