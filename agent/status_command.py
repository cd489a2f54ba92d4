"""``gateway-agent status`` and ``gateway-agent retry``: what the workflows say, and a retry of a failure.

``status`` without an argument lists every API from Temporal's visibility (search attributes and
memo of each ``ApiWorkflow``); with one, it asks that workflow's ``status`` query. ``retry`` runs a
failed event again and, unless told not to, waits for its outcome.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from agent import console
from agent.api_visibility import NO_DETAILS, Ambiguous, ApiRow, list_apis, parse_moment, resolve_api
from agent.console import EXIT_FAILED, EXIT_USAGE, Output, fail, output_option, progress, progress_option
from agent.settings import get_settings
from agent.temporal import connect
from models.api_workflow import ApiWorkflowStatus, RetryAccepted, RetryRequest, api_workflow_id
from models.consumer_workflow import ConsumerKind, ConsumerWorkflowStatus, consumer_workflow_id
from models.visibility import API_STATES
from workflows.api_deployment import ApiDeployment
from workflows.api_workflow import ApiWorkflow
from workflows.consumer_workflow import ConsumerWorkflow

KINDS = ("api", "application", "subscription", "tier")
KIND_HELP = "What the key names: api (an API UUID or name), application or subscription (a UUID), tier (its name)."
ORGANIZATION_HELP = (
    "The organization. Default: for an API, the one visibility finds it in (else carbon.super); "
    "for the table, every organization; for the other kinds, carbon.super."
)
API_ORGANIZATION_HELP = (
    "The organization. Default: the one visibility finds the API in, else carbon.super "
    "(for --kind application, subscription, tier: carbon.super)."
)
# A panel wider than this is hard to read; its long values wrap inside.
PANEL_WIDTH = 120
# A status query no worker answers in this time is reported, not waited for.
QUERY_TIMEOUT = timedelta(seconds=15)
STATE_STYLES = {
    "failed": "bold red",
    "rolling-back": "yellow",
    "converging": "yellow",
    "deploying": "yellow",
    "Running": "yellow",
    "deployed": "green",
    "idle": "green",
    "removed": "dim",
    "Completed": "green",
    "Failed": "red",
    "Terminated": "red",
    "TimedOut": "red",
}

Status = ApiWorkflowStatus | ConsumerWorkflowStatus


def check_kind(value: str) -> str:
    if value not in KINDS:
        raise typer.BadParameter(f"one of {', '.join(KINDS)}")
    return value


def check_state(value: str | None) -> str | None:
    if value is not None and value not in API_STATES:
        raise typer.BadParameter(f"one of {', '.join(API_STATES)}")
    return value


def shown_kind(kind: str) -> str:
    return "API" if kind == "api" else kind


def workflow_id(kind: str, organization: str, key: str) -> str:
    if kind == "api":
        return api_workflow_id(organization, key)
    consumer: ConsumerKind = kind  # type: ignore[assignment]
    return consumer_workflow_id(organization, consumer, key)


async def query_status(client: Client, organization: str, key: str, kind: str = "api") -> Status:
    """The workflow's status; for an API, with the step of the deployment running now, if any."""
    if kind != "api":
        return await client.get_workflow_handle(workflow_id(kind, organization, key)).query(
            ConsumerWorkflow.status, rpc_timeout=QUERY_TIMEOUT
        )
    status = await client.get_workflow_handle(api_workflow_id(organization, key)).query(
        ApiWorkflow.status, rpc_timeout=QUERY_TIMEOUT
    )
    if status.current_deployment:
        try:
            deployment = client.get_workflow_handle(status.current_deployment)
            running = await deployment.query(ApiDeployment.progress, rpc_timeout=QUERY_TIMEOUT)
        except RPCError:
            return status  # it finished between the two queries
        status.step = running.step
        if running.phase == "rolling-back":
            status.phase = "rolling-back"
    return status


def query_failed(exc: RPCError, kind: str, key: str, organization: str) -> None:
    """Turn a failed query into the command's answer: not found (2), or no worker answering (1)."""
    if exc.status == RPCStatusCode.NOT_FOUND:
        listing = " (`gateway-agent status` lists the APIs)" if kind == "api" else ""
        fail(f"no workflow for {shown_kind(kind)} {key} in organization {organization}{listing}", EXIT_USAGE)
    # A query no worker takes ends in the client's deadline (CANCELLED: "Timeout expired").
    if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
        fail(
            f"the workflow of {shown_kind(kind)} {key} did not answer within {QUERY_TIMEOUT.seconds}s; "
            "is a worker running on its task queue?",
            EXIT_FAILED,
        )


