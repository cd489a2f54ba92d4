"""Hostile input: messages on the broker are dead-lettered with a reason that names the problem, in
the order sent, nothing else is lost, and the listener keeps serving the events after them; an
artifact that is not the API the event names fails its deployment and writes nothing."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json

import pytest

from harness.activemq import ActiveMQ
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from intake.listener import REASON_HEADER
from models.events import MAX_MESSAGE_BYTES, encode_envelope
from tests.integration.conftest import RunningAgent
from tests.integration.helpers import api_resources, settled_status
from tests.integration.test_api_deployment import ORG, new_api, wait_report
from tests.integration.test_intake import read_dead_letters


def envelope(event_type: object, event: str, time_stamp: object = 1) -> str:
    return json.dumps({"event": {"payloadData": {"eventType": event_type, "timeStamp": time_stamp, "event": event}}})


def b64(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


DEPLOY_FIELDS = {
    "eventId": "e-1",
    "timeStamp": 1,
    "type": "DEPLOY_API_IN_GATEWAY",
    "tenantId": -1234,
    "tenantDomain": "carbon.super",
    "apiId": 1,
    "uuid": "6c0ffee0-0000-4000-8000-000000000001",
    "name": "Hostile",
    "version": "1.0.0",
    "apiType": "HTTP",
    "gatewayLabels": ["Default"],
}

# (what it is, the body, a fragment the dead-letter reason must hold)
HOSTILE: list[tuple[str, str | bytes, str]] = [
    ("malformed JSON", '{"event": {"payloadData": ', "body is not JSON"),
    ("bad base64", envelope("DEPLOY_API_IN_GATEWAY", "not/base64!!"), "not base64-encoded JSON"),
    ("base64 of no JSON", envelope("DEPLOY_API_IN_GATEWAY", base64.b64encode(b"\x00\x01").decode()), "base64"),
    (
        "a wrong field type",
        envelope("DEPLOY_API_IN_GATEWAY", b64({**DEPLOY_FIELDS, "gatewayLabels": 7})),
        "gatewayLabels",
    ),
    (
        "a missing field",
        envelope("DEPLOY_API_IN_GATEWAY", b64({k: v for k, v in DEPLOY_FIELDS.items() if k != "uuid"})),
        "uuid",
    ),
    ("a timestamp that is text", envelope("DEPLOY_API_IN_GATEWAY", b64(DEPLOY_FIELDS), "yesterday"), "timeStamp"),
    ("an event type that is no name", envelope("DROP TABLE apis; --", b64(DEPLOY_FIELDS)), "eventType"),
    ("an event type of 1 MB", envelope("X" * 100_000, b64(DEPLOY_FIELDS)), "eventType"),
    ("deeply nested JSON", "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    (
        "deeply nested inside the event",
        envelope("API_UPDATE", base64.b64encode(b"[" * 100_000).decode()),
        "nested too deeply",
    ),
    ("an oversized message", envelope("API_UPDATE", "A" * (MAX_MESSAGE_BYTES + 10)), "larger than"),
    ("an identifier too long", envelope("DEPLOY_API_IN_GATEWAY", b64({**DEPLOY_FIELDS, "uuid": "u" * 10_000})), "uuid"),
    (
        "the envelope and event disagree",
        encode_envelope("DEPLOY_API_IN_GATEWAY", {**DEPLOY_FIELDS, "type": "REMOVE_API_FROM_GATEWAY"}, 1),
        "envelope says",
    ),
    ("bytes that are not UTF-8", b'{"event": "\xff\xfe\xfa"}', "UTF-8"),
    ("not an object", envelope("API_UPDATE", b64(["a", "list"])), "not a JSON object"),
]


@pytest.mark.timeout(120)
async def test_hostile_messages_are_dead_lettered_with_reasons_and_the_listener_keeps_serving(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, broker: ActiveMQ
) -> None:
    first = new_api()
    control_plane.deploy(first)
    for _, body, _ in HOSTILE:
        control_plane.publish_raw(body)
    control_plane.publish_raw(envelope("SOME_FUTURE_EVENT", b64({"x": 1})))  # unknown: passed over, not dead
    last = new_api()
    control_plane.deploy(last)

    for project in (first, last):
        [report] = await wait_report(control_plane, project.uuid, 1, timeout=60)
        assert report["deploymentStatus"] == "SUCCESS", report
    letters = await asyncio.to_thread(
        read_dead_letters, broker, agent.settings.dead_letter_destination, len(HOSTILE), 30.0, raw=True
    )
    for (what, body, fragment), (headers, dead_body) in zip(HOSTILE, letters, strict=True):
        reason = headers[REASON_HEADER]
        assert fragment in reason, (what, reason)
        assert len(reason) <= 1000, (what, len(reason))  # a reason, not the message again
        # The message itself is kept, byte for byte, to look at or replay.
        assert dead_body == (body if isinstance(body, bytes) else body.encode()), what


async def test_an_artifact_whose_api_id_differs_from_the_events_fails_its_deployment_and_changes_nothing(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    """The control plane answers for API A with the project of API B: the deployment fails naming
    what the archive holds, FAILURE is reported, and nothing of either API is written."""
    asked, other = new_api(), new_api()
    swapped = dataclasses.replace(other, uuid=asked.uuid)  # A's event, B's files (api.json says B)
    control_plane.deploy(swapped)
    [report] = await wait_report(control_plane, asked.uuid, 1)
    assert report["deploymentStatus"] == "FAILURE", report
    status = await settled_status(agent.client, ORG, asked.uuid, processed=1)
    assert status.last_error and "holds" in status.last_error and other.uuid in status.last_error, status
    assert not api_resources(kube, agent.settings.namespace, ORG, asked.uuid)
    assert not api_resources(kube, agent.settings.namespace, ORG, other.uuid)
