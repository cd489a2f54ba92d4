"""``gateway-agent sync``: one full sync now, as a ``FullSync`` workflow, and what it changed."""

from __future__ import annotations

import asyncio
import os

import typer
from rich.table import Table
from rich.text import Text

from agent import console
from agent.console import EXIT_FAILED, EXIT_OK, Output, output_option, progress, progress_option
from agent.settings import get_settings
from agent.temporal import connect
from models.consumer_workflow import SyncChange, SyncResult

MARKS = {"create": "+", "update": "~", "delete": "-", "converge": ">"}


def changes_table(result: SyncResult) -> Table | None:
    """The changes grouped by action (created, updated, deleted, APIs handed over); None when there are none."""
    would = result.dry_run or result.mode == "report"
    groups: list[tuple[str, list[SyncChange]]] = [
        ("would create" if would else "created", result.created),
        ("would update" if would else "updated", result.updated),
        ("would delete" if would else "deleted", result.deleted),
        ("would converge" if would else "API converging", result.apis),
    ]
    listed = {(c.action, c.resource, c.organization) for _, changes in groups for c in changes}
    rest = [c for c in result.drifted if (c.action, c.resource, c.organization) not in listed]
    groups.append(("drifted", rest))
    groups = [(title, changes) for title, changes in groups if changes]
    if not groups:
        return None
    table = console.table("", "change", "kind", "name", "organization", "reason", wrap=("reason",))
    styles = {"create": "green", "update": "yellow", "delete": "red", "converge": "cyan"}
    for index, (title, changes) in enumerate(groups):
        for position, change in enumerate(changes):
            kind, _, name = change.resource.partition("/")
            last = position == len(changes) - 1 and index < len(groups) - 1
            table.add_row(
                Text(MARKS[change.action], style=styles[change.action]),
                Text(title, style=styles[change.action]),
                Text(kind),
                Text(name),
                Text(change.organization),
                Text(change.reason),
                end_section=last,
            )
    return table


def print_sync(result: SyncResult, output: Output) -> None:
    if output is Output.json:
        console.print_json(result.model_dump(mode="json"))
        return
    screen = console.out()
    screen.print(Text(result.headline(), style="bold red" if result.aborted else "bold"))
    table = changes_table(result)
    if table is not None:
        screen.print(table)
    for held in result.held_back:
        screen.print(Text(f"held back: {held}", style="yellow"))
    for problem in result.problems:
        screen.print(Text(f"problem: {problem}", style="red"))


def sync(
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change; change nothing."),
    allow_mass_delete: bool = typer.Option(
        False,
        "--allow-mass-delete",
        help="Let deletions go that are held back: beyond GATEWAY_AGENT_SYNC_MAX_DELETE_RATIO, or on empty lists.",
    ),
    output: Output = output_option(),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds to wait for the sync."),
    show_progress: bool | None = progress_option(),
) -> None:
    """Run one full sync now (as a FullSync workflow) and print what it changed, grouped by action.

    Exit codes: 0 the sync ran (or, with --dry-run, reported), 1 it aborted (nothing was changed) or timed out.
    """
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError

    from worker import sync_input
    from workflows.full_sync import SYNC_WORKFLOW_ID, FullSync

    settings = get_settings()

    async def main() -> None:
        client = await connect(settings)
        request = sync_input(settings, "cli", dry_run=dry_run, allow_mass_delete=allow_mass_delete)
        workflow_id = f"{SYNC_WORKFLOW_ID}-cli-{int(asyncio.get_running_loop().time() * 1000)}-{os.getpid()}"
        started = await client.start_workflow(
            FullSync.run,
            request,
            id=workflow_id,
            task_queue=settings.task_queue,
            static_summary="full sync from the CLI" + (" (dry run)" if dry_run else ""),
        )
        what = "dry run of the full sync" if dry_run else "full sync"
        doing = f"{what} {workflow_id}: reading the control plane and the cluster"
        with progress(doing, output=output, force=show_progress):
            try:
                result = await asyncio.wait_for(started.result(), timeout)
            except WorkflowFailureError as exc:
                cause = exc.cause
                details = cause.details if isinstance(cause, ApplicationError) else ()
                aborted = SyncResult(aborted=True, reason=str(cause))
                result = SyncResult.model_validate(details[0]) if details else aborted
            except TimeoutError:
                console.fail(f"the sync {workflow_id} did not finish within {timeout:g}s; it goes on", EXIT_FAILED)
        print_sync(result, output)
        raise typer.Exit(EXIT_FAILED if result.aborted else EXIT_OK)

    console.exit_after(main())
