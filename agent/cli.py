"""``gateway-agent``: run the listener and the worker, and operate the API workflows."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

import typer
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from agent.settings import Settings, get_settings
from agent.temporal import connect
from agent.translate_command import translate
from models.api_workflow import ApiWorkflowStatus, RetryRequest, api_workflow_id
from models.consumer_workflow import ConsumerKind, ConsumerWorkflowStatus, SyncResult, consumer_workflow_id
from workflows.api_deployment import ApiDeployment
from workflows.api_workflow import ApiWorkflow
from workflows.consumer_workflow import ConsumerWorkflow

KINDS = ("api", "application", "subscription", "tier")
KIND_HELP = "What the key names: api (an API UUID), application or subscription (a UUID), tier (its name)."

app = typer.Typer(help="Kubernetes Gateway Agent on Temporal.", no_args_is_help=True, add_completion=False)
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


def _exit_after(main: Coroutine[Any, Any, None]) -> NoReturn:
    """Run a command that holds a Temporal client, then leave without interpreter finalization.

    The SDK's native threads can abort a finalizing interpreter while a client is alive
    (``PyGILState_Release``), which would turn a clean exit into a crash.
    """
    try:
        asyncio.run(main)
        code = 0
    except typer.Exit as exc:
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - reported, then the same exit as any crash
        traceback.print_exc()
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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


def _print_status(status: ApiWorkflowStatus | ConsumerWorkflowStatus) -> None:
    typer.echo(json.dumps(status.model_dump(mode="json"), indent=2))


def _kind(value: str) -> str:
    if value not in KINDS:
        raise typer.BadParameter(f"one of {', '.join(KINDS)}")
    return value


def _shown(kind: str) -> str:
    return "API" if kind == "api" else kind


def _workflow_id(kind: str, organization: str, key: str) -> str:
    if kind == "api":
        return api_workflow_id(organization, key)
    consumer: ConsumerKind = kind  # type: ignore[assignment]
    return consumer_workflow_id(organization, consumer, key)


async def _status(
    client: Client, organization: str, api_uuid: str, kind: str = "api"
) -> ApiWorkflowStatus | ConsumerWorkflowStatus:
    """The workflow's status; for an API, with the step of the deployment running now, if any."""
    if kind != "api":
        return await client.get_workflow_handle(_workflow_id(kind, organization, api_uuid)).query(
            ConsumerWorkflow.status
        )
    handle = client.get_workflow_handle(api_workflow_id(organization, api_uuid))
    status = await handle.query(ApiWorkflow.status)
    if status.current_deployment:
        try:
            progress = await client.get_workflow_handle(status.current_deployment).query(ApiDeployment.progress)
        except RPCError:
            return status  # it finished between the two queries
        status.step = progress.step
        if progress.phase == "rolling-back":
            status.phase = "rolling-back"
    return status


@app.command()
def status(
    api_uuid: str = typer.Argument(..., help="The API's UUID (or the application's, subscription's, tier's key)."),
    organization: str = typer.Option("carbon.super", "--organization", "-o", help="The organization."),
    kind: str = typer.Option("api", "--kind", "-k", callback=_kind, help=KIND_HELP),
) -> None:
    """Show an API's (or application's, subscription's, tier's) workflow state and its last error."""
    settings = get_settings()

    async def main() -> None:
        client = await connect(settings)
        try:
            _print_status(await _status(client, organization, api_uuid, kind))
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                typer.echo(f"no workflow for {_shown(kind)} {api_uuid} in organization {organization}", err=True)
                raise typer.Exit(2) from exc
            raise

    _exit_after(main())