async def resolve(client: Client, key: str, organization: str | None, kind: str) -> tuple[str, str, ApiRow | None]:
    """(organization, key, listing row) of what the command names; an ambiguous API name exits 2."""
    if kind != "api":
        return organization or "carbon.super", key, None
    try:
        return await resolve_api(client, key, organization)
    except Ambiguous as exc:
        console.err().print(
            Text(f"{len(exc.candidates)} APIs are named {exc.key!r}; name one by its UUID (and -o ORGANIZATION):"),
            soft_wrap=True,
        )
        console.err().print(api_table(exc.candidates))
        raise typer.Exit(EXIT_USAGE) from None


# Rendering


def styled(state: str | None) -> Text:
    return Text(state or "", style=STATE_STYLES.get(state or "", ""))


def api_table(rows: list[ApiRow]) -> Table:
    now = datetime.now(UTC)
    columns = ("API", "organization", "name", "revision", "state", "since", "last error")
    table = console.table(*columns, wrap=("name", "last error"))
    for row in rows:
        name = Text(row.name or "") if row.details else Text(NO_DETAILS.format(uuid=row.api_id), style="dim")
        table.add_row(
            Text(row.api_id),
            Text(row.organization),
            name,
            Text(row.revision or ""),
            styled(row.shown_state()),
            Text(console.ago(row.since, now)),
            Text(console.truncate(row.last_error), style="red"),
        )
    return table


def _event(event: object) -> str:
    if event is None:
        return ""
    kind = getattr(event, "event_type", "")
    return f"{kind} {getattr(event, 'event_id', '')}".strip()


def status_panel(status: Status, row: ApiRow | None = None) -> Panel:
    """A workflow's status query, for people."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def line(label: str, value: object, style: str = "") -> None:
        if value not in (None, "", [], 0) or label in ("phase", "events processed"):
            grid.add_row(label, value if isinstance(value, Text) else Text(str(value), style=style))

    def progress() -> None:
        """The lines every workflow's status has: its events, its deployment, its last failure."""
        line("events processed", status.events_processed)
        line("pending events", status.pending_events)
        line("current event", _event(status.current_event))
        line("current deployment", status.current_deployment)
        line("last result", status.last_result)
        line("failed event", _event(status.failed_event))
        line("failed step", status.failed_step, "red")
        line("last error", status.last_error, "red")
        line("last deployment", status.last_deployment)

    if isinstance(status, ApiWorkflowStatus):
        named = status.current_event or status.failed_event
        # The state, since when, name and labels of the visibility contract (newer workflows only).
        state, since = getattr(status, "deployment_state", ""), getattr(status, "state_since", "")
        name = (row.name if row else None) or getattr(status, "api_name", "") or (named.api_name if named else "")
        version = named.api_version if named else ""
        shown = " ".join(part for part in ("API", name, version) if part)
        title = f"{shown} · {status.api_uuid} · {status.organization}"
        if state:
            moment = parse_moment(since)
            line("state", Text.assemble(styled(state), f" since {console.ago(moment)}" if moment else ""))
        line("phase", styled(status.phase))
        line("step", status.step if status.phase in ("converging", "rolling-back") else "")
        line("deployed", f"revision {status.deployed_revision}" if status.deployed else "no")
        progress()
        line("gateway labels", ", ".join(getattr(status, "gateway_labels", None) or []))
        line("warnings", "\n".join(f"- {w}" for w in status.warnings), "yellow")
        if status.undelivered_report is not None:
            report = status.undelivered_report
            line("undelivered report", f"{report.action} {report.status}; re-sent until the control plane takes it")
        retry_hint = f"gateway-agent retry {status.api_uuid} -o {status.organization}"
    else:
        ref = status.ref
        title = f"{ref.kind} {ref.key} · {ref.organization}"
        line("phase", styled(status.phase))
        progress()
        line("resources", "\n".join(status.applied))
        retry_hint = f"gateway-agent retry {ref.key} -o {ref.organization} --kind {ref.kind}"
    body: list[object] = [grid]
    if status.phase == "failed":
        body.append(Text(f"\nretry: {retry_hint}", style="dim"))
    return Panel(Group(*body), title=Text(title, style="bold"), title_align="left", expand=False)


def print_status(status: Status, output: Output, row: ApiRow | None = None) -> None:
    if output is Output.json:
        console.print_json(status.model_dump(mode="json"))
    else:
        screen = console.out()
        screen.print(status_panel(status, row), width=min(screen.width, PANEL_WIDTH))


# Commands


