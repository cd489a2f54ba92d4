"""Fault tests: the session's real services (tests/integration/conftest.py), and the agent's commands
as real processes (harness/processes.py), each test in a Temporal namespace of its own so a killed
worker's workflows (the startup sync, the schedule) cannot reach into another test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from agent.settings import Settings
from harness.kube_emulator import KubeEmulator
from harness.processes import AgentCommand, settings_env
from tests.integration import conftest as integration
from workflows.full_sync import SYNC_WORKFLOW_ID

# The integration tests' fixtures: session services, and per test a namespace, topic, simulator, settings.
temporal_env = integration.temporal_env
temporal_client = integration.temporal_client
kube = integration.kube
kube_api_client = integration.kube_api_client
namespace = integration.namespace
topic = integration.topic
control_plane = integration.control_plane
settings = integration.settings


async def register_temporal_namespace(target: str, name: str | None = None) -> Client:
    """A fresh Temporal namespace on ``target``, and a client of it once it is served."""
    name = name or f"faults-{uuid.uuid4().hex[:8]}"
    admin = await Client.connect(target, data_converter=pydantic_data_converter)
    await admin.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=Duration(seconds=86400))
    )
    for _ in range(200):  # a new namespace takes a moment to be served
        try:
            client = await Client.connect(target, namespace=name, data_converter=pydantic_data_converter)
            await client.count_workflows()
            return client
        except RPCError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"Temporal namespace {name} never became usable")


@pytest.fixture
async def fault_client(temporal_env: WorkflowEnvironment) -> Client:
    return await register_temporal_namespace(temporal_env.client.service_client.config.target_host)


@pytest.fixture
def fault_settings(settings: Settings, fault_client: Client) -> Settings:
    """The test's settings in its own Temporal namespace, with time for a real process to be killed
    while the gateway holds a deployment (a readiness timeout far beyond the test's waits)."""
    return settings.model_copy(
        update={
            "temporal_namespace": fault_client.namespace,
            "readiness_timeout_seconds": 90.0,
            "activity_max_attempts": 5,
            "activity_initial_retry_seconds": 0.2,
            "sync_interval_seconds": 0.0,
            "broker_reconnect_max_seconds": 1.0,
            "kube_request_timeout_seconds": 5.0,
        }
    )


@pytest.fixture
def kubeconfig(kube: KubeEmulator, tmp_path: Path, namespace: str) -> Path:
    return kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=namespace)


AgentFactory = Callable[..., AgentCommand]


@pytest.fixture
def agent_command(tmp_path: Path, kubeconfig: Path) -> Iterator[AgentFactory]:
    """``agent_command("worker", settings, **env)``: a not yet started ``python -m agent worker``
    with the settings as its environment; every one still running is stopped at the end."""
    started: list[AgentCommand] = []

    def make(command: str, settings: Settings, **env: str) -> AgentCommand:
        environment = {**settings_env(settings), "KUBECONFIG": str(kubeconfig), **env}
        process = AgentCommand(command, tmp_path / f"{command}-{len(started) + 1}.log", environment)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


async def started(process: AgentCommand, timeout: float = 60.0) -> AgentCommand:
    await asyncio.to_thread(process.start_and_wait, timeout)
    return process


async def killed(process: AgentCommand) -> None:
    await asyncio.to_thread(process.kill)


async def startup_sync_done(client: Client, timeout: float = 60.0) -> WorkflowExecutionStatus:
    """Wait until the full sync a worker starts at its start has ended; its final status."""
    handle = client.get_workflow_handle(f"{SYNC_WORKFLOW_ID}-startup")
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            described = await handle.describe()
            if described.status != WorkflowExecutionStatus.RUNNING:
                assert described.status is not None
                return described.status
        except RPCError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the startup sync did not end")
        await asyncio.sleep(0.1)


async def activity_running(client: Client, workflow_id: str, activity: str, timeout: float = 60.0) -> None:
    """Wait until ``activity`` of the workflow has been started by a worker (and not finished)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            described = await client.get_workflow_handle(workflow_id).describe()
            for pending in described.raw_description.pending_activities:
                if (
                    pending.activity_type.name == activity
                    and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                ):
                    return
        except RPCError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{activity} of {workflow_id} never ran")
        await asyncio.sleep(0.1)


async def history_events(client: Client, workflow_id: str, event_type: EventType.ValueType) -> list:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [event for event in history.events if event.event_type == event_type]
