"""Tracing end to end: one trace per control-plane event, from the listener's receipt through
Temporal (workflow, child workflow, activities) to the HTTP calls to the API server and the control
plane, exported over OTLP/HTTP by an agent process to a receiver in the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.settings import Settings
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from harness.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.integration.agent_process import agent_process
from tests.integration.helpers import eventually
from tests.integration.test_api_deployment import ORG, new_api, wait_report

DEPLOY = "DEPLOY_API_IN_GATEWAY"
# What one deployment's trace holds, at the least.
# A first deployment drops nothing, so it runs no prune (local-readiness patch).
EXPECTED = {
    "receive event",
    "SignalWithStartWorkflow:ApiWorkflow",
    "StartChildWorkflow:ApiDeployment",
    "RunWorkflow:ApiDeployment",
    "RunActivity:snapshot_api_resources",
    "RunActivity:fetch_desired_state",
    "RunActivity:apply_api_resources",
    "RunActivity:wait_until_accepted",
    "RunActivity:report_deployment_status",
}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    otlp.start()
    try:
        yield otlp
    finally:
        otlp.stop()


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1].split("/")[0])


def http_url(span: ReceivedSpan) -> str:
    return str(span.attributes.get("url.full") or span.attributes.get("http.url") or "")


def event_trace(otlp: OtlpReceiver, event_id: str, cp: int, kube: int) -> list[ReceivedSpan] | None:
    """The spans of the trace whose listener span received ``event_id``, once it is complete."""
    spans = otlp.spans
    roots = [s for s in spans if s.name == "receive event" and s.attributes.get("gateway_agent.event.id") == event_id]
    if not roots:
        return None
    found = [s for s in spans if s.trace_id == roots[0].trace_id]
    names = {s.name for s in found}
    ports = {port_of(u) for s in found if (u := http_url(s))}
    return found if EXPECTED <= names and {cp, kube} <= ports else None


def ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    chain = []
    while span.parent_span_id:
        span = by_id[span.parent_span_id]  # a missing parent breaks the trace: KeyError
        chain.append(span.name)
    return chain


async def test_one_trace_per_event_from_the_listener_to_the_http_calls(
    settings: Settings,
    kube: KubeEmulator,
    control_plane: ControlPlaneSimulator,
    receiver: OtlpReceiver,
    tmp_path: Path,
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "gateway-agent-under-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    cp_port, kube_port = port_of(control_plane.url), port_of(kube.url)
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    project = new_api()
    async with agent_process(settings, kubeconfig, tmp_path / "agent.log", env=env):
        first = control_plane.deploy(project)
        await wait_report(control_plane, project.uuid, 1)
        spans = await eventually(
            lambda: event_trace(receiver, first, cp_port, kube_port), timeout=20, what="the event's trace"
        )
        # A second event of the same API: its own trace, though the API's workflow was started by the first.
        second = control_plane.deploy(new_api(revision="2", uuid=project.uuid))
        await wait_report(control_plane, project.uuid, 2)
        later = await eventually(
            lambda: event_trace(receiver, second, cp_port, kube_port), timeout=20, what="the second event's trace"
        )

    by_id = {s.span_id: s for s in spans}
    [root] = [s for s in spans if s.name == "receive event"]
    assert root.parent_span_id == ""
    assert root.resource["service.name"] == "gateway-agent-under-test"
    assert root.resource["deployment.environment"] == "test"
    assert (
        root.attributes["messaging.message.id"]
        and root.attributes["messaging.destination.name"] == settings.broker_topic
    )
    identity = {
        "gateway_agent.event.type": DEPLOY,
        "gateway_agent.event.id": first,
        "gateway_agent.api.id": project.uuid,
        "gateway_agent.organization": ORG,
    }
    assert identity.items() <= root.attributes.items()
    assert root.attributes["gateway_agent.event.outcome"] == "submitted"

    # Every span hangs from the listener's: one connected trace.
    for span in spans:
        if span is not root:
            assert ancestors(span, by_id)[-1] == "receive event", span.name
    # The workflow, every activity and every HTTP call below them carry the event's identity.
    named = [s for s in spans if s.name.startswith(("RunWorkflow:", "RunActivity:", "StartActivity:")) or http_url(s)]
    for span in named:
        assert identity.items() <= span.attributes.items(), (span.name, span.attributes)
    # The HTTP calls are children of activity spans: the API server's (urllib3) and the control plane's (httpx).
    calls = [s for s in spans if http_url(s)]
    assert {port_of(http_url(s)) for s in calls} >= {cp_port, kube_port}
    for call in calls:
        assert by_id[call.parent_span_id].name.startswith("RunActivity:"), call.name
    fetch = [c for c in calls if "runtime-artifacts" in http_url(c)]
    assert fetch and all(by_id[c.parent_span_id].name == "RunActivity:fetch_desired_state" for c in fetch)
    applies = [c for c in calls if port_of(http_url(c)) == kube_port]
    assert any(by_id[c.parent_span_id].name == "RunActivity:apply_api_resources" for c in applies)

    # The second event: its own trace, its own identity, with the deployment it caused.
    assert later[0].trace_id != spans[0].trace_id
    [deployment] = [s for s in later if s.name == "RunWorkflow:ApiDeployment"]
    assert deployment.attributes["gateway_agent.event.id"] == second
    assert {s.trace_id for s in later} == {later[0].trace_id}
