"""``gateway-agent history``: the events of one API and how each deployment of them ended.

Every event (and every retry of one) ran as its own ``ApiDeployment`` workflow, id
``deploy:<organization>:<uuid>:<event id>:<attempt>``; visibility lists them, and each run's history
holds its event (the input) and its ending (the result, or the failure message).
"""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.table import Table
from rich.text import Text
from temporalio.client import Client
from temporalio.service import RPCError

from agent import console
from agent.api_visibility import DeploymentRun, deployment_prefix, deployment_runs, list_deployment_runs
from agent.console import EXIT_USAGE, Output, fail, output_option, progress, progress_option
from agent.settings import get_settings
from agent.status_command import PANEL_WIDTH, STATE_STYLES, resolve, status_panel
from agent.temporal import connect
from models.api_workflow import ApiWorkflowStatus, api_workflow_id
from workflows.api_workflow import ApiWorkflow

# The API's own status is a bonus here: a worker that does not answer soon is not waited for.
STATUS_TIMEOUT = timedelta(seconds=5)


async def _workflow_status(client: Client, organization: str, api_uuid: str) -> ApiWorkflowStatus | None:
    try:
        handle = client.get_workflow_handle(api_workflow_id(organization, api_uuid))
        return await handle.query(ApiWorkflow.status, rpc_timeout=STATUS_TIMEOUT)
    except RPCError:
        return None


def deployments_table(runs: list[DeploymentRun]) -> Table:
    columns = ("started", "event", "event id", "attempt", "revision", "duration", "outcome", "failure")
    table = console.table(*columns, wrap=("failure",))
    for run in runs:
        table.add_row(
            Text(console.clock(run.started)),
            Text(run.event_type or ""),
            Text(run.event_id),
            Text(str(run.attempt)),
            Text(run.revision or ""),
            Text(console.duration(run.duration_seconds)),
            Text(run.outcome, style=STATE_STYLES.get(run.outcome, "green" if run.outcome == "Completed" else "")),
            Text(run.failure or "", style="red"),
        )
    return table


def history(
    key: str = typer.Argument(..., metavar="API", help="The API's UUID or name.", show_default=False),
    organization: str | None = typer.Option(
        None,
        "--organization",
        "-o",
        help="The organization. Default: the one visibility finds the API in, else carbon.super.",
        show_default=False,
    ),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many deployments to show, newest first."),
    output: Output = output_option(),
    show_progress: bool | None = progress_option(),
) -> None:
    """List an API's events and the outcome of each deployment of them (retries included), newest first.

    Exit codes: 0 shown, 2 no API by that UUID or name (or an ambiguous name).
    """
    settings = get_settings()

    async def main() -> None:
        client = await connect(settings)
        org, api_uuid, row = await resolve(client, key, organization, "api")
        executions = await list_deployment_runs(client, org, api_uuid)
        status = await _workflow_status(client, org, api_uuid)
        if not executions and status is None and row is None:
            fail(
                f"no deployments and no workflow for API {key} in organization {org} "
                "(`gateway-agent status` lists the APIs)",
                EXIT_USAGE,
            )
        shown = executions[:limit]
        with progress(
            f"reading {len(shown)} deployment(s)", output=output, force=show_progress, counted=True
        ) as activity:
            activity.total(len(shown))
            runs = await deployment_runs(client, shown, deployment_prefix(org, api_uuid), on_read=activity.advance)
        if output is Output.json:
            console.print_json(
                {
                    "organization": org,
                    "api_id": api_uuid,
                    "name": row.name if row else None,
                    "workflow": status.model_dump(mode="json") if status else None,
                    "deployments": [run.model_dump(mode="json") for run in runs],
                    "shown": len(runs),
                    "total": len(executions),
                }
            )
            return
        screen = console.out()
        if status is not None:
            screen.print(status_panel(status, row), width=min(screen.width, PANEL_WIDTH))
        else:
            console.note(f"the workflow of API {api_uuid} did not answer its status query; deployments only")
        if runs:
            screen.print(deployments_table(runs))
        else:
            console.note("no deployment has run for this API yet")
        if len(executions) > len(runs):
            console.note(f"showing the newest {len(runs)} of {len(executions)} deployments; --limit N shows more")

    console.exit_after(main())
