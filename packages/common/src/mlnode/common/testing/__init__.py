"""Helpers for the integration tiers of every package: real MLNode processes on loopback."""

from mlnode.common.testing.node_process import MLNodeProcess, free_port

__all__ = ["MLNodeProcess", "free_port"]
