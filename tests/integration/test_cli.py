"""`gateway-agent status` as an operator uses it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

from harness.control_plane import ControlPlaneSimulator
from tests.integration.conftest import REPO, RunningAgent
from tests.integration.test_api_deployment import ORG, new_api, wait_report


async def cli(agent: RunningAgent, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_AGENT_TEMPORAL_ADDRESS": agent.settings.temporal_address}
    cmd = [sys.executable, "-m", "agent", *args]
    return await asyncio.to_thread(subprocess.run, cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


async def test_status_shows_the_workflow_state_or_says_there_is_none(
    agent: RunningAgent, control_plane: ControlPlaneSimulator
) -> None:
    project = new_api()
    control_plane.deploy(project)
    await wait_report(control_plane, project.uuid, 1)

    shown = await cli(agent, "status", project.uuid, "--organization", ORG)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert (status["phase"], status["deployed_revision"], status["api_uuid"]) == ("idle", "1", project.uuid)

    missing = await cli(agent, "status", str(uuid.uuid4()))
    assert missing.returncode == 2 and "no workflow for API" in missing.stderr


async def test_status_and_retry_of_a_consumer(agent: RunningAgent, control_plane: ControlPlaneSimulator) -> None:
    from tests.integration.test_consumers import settled

    control_plane.add_subscription_policy("Odd", request_count=10, time_unit="min", unit_time=7)
    failed = await settled(agent.client, "tier", "Odd", processed=1)
    assert failed.phase == "failed"

    shown = await cli(agent, "status", "Odd", "--kind", "tier")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["phase"] == "failed" and "cannot be expressed exactly" in status["last_error"]

    # The control plane's tier is fixed; the operator retries, and the retry converges.
    control_plane.update_subscription_policy("Odd", request_count=10, unit_time=1, publish=False)
    retried = await cli(agent, "retry", "Odd", "--kind", "tier")
    assert retried.returncode == 0, retried.stderr + retried.stdout
    assert json.loads(retried.stdout)["phase"] == "idle"

    wrong = await cli(agent, "status", "Odd", "--kind", "planet")
    assert wrong.returncode == 2 and "Invalid value" in wrong.stderr and "--kind" in wrong.stderr
