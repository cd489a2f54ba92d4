"""Two agents, two gateway ids, one Kubernetes namespace: neither lists, prunes, syncs away or
writes over the other's resources.

Each agent has its own Temporal namespace (workflow ids are per API, not per gateway: two agents
must not share one) and its own gateway label; both write their APIs into the same namespace.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from kubernetes import client as k8s_client
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from agent.settings import Settings
from harness.api_projects import rest_api_project
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from models.consumer_workflow import SyncResult
from models.naming import GATEWAY_ID_LABEL, api_selector, field_manager
from models.resources import MANAGED_KINDS
from tests.integration.conftest import running_agent
from tests.integration.helpers import eventually, settled_status
from worker import sync_input
from workflows.full_sync import FullSync

ORG = "carbon.super"


async def other_temporal_namespace(client: Client) -> Client:
    name = f"agent-b-{uuid.uuid4().hex[:8]}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=Duration(seconds=86400))
    )
    for _ in range(100):  # a new namespace takes a moment to be served
        try:
            other = await Client.connect(
                client.service_client.config.target_host, namespace=name, data_converter=pydantic_data_converter
            )
            await other.count_workflows()
            return other
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError(f"Temporal namespace {name} never became usable")


def objects_of(kube: KubeEmulator, namespace: str, api_uuid: str, gateway_id: str) -> dict[str, dict[str, Any]]:
    found = {}
    for spec in MANAGED_KINDS:
        for obj in kube.objects(spec.kind, namespace=namespace, label_selector=api_selector(ORG, api_uuid, gateway_id)):
            found[f"{spec.kind}/{obj['metadata']['name']}"] = obj
    return found


def versions(objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {rid: o["metadata"]["resourceVersion"] for rid, o in objects.items()}


async def sync(client: Client, settings: Settings) -> SyncResult:
    return await client.execute_workflow(
        FullSync.run,
        sync_input(settings, "test"),
        id=f"sync-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        result_type=SyncResult,
    )


@pytest.mark.timeout(240)
async def test_two_agents_in_one_namespace_keep_to_their_own_resources(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
) -> None:
    ns = settings.namespace
    client_b = await other_temporal_namespace(temporal_client)
    suffix = uuid.uuid4().hex[:8]
    settings_b = settings.model_copy(
        update={
            "gateway_labels": ["Edge"],
            "temporal_namespace": client_b.namespace,
            "task_queue": f"agent-b-{suffix}",
            "broker_client_id": f"agent-b-{suffix}",
            "broker_subscription_name": f"agent-b-{suffix}",
        }
    )
    assert (settings.effective_gateway_id, settings_b.effective_gateway_id) == ("Default", "Edge")
    x = rest_api_project(uuid=str(uuid.uuid4()), name="OnDefault", version="1.0.0", context="/on-default")
    y = rest_api_project(uuid=str(uuid.uuid4()), name="OnEdge", version="1.0.0", context="/on-edge")

    async with (
        running_agent(settings, temporal_client, kube_api_client) as a,
        running_agent(settings_b, client_b, kube_api_client) as b,
    ):
        control_plane.deploy(x, labels=["Default"])
        control_plane.deploy(y, labels=["Edge"])
        assert (await settled_status(a.client, ORG, x.uuid, processed=1)).deployed
        assert (await settled_status(b.client, ORG, y.uuid, processed=1)).deployed

        on_a, on_b = objects_of(kube, ns, x.uuid, "Default"), objects_of(kube, ns, y.uuid, "Edge")
        assert on_a and on_b
        for objects, gateway_id in ((on_a, "Default"), (on_b, "Edge")):
            for obj in objects.values():
                assert obj["metadata"]["labels"][GATEWAY_ID_LABEL] == gateway_id
                managers = {m["manager"] for m in obj["metadata"]["managedFields"] if m["operation"] == "Apply"}
                assert managers == {field_manager(gateway_id)}, (obj["metadata"]["name"], managers)
        # Neither agent deployed the other's API.
        assert not objects_of(kube, ns, x.uuid, "Edge") and not objects_of(kube, ns, y.uuid, "Default")

        # Each agent's full sync sees only its own API: nothing of the other's is an orphan.
        before = versions({**on_a, **on_b})
        for client, own in ((b.client, settings_b), (a.client, settings)):
            result = await sync(client, own)
            assert not result.apis and not result.deleted and not result.held_back, result.headline()
            assert result.unchanged >= 1, result.headline()
        assert versions({**objects_of(kube, ns, x.uuid, "Default"), **objects_of(kube, ns, y.uuid, "Edge")}) == before

        # Removing A's API prunes A's objects only.
        control_plane.undeploy(x.uuid, labels=["Default"])
        await settled_status(a.client, ORG, x.uuid, processed=2)
        await eventually(lambda: not objects_of(kube, ns, x.uuid, "Default"), what="A's API pruned")
        assert versions(objects_of(kube, ns, y.uuid, "Edge")) == versions(on_b)
