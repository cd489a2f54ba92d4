"""The operator commands (`status`, `history`, `retry`, `sync`) as an operator runs them: the real
CLI in a subprocess against the test's Temporal, agent and control plane."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from agent.search_attributes import ensure_search_attributes
from harness.control_plane import ControlPlaneSimulator
from models.api_workflow import ApiWorkflowInput, ApiWorkflowStatus, api_workflow_id
from tests.integration.conftest import REPO, RunningAgent
from tests.integration.helpers import settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report

# The control plane serves these as the API's maxTps, which the gateway cannot enforce: the
# deployment fails at translate, every time the control plane still says so.
UNENFORCEABLE = {"maxTps": {"production": 10}}


@pytest.fixture(autouse=True)
async def searchable(temporal_client: Client) -> None:
    """The search attributes, as a worker registers them at start, before any agent of these tests starts."""
    await ensure_search_attributes(temporal_client, temporal_client.namespace)


async def cli(agent: RunningAgent, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    settings = agent.settings
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_AGENT_")}
    environment.update(
        {
            "GATEWAY_AGENT_TEMPORAL_ADDRESS": settings.temporal_address,
            "GATEWAY_AGENT_TEMPORAL_NAMESPACE": settings.temporal_namespace,
            "GATEWAY_AGENT_TASK_QUEUE": settings.task_queue,
            "GATEWAY_AGENT_CP_URL": settings.cp_url,
            "GATEWAY_AGENT_NAMESPACE": settings.namespace,
        },
        **env,
    )
    cmd = [sys.executable, "-m", "agent", *args]
    return await asyncio.to_thread(
        subprocess.run, cmd, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def unique_name(stem: str) -> str:
    return f"{stem}{uuid.uuid4().hex[:8]}"


async def listed(agent: RunningAgent, api_uuid: str, state: str, timeout: float = 30.0) -> dict:
    """The API's row in the listing once visibility shows it in ``state``."""
    deadline = time.monotonic() + timeout
    while True:
        shown = ok(await cli(agent, "status", "-o", ORG, "--output", "json"))
        rows = {row["api_id"]: row for row in json.loads(shown.stdout)["apis"]}
        row = rows.get(api_uuid)
        if row is not None and row["state"] == state:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"API {api_uuid} not listed as {state}: {row}")
        await asyncio.sleep(0.3)


async def test_status_lists_every_api_with_its_state_and_filters_them(
    agent: RunningAgent, control_plane: ControlPlaneSimulator
) -> None:
    cp = control_plane
    name = unique_name("Listed")
    deployed = new_api(name=name, context=f"/{name}-ok")
    failed = new_api(name=name + "Failing", context=f"/{name}-failing", extra=UNENFORCEABLE)
    removed = new_api(name=name + "Gone", context=f"/{name}-gone")
    for project in (deployed, failed, removed):
        cp.deploy(project)
    await wait_report(cp, removed.uuid, 1)
    cp.undeploy(removed.uuid)
    await wait_report(cp, removed.uuid, 2)
    await wait_report(cp, deployed.uuid, 1)
    await wait_report(cp, failed.uuid, 1)

    ok_row = await listed(agent, deployed.uuid, "deployed")
    failed_row = await listed(agent, failed.uuid, "failed")
    gone_row = await listed(agent, removed.uuid, "removed")
    assert (ok_row["name"], ok_row["organization"], ok_row["revision"], ok_row["last_error"]) == (name, ORG, "1", None)
    assert ok_row["gateway_labels"] == ["Default"] and ok_row["details"] is True and ok_row["since"]
    assert failed_row["name"] == name + "Failing" and failed_row["revision"] is None
    assert "maxTps" in failed_row["last_error"] and len(failed_row["last_error"]) > 60  # whole in JSON
    assert gone_row["gateway_labels"] == [] and gone_row["revision"] is None
    assert ok_row["workflow_id"] == f"api:{ORG}:{deployed.uuid}"

    # Filters: by state, by label, by organization.
    only_failed = json.loads(ok(await cli(agent, "status", "--state", "failed", "--output", "json")).stdout)
    ids = {row["api_id"] for row in only_failed["apis"]}
    assert failed.uuid in ids and not ids & {deployed.uuid, removed.uuid}
    assert all(row["state"] == "failed" for row in only_failed["apis"])
    on_default = json.loads(ok(await cli(agent, "status", "--label", "Default", "--output", "json")).stdout)
    ids = {row["api_id"] for row in on_default["apis"]}
    assert deployed.uuid in ids and removed.uuid not in ids
    elsewhere = json.loads(ok(await cli(agent, "status", "-o", "no.such.org", "--output", "json")).stdout)
    assert elsewhere == {"apis": [], "count": 0, "filtered_here": False}

    # The table, for people: one row per API, the error cut short.
    table = ok(await cli(agent, "status", "-o", ORG)).stdout
    ours = {failed.uuid, deployed.uuid, removed.uuid}
    rows = {line.split()[0]: line for line in table.splitlines() if line.split() and line.split()[0] in ours}
    assert set(rows) == {failed.uuid, deployed.uuid, removed.uuid}, table
    assert name in rows[deployed.uuid] and "deployed" in rows[deployed.uuid] and " 1 " in rows[deployed.uuid]
    assert "failed" in rows[failed.uuid] and "maxTps" in rows[failed.uuid] and "…" in rows[failed.uuid]
    assert failed_row["last_error"] not in table
    assert "removed" in rows[removed.uuid]

    wrong = await cli(agent, "status", "--state", "sleeping")
    assert wrong.returncode == 2 and "--state" in wrong.stderr


