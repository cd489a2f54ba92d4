"""/metrics of a running agent process: its own counters and histogram, and the Temporal SDK's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from agent.settings import Settings
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from tests.integration.agent_process import agent_process, startup_sync_done
from tests.integration.helpers import api_resources, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report

DEPLOY = "DEPLOY_API_IN_GATEWAY"


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (the SDK adds its own)."""
    return sum(v for n, ls, v in found if n == name and labels.items() <= ls.items())


async def test_metrics_count_events_deployments_failures_compensations_and_latency(
    settings: Settings,
    temporal_client: Client,
    kube: KubeEmulator,
    control_plane: ControlPlaneSimulator,
    tmp_path: Path,
) -> None:
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    async with agent_process(settings, kubeconfig, tmp_path / "agent.log") as agent:
        await startup_sync_done(temporal_client, settings.task_queue)
        ns = settings.namespace

        # A deployment that succeeds, then the same event again (a duplicate).
        first = new_api(sandbox_url="http://sandbox.backend.example:8080/api")
        event_id = control_plane.deploy(first)
        await wait_report(control_plane, first.uuid, 1)
        before = api_resources(kube, ns, ORG, first.uuid)
        control_plane.publish(DEPLOY, control_plane.api_event_fields(first.uuid, DEPLOY), event_id=event_id)
        # A malformed message and an unknown event type, then a revision that drops the sandbox.
        control_plane.publish_raw("{this is not json")
        control_plane.publish("KEY_MANAGER_CONFIGURATION", {"name": "Resident Key Manager"})
        control_plane.deploy(new_api(revision="2", uuid=first.uuid, production_url="http://v2.backend.example/api"))
        reports = await wait_report(control_plane, first.uuid, 2)
        assert reports[-1]["deploymentStatus"] == "SUCCESS", reports
        after = api_resources(kube, ns, ORG, first.uuid)

        # A deployment the API server refuses: it fails and rolls back.
        kube.inject_fault(verb="apply", kind="HTTPRoute", status=422, reason="Invalid", message="refused", times=1)
        control_plane.deploy(new_api(revision="3", uuid=first.uuid, production_url="http://v3.backend.example/api"))
        reports = await wait_report(control_plane, first.uuid, 3)
        assert reports[2]["deploymentStatus"] == "FAILURE", reports
        failed = await settled_status(temporal_client, ORG, first.uuid, processed=3)
        assert failed.phase == "failed" and "previous configuration was restored" in (failed.last_error or "")

        found = samples(await agent.metrics_text())

    # The listener: what it did with each message.
    assert value(found, "gateway_agent_events_total", event_type=DEPLOY, outcome="submitted") == 4
    assert value(found, "gateway_agent_events_total", event_type="malformed", outcome="dead-lettered") == 1
    assert value(found, "gateway_agent_events_total", event_type="unknown", outcome="unknown") == 1
    # The API's workflow: three events queued, one dropped as a duplicate.
    events = "gateway_agent_workflow_events_total"
    assert value(found, events, kind="api", event_type=DEPLOY, outcome="queued") == 3
    assert value(found, events, kind="api", event_type=DEPLOY, outcome="duplicate") == 1
    # Deployments: two succeeded, one failed because the apply was refused, and was rolled back.
    deployments = "gateway_agent_deployments_total"
    assert value(found, deployments, kind="api", outcome="succeeded", reason="none") == 2
    assert value(found, deployments, kind="api", outcome="failed", reason="apply_refused") == 1
    assert value(found, deployments, kind="api", outcome="failed") == 1
    assert value(found, "gateway_agent_compensations_total", kind="api", outcome="restored") == 1
    assert value(found, "gateway_agent_compensations_total", kind="api", outcome="failed") == 0
    # Event to accepted: the two deployments the gateway accepted, in seconds.
    latency = "gateway_agent_event_to_accepted_seconds"
    assert value(found, latency + "_count", event_type=DEPLOY) == 2
    assert 0 < value(found, latency + "_sum", event_type=DEPLOY) < 60
    assert value(found, latency + "_bucket", event_type=DEPLOY, le="+Inf") == 2
    # The prune of revision 2 removed exactly what revision 1 had and revision 2 has not.
    pruned = Counter(rid.split("/")[0] for rid in set(before) - set(after))
    assert pruned["HTTPRoute"] == 1, pruned
    drift = "gateway_agent_drift_corrections_total"
    for kind, count in pruned.items():
        assert value(found, drift, source="prune", kind=kind, action="delete") == count
    assert value(found, drift, source="prune") == sum(pruned.values())
    # The Temporal SDK's own metrics, on the same endpoint.
    assert value(found, "temporal_workflow_completed_total", workflow_type="ApiDeployment") == 2
    assert value(found, "temporal_workflow_failed_total", workflow_type="ApiDeployment") == 1
    assert any(name.startswith("temporal_activity_execution_latency_seconds") for name, _, _ in found)
