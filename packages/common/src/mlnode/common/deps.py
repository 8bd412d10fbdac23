"""FastAPI dependencies that feature routers use to reach their service.

The app keeps one `ServiceGate` on `app.state.gate`; this module is the only place that reads it,
so routes never touch `app.state` themselves.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request

from mlnode.common.lifecycle import Service, ServiceGate

ServiceT = TypeVar("ServiceT", bound=Service[Any])


def get_gate(request: Request) -> ServiceGate:
    """The node's service gate."""
    gate: ServiceGate = request.app.state.gate
    return gate


def resolve_service(request: Request, cls: type[ServiceT]) -> ServiceT:
    """The node's instance of a service class."""
    return get_gate(request).get(cls)