async def test_status_of_one_api_by_uuid_or_name(agent: RunningAgent, control_plane: ControlPlaneSimulator) -> None:
    name = unique_name("Named")
    project = new_api(name=name, context=f"/{name}")
    control_plane.deploy(project)
    await wait_report(control_plane, project.uuid, 1)
    await listed(agent, project.uuid, "deployed")

    by_uuid = json.loads(ok(await cli(agent, "status", project.uuid, "--output", "json")).stdout)
    by_name = json.loads(ok(await cli(agent, "status", name, "--output", "json")).stdout)
    status = ApiWorkflowStatus.model_validate(by_name)
    assert (status.api_uuid, status.phase, status.deployed_revision) == (project.uuid, "idle", "1")
    assert by_uuid == by_name

    panel = ok(await cli(agent, "status", name)).stdout
    assert f"API {name} · {project.uuid} · {ORG}" in panel, panel
    assert "deployed since" in panel and "revision 1" in panel and re.search(r"gateway labels +Default", panel), panel

    missing = await cli(agent, "status", str(uuid.uuid4()))
    assert missing.returncode == 2 and "no workflow for API" in missing.stderr, missing.stderr
    unknown = await cli(agent, "status", unique_name("NoSuchApi"))
    assert unknown.returncode == 2 and "no workflow for API" in unknown.stderr and not unknown.stdout


async def test_an_ambiguous_name_lists_the_candidates_and_exits_2(
    agent: RunningAgent, control_plane: ControlPlaneSimulator
) -> None:
    name = unique_name("Twice")
    first = new_api(name=name, version="1.0.0", context=f"/{name}")
    second = new_api(name=name, version="2.0.0", context=f"/{name}")
    for project in (first, second):
        control_plane.deploy(project)
    for project in (first, second):
        await wait_report(control_plane, project.uuid, 1)
        await listed(agent, project.uuid, "deployed")

    for command in ("status", "retry", "history"):
        shown = await cli(agent, command, name)
        assert shown.returncode == 2, (command, shown.stdout, shown.stderr)
        assert f"2 APIs are named '{name}'" in shown.stderr
        assert first.uuid in shown.stderr and second.uuid in shown.stderr and not shown.stdout


