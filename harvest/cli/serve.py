"""`harvest serve`: the HTTP API, the dashboard and the schedules."""

from __future__ import annotations

import typer

from harvest.cli.common import config


def serve(
    port: int = typer.Option(8600, min=1, max=65535, help="port to listen on"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    label_studio: bool = typer.Option(
        True, help="start Label Studio unless one answers at the configured address"
    ),
    time_limit: float = typer.Option(
        3600.0, min=1, help="seconds a run may take, for recipes whose schedule sets none"
    ),
    stop_grace: float = typer.Option(
        30.0, min=0, help="on SIGTERM, seconds running crawls get to finish their batch"
    ),
) -> None:
    """Serve the HTTP API, the dashboard and the recipes' schedules until SIGTERM.

    Changes need Authorization: Bearer $HARVEST_API_TOKEN; the OpenAPI document is at
    /openapi.json. Logs are JSON lines on stderr."""
    from harvest.service.serve import serve as run_service

    run_service(config(), host, port, label_studio, time_limit, stop_grace)
