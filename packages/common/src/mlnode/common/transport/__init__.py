"""Signed tensor transport between MLNodes (DESIGN §5)."""

from mlnode.common.transport.api import ReceivedTensors, TensorMeta, TensorProvider, TensorTransport

__all__ = ["ReceivedTensors", "TensorMeta", "TensorProvider", "TensorTransport"]