async def test_retry_waits_for_the_outcome_and_history_lists_every_attempt_newest_first(
    agent: RunningAgent, control_plane: ControlPlaneSimulator
) -> None:
    cp = control_plane
    name = unique_name("Retried")
    first = new_api(name=name, context=f"/{name}")
    first_event = cp.deploy(first)
    await wait_report(cp, first.uuid, 1)
    broken = new_api(revision="2", uuid=first.uuid, name=name, context=f"/{name}", extra=UNENFORCEABLE)
    broken_event = cp.deploy(broken)
    await wait_report(cp, first.uuid, 2)
    failed = await settled_status(agent.client, ORG, first.uuid, processed=2)
    assert failed.phase == "failed" and "maxTps" in (failed.last_error or "")

    # The control plane still serves the same revision: the retry fails again, and says why.
    again = await cli(agent, "retry", first.uuid, "--output", "json")
    assert again.returncode == 1, again.stdout + again.stderr
    assert json.loads(again.stdout)["phase"] == "failed"
    assert f"the retry of API {first.uuid} failed at translate:" in again.stderr and "maxTps" in again.stderr

    # Fixed in the control plane (no event): the next retry converges.
    cp.deploy(new_api(revision="3", uuid=first.uuid, name=name, context=f"/{name}"), publish=False)
    fixed = ok(await cli(agent, "retry", name))
    assert "revision 3" in fixed.stdout and f"the retry of API {first.uuid} succeeded" in fixed.stderr

    history = json.loads(ok(await cli(agent, "history", name, "--output", "json")).stdout)
    assert (history["api_id"], history["organization"], history["name"]) == (first.uuid, ORG, name)
    assert history["workflow"]["deployed_revision"] == "3" and (history["shown"], history["total"]) == (4, 4)
    runs = history["deployments"]
    assert [(r["event_id"], r["attempt"], r["outcome"], r["revision"]) for r in runs] == [
        (broken_event, 3, "Completed", "3"),
        (broken_event, 2, "Failed", None),
        (broken_event, 1, "Failed", None),
        (first_event, 1, "Completed", "1"),
    ]
    assert all(r["event_type"] == "DEPLOY_API_IN_GATEWAY" for r in runs)
    assert [r["started"] for r in runs] == sorted((r["started"] for r in runs), reverse=True)
    for run in runs[1:3]:
        assert run["failure"].startswith("translate:") and "maxTps" in run["failure"], run
        assert run["failed_step"] == "translate" and run["duration_seconds"] is not None
    assert runs[0]["failure"] is None and "revision 3 accepted" in runs[0]["result"]

    table = ok(await cli(agent, "history", first.uuid)).stdout
    lines = [line for line in table.splitlines() if line[:2] == "20" and (broken_event in line or first_event in line)]
    assert [("Completed" in line, "Failed" in line) for line in lines] == [
        (True, False),
        (False, True),
        (False, True),
        (True, False),
    ], table
    assert "maxTps" in lines[1]

    newest = json.loads(ok(await cli(agent, "history", first.uuid, "--limit", "1", "--output", "json")).stdout)
    assert [r["attempt"] for r in newest["deployments"]] == [3] and newest["total"] == 4

    nothing = await cli(agent, "history", str(uuid.uuid4()))
    assert nothing.returncode == 2 and "no deployments and no workflow for API" in nothing.stderr

    idle = await cli(agent, "retry", first.uuid)
    assert idle.returncode == 2 and "nothing to retry" in idle.stderr


async def test_status_and_retry_of_a_consumer(agent: RunningAgent, control_plane: ControlPlaneSimulator) -> None:
    from tests.integration.test_consumers import settled

    control_plane.add_subscription_policy("Odd", request_count=10, time_unit="min", unit_time=7)
    failed = await settled(agent.client, "tier", "Odd", processed=1)
    assert failed.phase == "failed"

    shown = ok(await cli(agent, "status", "Odd", "--kind", "tier", "--output", "json"))
    status = json.loads(shown.stdout)
    assert status["phase"] == "failed" and "cannot be expressed exactly" in status["last_error"]
    panel = ok(await cli(agent, "status", "Odd", "--kind", "tier")).stdout
    assert "tier Odd" in panel and "failed" in panel and "gateway-agent retry Odd" in panel

    # The control plane's tier is fixed; the operator retries, and the retry converges.
    control_plane.update_subscription_policy("Odd", request_count=10, unit_time=1, publish=False)
    retried = ok(await cli(agent, "retry", "Odd", "--kind", "tier", "--output", "json"))
    assert json.loads(retried.stdout)["phase"] == "idle"

    wrong = await cli(agent, "status", "Odd", "--kind", "planet")
    assert wrong.returncode == 2 and "Invalid value" in wrong.stderr and "--kind" in wrong.stderr


