"""When does an API's status mean the gateway took *this* apply?"""

import pytest

from activities.cluster import readiness_verdict, strip_server_fields
from models.api_workflow import ApplyResult

OLD = {
    "accepted": True,
    "status": "CREATED",
    "message": "API is deployed to the gateway.",
    "transitionTime": "2026-11-27T12:00:00Z",
    "events": ["a"],
}
NEW = {**OLD, "status": "UPDATED", "events": ["a", "b"]}
REJECTED = {
    "accepted": False,
    "status": "Invalid",
    "message": "backend missing",
    "transitionTime": "2026-11-27T12:00:00Z",
}


def api(status: dict | None) -> dict:
    return {"metadata": {"name": "a", "resourceVersion": "9"}, "status": {"deploymentStatus": status} if status else {}}


@pytest.mark.parametrize(
    ("changed", "at_apply", "now", "verdict"),
    [
        (True, None, None, None),  # nothing written yet
        (True, OLD, OLD, None),  # the status predates this apply
        (True, OLD, NEW, (True, NEW["message"])),
        (True, None, OLD, (True, OLD["message"])),
        (True, OLD, REJECTED, (False, "backend missing")),
        (False, OLD, OLD, (True, OLD["message"])),  # unchanged and already accepted
        (False, REJECTED, REJECTED, (False, "backend missing")),  # unchanged and still rejected
    ],
)
def test_readiness_verdict(changed: bool, at_apply: dict | None, now: dict | None, verdict: object) -> None:
    applied = ApplyResult(
        applied=["API/a"], api_name="a", api_resource_version="9", api_changed=changed, api_status_at_apply=at_apply
    )
    assert readiness_verdict(api(now), applied) == verdict


def test_strip_server_fields_keeps_what_the_agent_applies() -> None:
    live = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "n",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "3",
            "labels": {"a": "b"},
            "managedFields": [{}],
            "creationTimestamp": "t",
            "annotations": {},
        },
        "data": {"k": "v"},
        "status": {"x": 1},
    }
    assert strip_server_fields(live) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "n", "namespace": "ns", "labels": {"a": "b"}},
        "data": {"k": "v"},
    }


@pytest.mark.parametrize(
    ("must_answer", "before", "now", "verdict"),
    [
        (True, OLD, OLD, None),  # a generation moved: the status from before the apply does not count
        (True, OLD, NEW, (True, NEW["message"])),
        (True, None, OLD, (True, OLD["message"])),
        (True, OLD, REJECTED, (False, "backend missing")),
        (False, OLD, OLD, (True, OLD["message"])),  # nothing moved: APK writes nothing; its status stands
        (False, None, None, None),  # nothing moved and never accepted: keep waiting
        (False, REJECTED, REJECTED, (False, "backend missing")),
    ],
)
def test_readiness_verdict_by_generation(
    must_answer: bool, before: dict | None, now: dict | None, verdict: object
) -> None:
    applied = ApplyResult(applied=["API/a"], api_name="a", gateway_must_answer=must_answer, api_status_before=before)
    assert readiness_verdict(api(now), applied) == verdict
