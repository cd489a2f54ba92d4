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
from temporalio.runtime import Runtime

from agent import metrics, telemetry
from agent.console import exit_after as _exit_after
from agent.health import Health
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


def _setup(settings: Settings) -> Runtime | None:
    """Logging, tracing (``OTEL_*``), metrics and health of a long-running command; the Temporal
    runtime that serves the SDK's metrics (None: metrics off)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    telemetry.setup_tracing()
    return metrics.serve(settings.metrics_port)


def _run_until_signalled(
    main: Callable[[asyncio.Event, Health], Awaitable[None]], settings: Settings, parts: tuple[str, ...]
) -> NoReturn:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        health = Health(expected=("temporal", *parts))
        if settings.health_port:
            health.serve(settings.health_port)
        try:
            await main(stop, health)
        finally:
            health.close()
            telemetry.shutdown()

    _exit_after(runner())


async def _listen(client: Client, settings: Settings, stop: asyncio.Event, health: Health) -> None:
    from intake.listener import BrokerListener
    from intake.submit import TemporalSubmitter

    listener = BrokerListener(settings, TemporalSubmitter(client, settings))

    async def subscribed() -> str | None:
        if listener.connected.is_set():
            return None
        return f"broker: not subscribed to {settings.broker_topic} on {settings.broker_url}"

    health.ready("broker", subscribed)
    health.task("listener", asyncio.current_task())  # type: ignore[arg-type]
    await listener.run(stop)


async def _work(client: Client, settings: Settings, stop: asyncio.Event, health: Health) -> None:
    from worker import run_worker

    health.task("worker", asyncio.current_task())  # type: ignore[arg-type]
    await run_worker(client, settings, stop, health)


@app.command()
def listen() -> None:
    """Subscribe to the control plane's events and hand each to its API's workflow."""
    settings = get_settings()
    runtime = _setup(settings)

    async def main(stop: asyncio.Event, health: Health) -> None:
        client = await connect(settings, runtime)
        health.temporal(client)
        await _listen(client, settings, stop, health)

    _run_until_signalled(main, settings, ("broker",))


@app.command()
def worker() -> None:
    """Run the Temporal worker (workflows and activities); SIGTERM shuts it down gracefully."""
    settings = get_settings()
    runtime = _setup(settings)

    async def main(stop: asyncio.Event, health: Health) -> None:
        client = await connect(settings, runtime)
        health.temporal(client)
        await _work(client, settings, stop, health)

    _run_until_signalled(main, settings, ("worker",))


@app.command()
def run() -> None:
    """Run the listener and the worker in one process."""
    settings = get_settings()
    runtime = _setup(settings)

    async def main(stop: asyncio.Event, health: Health) -> None:
        client = await connect(settings, runtime)
        health.temporal(client)
        await asyncio.gather(_listen(client, settings, stop, health), _work(client, settings, stop, health))

    _run_until_signalled(main, settings, ("broker", "worker"))


for command in (status, history, retry, sync, translate):
    app.command()(command)


def main() -> None:
    app()