async def test_sync_prints_a_table_by_action_and_its_json_stays_clean_with_progress_on(
    agent: RunningAgent, control_plane: ControlPlaneSimulator
) -> None:
    newcomer = control_plane.create_application(unique_name("Newcomer"), publish=False)

    shown = ok(await cli(agent, "sync", "--dry-run", "--output", "json", "--progress"))
    result = json.loads(shown.stdout)  # the spinner went to stderr only
    assert result["dry_run"] and f"Application/{newcomer['uuid']}" in [c["resource"] for c in result["created"]]
    assert "dry run of the full sync" in shown.stderr and "\x1b[" in shown.stderr

    table = ok(await cli(agent, "sync", "--dry-run")).stdout
    assert table.startswith("sync would change:"), table
    [row] = [line for line in table.splitlines() if newcomer["uuid"] in line]
    assert row.split()[:4] == ["+", "would", "create", "Application"] and ORG in row, row
    assert "\x1b[" not in table  # no terminal: no colours, no spinner


async def test_workflows_without_visibility_details_are_listed_by_what_visibility_has(
    agent: RunningAgent, temporal_client: Client
) -> None:
    # An API workflow from before the search attributes: no worker ever ran it here, so it has none.
    organization, api_uuid = f"legacy-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    handle = await temporal_client.start_workflow(
        "ApiWorkflow",
        ApiWorkflowInput(organization=organization, api_uuid=api_uuid),
        id=api_workflow_id(organization, api_uuid),
        task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
    )
    try:
        shown = json.loads(ok(await cli(agent, "status", "-o", organization, "--output", "json")).stdout)
        [row] = shown["apis"]
        assert (row["api_id"], row["organization"], row["details"]) == (api_uuid, organization, False)
        assert (row["state"], row["workflow_status"], row["name"]) == (None, "Running", None)
        assert row["since"] == row["started"]
        table = ok(await cli(agent, "status", "-o", organization)).stdout
        assert f"(no visibility details; run `gateway-agent status {api_uuid}`)" in table and "Running" in table
        idle = await cli(agent, "status", "-o", organization, "--state", "idle", "--output", "json")
        assert json.loads(ok(idle).stdout)["apis"] == []
        # No worker runs it: its status query is not answered, and the command says so.
        unanswered = await cli(agent, "status", api_uuid, "-o", organization)
        assert unanswered.returncode == 1 and "did not answer within 15s" in unanswered.stderr, unanswered.stderr
    finally:
        await handle.terminate("test over")


async def test_a_namespace_without_the_search_attributes_is_listed_and_filtered_by_the_cli(
    agent: RunningAgent, temporal_client: Client
) -> None:
    namespace = f"plain-{uuid.uuid4().hex[:8]}"
    await temporal_client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400))
    )
    client = await Client.connect(
        temporal_client.service_client.config.target_host, namespace=namespace, data_converter=pydantic_data_converter
    )
    api_uuid = str(uuid.uuid4())
    deadline = time.monotonic() + 30
    while True:  # a new namespace takes a moment to take workflows
        try:
            handle = await client.start_workflow(
                "ApiWorkflow",
                ApiWorkflowInput(organization=ORG, api_uuid=api_uuid),
                id=api_workflow_id(ORG, api_uuid),
                task_queue="nobody",
            )
            break
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        env = {"GATEWAY_AGENT_TEMPORAL_NAMESPACE": namespace}
        listed_all = json.loads(ok(await cli(agent, "status", "--output", "json", **env)).stdout)
        assert [row["api_id"] for row in listed_all["apis"]] == [api_uuid] and not listed_all["filtered_here"]
        failed = await cli(agent, "status", "--state", "failed", "--output", "json", **env)
        assert json.loads(ok(failed).stdout) == {"apis": [], "count": 0, "filtered_here": True}
        assert f"namespace {namespace} does not have the agent's search attributes" in failed.stderr
        by_name = await cli(agent, "status", "PizzaShackAPI", **env)
        assert by_name.returncode == 2 and "no workflow for API PizzaShackAPI" in by_name.stderr
    finally:
        await handle.terminate("test over")
