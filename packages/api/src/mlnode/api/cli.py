"""`mlnode` command line: `mlnode serve`."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer
import uvicorn

from mlnode.api.exposure import exposure_problem
from mlnode.common.api_token import TokenFileError, use_token_file
from mlnode.common.logging import configure_logging
from mlnode.common.settings import NodeSettings
from mlnode.common.state_dir import StateDirError

app = typer.Typer(help="MLNode: the GPU worker of a network node.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """MLNode command line."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Override MLNODE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Override MLNODE_PORT.")] = None,
) -> None:
    """Serve the REST API (and the node's other listeners) until SIGTERM or Ctrl-C."""
    node = NodeSettings()
    if host is not None:
        node.host = host
    if port is not None:
        node.port = port
    configure_logging(node.log_level, node.log_format)
    try:
        use_token_file(node)
    except (OSError, TokenFileError, StateDirError) as exc:
        logging.getLogger("mlnode.api").error("cannot use MLNODE_API_TOKEN_FILE: %s", exc)
        raise typer.Exit(code=2) from exc
    problem = exposure_problem(node)
    if problem is not None:
        logging.getLogger("mlnode.api").error("%s", problem)
        raise typer.Exit(code=2)
    # Imported after the check: the feature packages bring torch, seconds an operator with a
    # refused configuration need not wait.
    from mlnode.api.app import create_app
    from mlnode.api.http_limits import limited_protocol
    from mlnode.api.settings import MLNodeSettings
    from mlnode.common.http.limits import HttpLimits

    settings = MLNodeSettings.load()
    settings.node = node
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it into the handler it found at
    # start; a no-op one lets the process end with status 0 after that clean shutdown.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        create_app(settings),
        host=settings.node.host,
        port=settings.node.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.node.shutdown_timeout_s),
        http=limited_protocol(
            HttpLimits(
                max_head_bytes=node.max_header_bytes,
                max_headers=node.max_headers,
                header_timeout_s=node.header_timeout_s,
            )
        ),
    )
