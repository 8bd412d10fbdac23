"""Dependencies of the node routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlnode.api.node import NodeState
from mlnode.common.context import NodeContext


def get_node(request: Request) -> NodeState:
    """The app's node state."""
    node: NodeState = request.app.state.node
    return node


def get_context(request: Request) -> NodeContext:
    """The app's shared context."""
    ctx: NodeContext = request.app.state.context
    return ctx


NodeStateDep = Annotated[NodeState, Depends(get_node)]
ContextDep = Annotated[NodeContext, Depends(get_context)]