def status(
    key: str | None = typer.Argument(
        None,
        metavar="API",
        help="An API's UUID or name (with --kind: an application's or subscription's UUID, a tier's name). "
        "Without it: a table of every API.",
        show_default=False,
    ),
    organization: str | None = typer.Option(None, "--organization", "-o", help=ORGANIZATION_HELP, show_default=False),
    kind: str = typer.Option("api", "--kind", "-k", callback=check_kind, help=KIND_HELP),
    state: str | None = typer.Option(
        None,
        "--state",
        callback=check_state,
        help=f"The table: only APIs in this deployment state ({', '.join(API_STATES)}).",
        show_default=False,
    ),
    label: str | None = typer.Option(
        None, "--label", help="The table: only APIs on this gateway label.", show_default=False
    ),
    output: Output = output_option(),
) -> None:
    """Show every API's deployment state, or one API's (application's, subscription's, tier's) workflow status.

    Exit codes: 0 shown, 1 the workflow did not answer, 2 nothing by that name (or an ambiguous name).
    """
    if key is None and kind != "api":
        fail(f"name the {kind}: the table lists APIs only", EXIT_USAGE)
    if key is not None and (state or label):
        fail("--state and --label filter the table; leave out the API to list them", EXIT_USAGE)
    settings = get_settings()

    async def list_all() -> None:
        client = await connect(settings)
        listing = await list_apis(client, organization=organization, state=state, label=label)
        if output is Output.json:
            rows = [row.model_dump(mode="json") for row in listing.apis]
            console.print_json({"apis": rows, "count": len(rows), "filtered_here": listing.filtered_here})
        elif listing.apis:
            console.out().print(api_table(listing.apis))
        else:
            console.note("no API workflow matches")
        if listing.filtered_here:
            console.note(
                f"note: Temporal namespace {settings.temporal_namespace} does not have the agent's search attributes "
                "(a worker registers them at start); filtered here, where a workflow without them matches no "
                "--state or --label"
            )

    async def show_one(key: str) -> None:
        client = await connect(settings)
        org, resolved, row = await resolve(client, key, organization, kind)
        try:
            print_status(await query_status(client, org, resolved, kind), output, row)
        except RPCError as exc:
            query_failed(exc, kind, key, org)
            raise

    console.exit_after(list_all() if key is None else show_one(key))


def retry(
    key: str = typer.Argument(
        ...,
        metavar="API",
        help="The API's UUID or name (with --kind: an application's or subscription's UUID, a tier's name).",
        show_default=False,
    ),
    organization: str | None = typer.Option(
        None, "--organization", "-o", help=API_ORGANIZATION_HELP, show_default=False
    ),
    kind: str = typer.Option("api", "--kind", "-k", callback=check_kind, help=KIND_HELP),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the retried deployment to finish."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the outcome."),
    output: Output = output_option(),
    show_progress: bool | None = progress_option(),
) -> None:
    """Run an API's (or consumer's) failed event again, as its next attempt, and wait for the outcome.

    Exit codes: 0 the retry succeeded (or, with --no-wait, was accepted), 1 it failed again or timed
    out, 2 nothing to retry or nothing by that name.
    """
    settings = get_settings()

    async def main() -> None:
        client = await connect(settings)
        org, resolved, row = await resolve(client, key, organization, kind)
        named = f"{shown_kind(kind)} {resolved}"
        handle = client.get_workflow_handle(workflow_id(kind, org, resolved))
        update = ApiWorkflow.retry if kind == "api" else ConsumerWorkflow.retry
        try:
            accepted: RetryAccepted = await handle.execute_update(update, RetryRequest(reason="gateway-agent retry"))
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            fail(f"retry refused: {getattr(cause, 'message', None) or cause or exc}", EXIT_USAGE)
        except RPCError as exc:
            query_failed(exc, kind, resolved, org)
            raise
        console.err().print(Text(f"retrying event {accepted.event_id} of {named}"), soft_wrap=True)
        if not wait:
            if output is Output.json:
                console.print_json(accepted.model_dump(mode="json"))
            return
        current, settled = await wait_for_retry(client, org, resolved, kind, accepted, timeout, output, show_progress)
        print_status(current, output, row)
        if not settled:
            fail(f"timed out after {timeout:g}s waiting for the retry of {named} ({current.phase})", EXIT_FAILED)
        if current.phase == "failed":
            fail(f"the retry of {named} failed at {current.failed_step}: {current.last_error}", EXIT_FAILED)
        console.err().print(
            Text(f"the retry of {named} succeeded: {current.last_result}", style="green"), soft_wrap=True
        )

    console.exit_after(main())


async def wait_for_retry(
    client: Client,
    organization: str,
    key: str,
    kind: str,
    accepted: RetryAccepted,
    timeout: float,
    output: Output,
    show_progress: bool | None,
) -> tuple[Status, bool]:
    """The workflow's status once the retried event has settled (True), or when ``timeout`` ran out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    shown = f"retrying event {accepted.event_id} of {shown_kind(kind)} {key}"
    with progress(shown, output=output, force=show_progress) as activity:
        while True:
            current = await query_status(client, organization, key, kind)
            settled = current.phase in ("idle", "failed") and current.current_event is None
            if settled and current.events_processed > accepted.events_processed:
                return current, True
            if loop.time() > deadline:
                return current, False
            step = getattr(current, "step", "")
            activity.say(f"{shown} · {current.phase}" + (f" · {step}" if step and current.phase != "idle" else ""))
            await asyncio.sleep(0.2)
