"""Applications, keys, subscriptions and tiers: control-plane events on the real broker become
the gateway's consumer resources, in any order, and a blocked subscription passes no traffic."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError

from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from models.consumer_workflow import ConsumerKind, ConsumerWorkflowStatus, consumer_workflow_id
from models.naming import sha1_hex
from tests.integration.conftest import RunningAgent
from tests.integration.helpers import eventually

ORG = "carbon.super"
API_UUID = "2f4ad6c1-7d1e-4c55-9e8b-5a6f0d3c2b1a"


def obj(kube: KubeEmulator, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    return kube.get_object(kind, ns, name)


async def consumer_status(client: Client, kind: ConsumerKind, key: str) -> ConsumerWorkflowStatus | None:
    try:
        handle = client.get_workflow_handle(consumer_workflow_id(ORG, kind, key))
        return await handle.query("status", result_type=ConsumerWorkflowStatus)
    except RPCError:
        return None


async def settled(client: Client, kind: ConsumerKind, key: str, processed: int) -> ConsumerWorkflowStatus:
    async def probe() -> ConsumerWorkflowStatus | None:
        status = await consumer_status(client, kind, key)
        if (
            status
            and status.events_processed >= processed
            and status.current_event is None
            and not status.pending_events
        ):
            return status
        return None

    import asyncio
    import time

    deadline = time.monotonic() + 30
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{kind} {key} did not settle after {processed} events: {await consumer_status(client, kind, key)}"
            )
        await asyncio.sleep(0.05)


def environments(app: dict[str, Any]) -> list[dict[str, str]]:
    return ((app["spec"].get("securitySchemes") or {}).get("oauth2") or {}).get("environments", [])


async def test_an_application_follows_its_keys_and_goes_with_its_deletion(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    ns = agent.settings.namespace
    app = control_plane.create_application("PizzaApp", owner="alice", attributes={"tier": "gold"})
    created = await eventually(lambda: obj(kube, ns, "Application", app["uuid"]), what="the Application")
    assert created["spec"]["name"] == "PizzaApp" and created["spec"]["owner"] == "alice"
    assert created["spec"]["organization"] == ORG and environments(created) == []

    production = control_plane.add_key(app["uuid"], key_type="PRODUCTION", consumer_key="prodKey123")
    control_plane.add_key(app["uuid"], key_type="SANDBOX", consumer_key="sandKey456")
    await eventually(
        lambda: len(environments(obj(kube, ns, "Application", app["uuid"]) or {"spec": {}})) == 2, what="two keys"
    )
    assert environments(obj(kube, ns, "Application", app["uuid"])) == [
        {"envId": "Default", "appId": "prodKey123", "keyType": "PRODUCTION"},
        {"envId": "Default", "appId": "sandKey456", "keyType": "SANDBOX"},
    ]

    control_plane.remove_key(app["uuid"], production["consumerKey"])
    await eventually(
        lambda: [e["appId"] for e in environments(obj(kube, ns, "Application", app["uuid"]))] == ["sandKey456"],
        what="the production key removed",
    )

    control_plane.delete_application(app["uuid"])
    await eventually(lambda: obj(kube, ns, "Application", app["uuid"]) is None, what="the Application deleted")
    status = await settled(agent.client, "application", app["uuid"], processed=5)
    assert status.phase == "idle" and status.applied == []


async def test_a_subscription_arriving_before_its_application_converges(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    ns = agent.settings.namespace
    # The application exists in the control plane, but its event comes after the subscription's.
    app = control_plane.create_application("LateApp", publish=False)
    sub = control_plane.subscribe(app["uuid"], API_UUID, api_name="PizzaShackAPI", api_version="1.0.0")
    mapping = sha1_hex(f"{app['uuid']}:{sub['subscriptionUUID']}")
    subscription = await eventually(lambda: obj(kube, ns, "Subscription", sub["subscriptionUUID"]), what="Subscription")
    assert subscription["spec"]["api"] == {"name": "PizzaShackAPI", "version": "1.0.0"}
    assert subscription["spec"]["subscriptionStatus"] == "UNBLOCKED"
    assert subscription["spec"]["ratelimitRef"]["name"] == sha1_hex(f"Unlimited-{ORG}")
    assert (await eventually(lambda: obj(kube, ns, "ApplicationMapping", mapping), what="mapping"))["spec"] == {
        "applicationRef": app["uuid"],
        "subscriptionRef": sub["subscriptionUUID"],
    }
    control_plane.publish("APPLICATION_CREATE", control_plane.consumer_event("application", app, "APPLICATION_CREATE"))
    await eventually(lambda: obj(kube, ns, "Application", app["uuid"]), what="the late Application")


async def test_a_blocked_subscription_loses_its_mapping_until_unblocked(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    ns = agent.settings.namespace
    app = control_plane.create_application("BlockMe")
    sub = control_plane.subscribe(app["uuid"], API_UUID, api_name="PizzaShackAPI", api_version="1.0.0", policy="Gold")
    key = sub["subscriptionUUID"]
    mapping = sha1_hex(f"{app['uuid']}:{key}")
    await eventually(lambda: obj(kube, ns, "ApplicationMapping", mapping), what="the mapping")

    for state in ("BLOCKED", "ON_HOLD", "REJECTED"):
        control_plane.update_subscription(key, state=state)
        await eventually(lambda: obj(kube, ns, "ApplicationMapping", mapping) is None, what=f"no mapping while {state}")
        await eventually(
            lambda s=state: (obj(kube, ns, "Subscription", key) or {}).get("spec", {}).get("subscriptionStatus") == s,
            what=f"status {state}",
        )
        control_plane.update_subscription(key, state="UNBLOCKED")
        await eventually(lambda: obj(kube, ns, "ApplicationMapping", mapping), what="the mapping restored")

    control_plane.update_subscription(key, state="PROD_ONLY_BLOCKED")  # sandbox traffic still passes
    await eventually(
        lambda: (
            (obj(kube, ns, "Subscription", key) or {}).get("spec", {}).get("subscriptionStatus") == "PROD_ONLY_BLOCKED"
        ),
        what="PROD_ONLY_BLOCKED",
    )
    assert obj(kube, ns, "ApplicationMapping", mapping) is not None

    control_plane.unsubscribe(key)
    await eventually(
        lambda: obj(kube, ns, "Subscription", key) is None and obj(kube, ns, "ApplicationMapping", mapping) is None,
        what="the subscription and its mapping deleted",
    )


async def test_a_tier_is_converted_exactly_or_refused_with_its_reason(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    ns = agent.settings.namespace
    name = sha1_hex(f"Gold-{ORG}")
    control_plane.add_subscription_policy("Gold", request_count=5000, time_unit="min", unit_time=1, burst=(10, "sec"))
    policy = await eventually(lambda: obj(kube, ns, "RateLimitPolicy", name), what="the Gold RateLimitPolicy")
    assert policy["spec"]["override"]["subscription"] == {
        "organization": ORG,
        "stopOnQuotaReach": True,
        "requestCount": {"requestsPerUnit": 5000, "unit": "Minute"},
        "burstControl": {"requestsPerUnit": 10, "unit": "Second"},
    }
    control_plane.update_subscription_policy("Gold", request_count=100, time_unit="min", unit_time=60)
    await eventually(
        lambda: (
            (obj(kube, ns, "RateLimitPolicy", name) or {})
            .get("spec", {})
            .get("override", {})
            .get("subscription", {})
            .get("requestCount")
            == {"requestsPerUnit": 100, "unit": "Hour"}
        ),
        what="100 per 60 min as 100 per Hour",
    )
    # 100 per 5 minutes is not 100 per minute: refused, and the last good policy stays.
    control_plane.update_subscription_policy("Gold", request_count=100, time_unit="min", unit_time=5)
    status = await settled(agent.client, "tier", "Gold", processed=3)
    assert status.phase == "failed", status
    error = status.last_error or ""
    assert "allows 100 requests per 5 min" in error and "cannot be expressed exactly" in error
    kept = obj(kube, ns, "RateLimitPolicy", name)
    assert kept["spec"]["override"]["subscription"]["requestCount"] == {"requestsPerUnit": 100, "unit": "Hour"}

    control_plane.delete_subscription_policy("Gold")
    await eventually(lambda: obj(kube, ns, "RateLimitPolicy", name) is None, what="the tier deleted")


async def test_consumer_events_are_deduplicated_and_kept_in_order(
    agent: RunningAgent, control_plane: ControlPlaneSimulator, kube: KubeEmulator
) -> None:
    ns = agent.settings.namespace
    app = control_plane.create_application("Twice", publish=False)
    fields = control_plane.consumer_event("application", app, "APPLICATION_CREATE")
    event_id = str(uuid.uuid4())
    for _ in range(3):
        control_plane.publish("APPLICATION_CREATE", fields, event_id=event_id)
    await eventually(lambda: obj(kube, ns, "Application", app["uuid"]), what="the Application")
    status = await settled(agent.client, "application", app["uuid"], processed=1)
    assert status.events_processed == 1
