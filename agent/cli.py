"""``gateway-agent``: run the listener and the worker, and operate the API workflows."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn

import typer
from temporalio.client import Client

from agent.console import exit_after as _exit_after
from agent.history_command import history
from agent.settings import Settings, get_settings
from agent.status_command import retry, status
from agent.sync_command import sync
from agent.temporal import connect
from agent.translate_command import translate

HELP = """Kubernetes Gateway Agent on Temporal.

Operator commands print tables for people, or one JSON document with --output json; progress goes
to stderr. Exit codes: 0 ok, 1 the operation failed, aborted or timed out, 2 a usage error or
nothing by that name.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
log = logging.getLogger("gateway-agent")


def _setup(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)


def _run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> NoReturn:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    _exit_after(runner())


async def _listen(client: Client, settings: Settings, stop: asyncio.Event) -> None:
    from intake.listener import BrokerListener
    from intake.submit import TemporalSubmitter

    await BrokerListener(settings, TemporalSubmitter(client, settings)).run(stop)


async def _work(client: Client, settings: Settings, stop: asyncio.Event) -> None:
    from worker import run_worker

    await run_worker(client, settings, stop)


@app.command()
def listen() -> None:
    """Subscribe to the control plane's events and hand each to its API's workflow."""
    settings = get_settings()
    _setup(settings)

    async def main(stop: asyncio.Event) -> None:
        await _listen(await connect(settings), settings, stop)

    _run_until_signalled(main)


@app.command()
def worker() -> None:
    """Run the Temporal worker (workflows and activities); SIGTERM shuts it down gracefully."""
    settings = get_settings()
    _setup(settings)

    async def main(stop: asyncio.Event) -> None:
        await _work(await connect(settings), settings, stop)

    _run_until_signalled(main)


@app.command()
def run() -> None:
    """Run the listener and the worker in one process."""
    settings = get_settings()
    _setup(settings)

    async def main(stop: asyncio.Event) -> None:
        client = await connect(settings)
        await asyncio.gather(_listen(client, settings, stop), _work(client, settings, stop))

    _run_until_signalled(main)


for command in (status, history, retry, sync, translate):
    app.command()(command)


def main() -> None:
    app()
