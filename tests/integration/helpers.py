"""Small helpers for the integration tests: polling and views of the cluster and workflows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.service import RPCError

from harness.kube_emulator import KubeEmulator
from models.api_workflow import ApiWorkflowStatus, api_workflow_id
from models.naming import api_selector
from models.resources import MANAGED_KINDS

T = TypeVar("T")


async def eventually(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def workflow_status(client: Client, organization: str, api_uuid: str) -> ApiWorkflowStatus | None:
    try:
        handle = client.get_workflow_handle(api_workflow_id(organization, api_uuid))
        return await handle.query("status", result_type=ApiWorkflowStatus)
    except RPCError:
        return None


async def settled_status(
    client: Client, organization: str, api_uuid: str, *, processed: int, timeout: float = 30.0
) -> ApiWorkflowStatus:
    """The workflow's status once it has processed ``processed`` events and is not busy."""
    deadline = time.monotonic() + timeout
    while True:
        status = await workflow_status(client, organization, api_uuid)
        if (
            status is not None
            and status.events_processed >= processed
            and status.current_event is None
            and status.pending_events == 0
        ):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"workflow of {api_uuid} did not settle after {processed} events: {status}")
        await asyncio.sleep(0.05)


def api_resources(kube: KubeEmulator, namespace: str, organization: str, api_uuid: str) -> dict[str, dict[str, Any]]:
    """``Kind/name`` → what the agent owns of each resource of the API (no server fields, no status)."""
    selector = api_selector(organization, api_uuid)
    found: dict[str, dict[str, Any]] = {}
    for spec in MANAGED_KINDS:
        for obj in kube.objects(spec.kind, namespace=namespace, label_selector=selector):
            meta = obj["metadata"]
            found[f"{spec.kind}/{meta['name']}"] = {
                "labels": meta.get("labels", {}),
                "annotations": meta.get("annotations", {}),
                **{k: obj[k] for k in ("spec", "data", "binaryData") if k in obj},
            }
    return found


def reports_for(reports: list[dict[str, Any]], api_uuid: str) -> list[dict[str, Any]]:
    return [r for r in reports if r.get("apiId") == api_uuid]