@app.command()
def retry(
    api_uuid: str = typer.Argument(..., help="The API's UUID (or the application's, subscription's, tier's key)."),
    organization: str = typer.Option("carbon.super", "--organization", "-o", help="The organization."),
    kind: str = typer.Option("api", "--kind", "-k", callback=_kind, help=KIND_HELP),
    wait: bool = typer.Option(True, help="Wait for the retried convergence to finish."),
    timeout: float = typer.Option(600.0, help="Seconds to wait for the outcome."),
) -> None:
    """Retry an API (or consumer) whose last convergence failed; exits 0 when it then succeeds."""
    settings = get_settings()

    async def main() -> None:
        client = await connect(settings)
        handle = client.get_workflow_handle(_workflow_id(kind, organization, api_uuid))
        update = ApiWorkflow.retry if kind == "api" else ConsumerWorkflow.retry
        try:
            accepted = await handle.execute_update(update, RetryRequest(reason="gateway-agent retry"))
        except WorkflowUpdateFailedError as exc:
            typer.echo(f"retry refused: {exc.cause}", err=True)
            raise typer.Exit(2) from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                typer.echo(f"no workflow for {_shown(kind)} {api_uuid} in organization {organization}", err=True)
                raise typer.Exit(2) from exc
            raise
        typer.echo(f"retrying event {accepted.event_id} of {_shown(kind)} {api_uuid}", err=True)
        if not wait:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            current = await _status(client, organization, api_uuid, kind)
            settled = current.phase in ("idle", "failed") and current.current_event is None
            if settled and current.events_processed > accepted.events_processed:
                _print_status(current)
                raise typer.Exit(0 if current.phase == "idle" else 1)
            if loop.time() > deadline:
                _print_status(current)
                typer.echo("timed out waiting for the outcome", err=True)
                raise typer.Exit(1)
            await asyncio.sleep(0.2)

    _exit_after(main())


@app.command()
def sync(
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change; change nothing."),
    allow_mass_delete: bool = typer.Option(
        False, "--allow-mass-delete", help="Delete even beyond GATEWAY_AGENT_SYNC_MAX_DELETE_RATIO or on empty lists."
    ),
    output: str = typer.Option("text", "--output", help="text or json."),
    timeout: float = typer.Option(1800.0, help="Seconds to wait for the sync."),
) -> None:
    """Run one full sync now (as a workflow) and print what it changed; exits 1 when it aborted."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError

    from worker import sync_input
    from workflows.full_sync import SYNC_WORKFLOW_ID, FullSync

    if output not in ("text", "json"):
        raise typer.BadParameter("text or json", param_hint="--output")
    settings = get_settings()

    async def main() -> None:
        client = await connect(settings)
        request = sync_input(settings, "cli", dry_run=dry_run, allow_mass_delete=allow_mass_delete)
        started = await client.start_workflow(
            FullSync.run,
            request,
            id=f"{SYNC_WORKFLOW_ID}-cli-{int(asyncio.get_running_loop().time() * 1000)}-{os.getpid()}",
            task_queue=settings.task_queue,
            static_summary="full sync from the CLI" + (" (dry run)" if dry_run else ""),
        )
        try:
            result = await asyncio.wait_for(started.result(), timeout)
        except WorkflowFailureError as exc:
            cause = exc.cause
            details = cause.details if isinstance(cause, ApplicationError) else ()
            result = SyncResult.model_validate(details[0]) if details else SyncResult(aborted=True, reason=str(cause))
        _print_sync(result, output)
        raise typer.Exit(1 if result.aborted else 0)

    _exit_after(main())


def _print_sync(result: SyncResult, output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
        return
    typer.echo(result.headline())
    marks = {"create": "+", "update": "~", "delete": "-", "converge": ">"}
    for changes in (result.created, result.updated, result.deleted, result.apis):
        for change in changes:
            reason = f"  ({change.reason})" if change.reason else ""
            typer.echo(f"{marks[change.action]} {change.resource} [{change.organization}]{reason}")
    for held in result.held_back:
        typer.echo(f"held back: {held}")
    for problem in result.problems:
        typer.echo(f"problem: {problem}")


app.command()(translate)


def main() -> None:
    app()
