"""The simulator's consumers (applications, keys, subscriptions, tiers) must be served and announced
as applications-subscriptions.md (sections 1 and 2) says the real control plane does."""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.api_projects import rest_api_project
from harness.control_plane import SUPER_TENANT, ControlPlaneSimulator
from models.consumers import CpApplication, CpKeyMapping, CpSubscription, CpSubscriptionPolicy
from models.events import (
    ApplicationEvent,
    ApplicationKeyEvent,
    PolicyEvent,
    SubscriptionEvent,
    encode_envelope,
    parse_message,
)

AUTH = ("admin", "admin")
BASE = "internal/data/v1/"
COMMON = {"eventId", "timeStamp", "type", "tenantId", "tenantDomain"}
APPLICATION_ITEM = {"uuid", "id", "name", "subName", "policy", "tokenType", "groupIds", "attributes", "organization"}
KEY_ITEM = {"applicationId", "applicationUUID", "consumerKey", "keyType", "keyManager"}
SUBSCRIPTION_ITEM = {
    "subscriptionUUID", "subscriptionId", "policyId", "apiUUID", "apiId", "applicationUUID", "appId",
    "subscriptionState", "apiName", "apiVersion", "apiOrganization", "applicationOrganization",
}  # fmt: skip
LEGACY_SUBSCRIPTION_ITEM = SUBSCRIPTION_ITEM - {"apiName", "apiVersion", "apiOrganization", "applicationOrganization"}


@pytest.fixture
def sim() -> Iterator[ControlPlaneSimulator]:
    simulator = ControlPlaneSimulator(broker_url=None)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: ControlPlaneSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url + BASE, auth=AUTH, timeout=5) as http:
        yield http


def listed(client: httpx.Client, endpoint: str, headers: dict[str, str] | None = None, **params: Any) -> list[Any]:
    response = client.get(endpoint, params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"count", "list", "pagination"} and body["pagination"] is None
    assert body["count"] == len(body["list"])
    items: list[Any] = body["list"]
    return items


def api(name: str = "Orders") -> Any:
    return rest_api_project(
        uuid=str(uuidlib.uuid4()), name=name, version="1.0.0", context=f"/{name.lower()}", revision_id="1"
    )


def parsed(sim: ControlPlaneSimulator, event: dict[str, Any]) -> Any:
    """The published event as the agent parses it off the broker."""
    return parse_message(encode_envelope(event["type"], event, event["timeStamp"]))


# ---------------------------------------------------------------- applications and keys


def test_application_lifecycle_events_and_list_items(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    app = sim.create_application("shop", owner="alice", policy="10PerMin", attributes={"tier": "gold"})
    created = sim.published[-1]
    assert set(created) == COMMON | {
        "applicationId", "uuid", "applicationName", "tokenType", "applicationPolicy", "groupId", "attributes",
        "subscriber",
    }  # fmt: skip
    assert created["type"] == "APPLICATION_CREATE" and created["tenantId"] == -1234
    assert created["tenantDomain"] == SUPER_TENANT and isinstance(created["timeStamp"], int)
    assert (created["uuid"], created["applicationId"], created["applicationName"]) == (app["uuid"], app["id"], "shop")
    assert (created["subscriber"], created["applicationPolicy"], created["tokenType"]) == ("alice", "10PerMin", "JWT")
    assert created["attributes"] == {"tier": "gold"} and created["groupId"] == ""
    event = parsed(sim, created)
    assert isinstance(event, ApplicationEvent) and event.application_id == app["id"]

    [item] = listed(client, "applications")
    assert set(item) == APPLICATION_ITEM and item == app
    assert (item["subName"], item["policy"], item["organization"], item["groupIds"]) == (
        "alice", "10PerMin", SUPER_TENANT, [],
    )  # fmt: skip
    assert CpApplication.model_validate(item).owner == "alice"

    other = sim.create_application("other", uuid="fixed-uuid", publish=False)
    assert other["id"] == app["id"] + 1 and other["uuid"] == "fixed-uuid"
    assert sim.published[-1]["eventId"] == created["eventId"]  # publish=False: no event
    with pytest.raises(ValueError):
        sim.create_application("again", uuid="fixed-uuid")

    updated = sim.update_application(app["uuid"], name="shop2", policy="Unlimited", attributes={})
    assert sim.published[-1]["type"] == "APPLICATION_UPDATE" and sim.published[-1]["applicationName"] == "shop2"
    assert updated["id"] == app["id"] and updated["name"] == "shop2" and updated["attributes"] == {}
    with pytest.raises(TypeError):
        sim.update_application(app["uuid"], colour="red")
    with pytest.raises(KeyError):
        sim.update_application("missing", name="x")
    assert listed(client, "applications", appId=str(other["id"])) == [other]
    assert len(listed(client, "applications", appId="0")) == 2  # a non-positive id does not filter


def test_deleting_an_application_announces_only_the_application(
    sim: ControlPlaneSimulator, client: httpx.Client
) -> None:
    orders = api()
    sim.deploy(orders, publish=False)
    app = sim.create_application("shop")
    key = sim.add_key(app["uuid"])
    sim.subscribe(app["uuid"], orders.uuid)
    keeper = sim.create_application("keeper")
    sim.add_key(keeper["uuid"], consumer_key="keeper-key")
    before = len(sim.published)

    deleted = sim.delete_application(app["uuid"])
    assert deleted["uuid"] == app["uuid"]
    assert [e["type"] for e in sim.published[before:]] == ["APPLICATION_DELETE"]  # like APIM: no key/sub events
    assert sim.published[-1]["uuid"] == app["uuid"]
    assert [a["uuid"] for a in listed(client, "applications")] == [keeper["uuid"]]
    assert [m["consumerKey"] for m in listed(client, "application-key-mappings")] == ["keeper-key"]
    assert listed(client, "subscriptions") == []
    assert listed(client, "application-key-mappings", consumerKey=key["consumerKey"]) == []


def test_keys_events_items_and_filters(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    app = sim.create_application("shop")
    prod = sim.add_key(app["uuid"])
    event = sim.published[-1]
    assert event["type"] == "APPLICATION_REGISTRATION_CREATE"
    assert set(event) == COMMON | KEY_ITEM
    assert {k: event[k] for k in KEY_ITEM} == prod
    assert prod["applicationId"] == app["id"] and prod["applicationUUID"] == app["uuid"]
    assert prod["keyType"] == "PRODUCTION" and prod["keyManager"] == "Resident Key Manager"
    assert len(prod["consumerKey"]) == 28 and prod["consumerKey"].isalnum()
    assert isinstance(parsed(sim, event), ApplicationKeyEvent)
    sandbox = sim.add_key(app["uuid"], key_type="SANDBOX", consumer_key="sb-key", key_manager="Keycloak")
    with pytest.raises(ValueError):
        sim.add_key(app["uuid"])  # one PRODUCTION key per key manager
    with pytest.raises(ValueError):
        sim.add_key(app["uuid"], key_type="production")
    with pytest.raises(KeyError):
        sim.add_key("missing")

    everything = listed(client, "application-key-mappings")
    assert everything == [prod, sandbox] and all(set(m) == KEY_ITEM for m in everything)
    assert CpKeyMapping.model_validate(sandbox).key_type == "SANDBOX"
    assert listed(client, "application-key-mappings", consumerKey="sb-key") == [sandbox]
    assert listed(client, "application-key-mappings", consumerKey="sb-key", keymanager="Keycloak") == [sandbox]
    assert listed(client, "application-key-mappings", consumerKey="sb-key", keymanager="Resident Key Manager") == []
    assert listed(client, "application-key-mappings", keymanager="Keycloak") == everything  # alone: no filter
    assert listed(client, "application-key-mappings", consumerKey="nope") == []

    removed = sim.remove_key(app["uuid"], "sb-key")
    assert removed == sandbox
    assert sim.published[-1]["type"] == "REMOVE_APPLICATION_KEYMAPPING"
    assert sim.published[-1]["consumerKey"] == "sb-key" and sim.published[-1]["keyManager"] == "Keycloak"
    assert listed(client, "application-key-mappings") == [prod]
    with pytest.raises(KeyError):
        sim.remove_key(app["uuid"], "sb-key")


# ---------------------------------------------------------------- subscriptions


def test_subscription_events_and_items(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    orders = api("Orders")
    sim.deploy(orders)
    api_id = sim.published[-1]["apiId"]
    app = sim.create_application("shop")
    sub = sim.subscribe(app["uuid"], orders.uuid, policy="Gold")
    assert set(sub) == SUBSCRIPTION_ITEM
    assert (sub["apiId"], sub["appId"], sub["apiUUID"], sub["applicationUUID"]) == (
        api_id, app["id"], orders.uuid, app["uuid"],
    )  # fmt: skip
    assert (sub["apiName"], sub["apiVersion"], sub["policyId"], sub["subscriptionState"]) == (
        "Orders", "1.0.0", "Gold", "UNBLOCKED",
    )  # fmt: skip
    assert sub["apiOrganization"] == sub["applicationOrganization"] == SUPER_TENANT
    assert isinstance(sub["subscriptionId"], int)

    event = sim.published[-1]
    assert event["type"] == "SUBSCRIPTIONS_CREATE"
    assert set(event) == COMMON | {
        "subscriptionId", "subscriptionUUID", "apiId", "apiUUID", "applicationId", "applicationUUID", "policyId",
        "subscriptionState", "apiName", "apiVersion",
    }  # fmt: skip
    assert event["applicationId"] == app["id"] and event["policyId"] == "Gold"
    assert event["subscriptionUUID"] == sub["subscriptionUUID"] and event["apiName"] == "Orders"
    assert isinstance(parsed(sim, event), SubscriptionEvent)
    assert listed(client, "subscriptions") == [sub]
    assert CpSubscription.model_validate(sub).api_name == "Orders"

    with pytest.raises(ValueError):
        sim.subscribe(app["uuid"], orders.uuid)  # already subscribed
    with pytest.raises(ValueError):
        sim.subscribe(app["uuid"], str(uuidlib.uuid4()), state="SUSPENDED")
    with pytest.raises(KeyError):
        sim.subscribe("missing", orders.uuid)

    blocked = sim.update_subscription(sub["subscriptionUUID"], state="BLOCKED", policy="Silver")
    assert (blocked["subscriptionState"], blocked["policyId"]) == ("BLOCKED", "Silver")
    assert sim.published[-1]["type"] == "SUBSCRIPTIONS_UPDATE"
    assert sim.published[-1]["subscriptionState"] == "BLOCKED" and sim.published[-1]["policyId"] == "Silver"
    gone = sim.unsubscribe(sub["subscriptionUUID"])
    assert gone == blocked and sim.published[-1]["type"] == "SUBSCRIPTIONS_DELETE"
    assert listed(client, "subscriptions") == []
    with pytest.raises(KeyError):
        sim.unsubscribe(sub["subscriptionUUID"])


def test_subscription_to_an_api_deployed_later_gets_its_id_and_names(
    sim: ControlPlaneSimulator, client: httpx.Client
) -> None:
    later = api("Later")
    app = sim.create_application("shop")
    sub = sim.subscribe(app["uuid"], later.uuid, uuid="sub-1")
    assert sub["subscriptionUUID"] == "sub-1" and isinstance(sub["apiId"], int)
    assert sub["apiName"] is None and sub["apiVersion"] is None
    named = sim.subscribe(sim.create_application("b")["uuid"], later.uuid, api_name="Later", api_version="9")
    assert (named["apiName"], named["apiVersion"], named["apiId"]) == ("Later", "9", sub["apiId"])

    sim.deploy(later)
    assert sim.published[-1]["apiId"] == sub["apiId"]  # the id the subscription already names
    first = listed(client, "subscriptions")[0]
    assert (first["apiName"], first["apiVersion"], first["apiOrganization"]) == ("Later", "1.0.0", SUPER_TENANT)


def test_subscription_filters_need_a_whole_pair(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    a, b = api("A"), api("B")
    sim.deploy(a, publish=False)
    sim.deploy(b, publish=False)
    shop, other = sim.create_application("shop"), sim.create_application("other")
    subs = {(app["uuid"], api_.uuid): sim.subscribe(app["uuid"], api_.uuid) for app in (shop, other) for api_ in (a, b)}
    target = subs[(other["uuid"], a.uuid)]
    everything = listed(client, "subscriptions")
    assert len(everything) == 4

    assert listed(client, "subscriptions", apiUUID=a.uuid, applicationUUID=other["uuid"]) == [target]
    assert listed(client, "subscriptions", apiId=str(target["apiId"]), appId=str(other["id"])) == [target]
    for alone in ({"apiUUID": a.uuid}, {"applicationUUID": other["uuid"]}, {"apiId": "1"}, {"appId": "1"}):
        assert listed(client, "subscriptions", **alone) == everything, alone
    assert listed(client, "subscriptions", apiUUID=a.uuid, applicationUUID="nope") == []
    assert listed(client, "subscriptions", apiId="999", appId=str(other["id"])) == []
    # A pair finds the subscription whatever tenant the header names, as in the CP.
    assert listed(client, "subscriptions", {"x-wso2-tenant": "acme"}, apiUUID=a.uuid, applicationUUID=other["uuid"])
    assert client.get("subscriptions", params={"apiId": "x", "appId": "1"}).status_code == 400


def test_legacy_subscription_fields(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    orders = api()
    sim.deploy(orders, publish=False)
    app = sim.create_application("shop")
    sim.legacy_subscription_fields = True
    sub = sim.subscribe(app["uuid"], orders.uuid)
    assert set(sub) == LEGACY_SUBSCRIPTION_ITEM
    [item] = listed(client, "subscriptions")
    assert set(item) == LEGACY_SUBSCRIPTION_ITEM
    assert "apiName" not in sim.published[-1] and "apiVersion" not in sim.published[-1]
    sim.legacy_subscription_fields = False
    [item] = listed(client, "subscriptions")
    assert set(item) == SUBSCRIPTION_ITEM and item["apiName"] == orders.name  # the truth keeps them


# ---------------------------------------------------------------- tiers


def test_subscription_policies_events_never_carry_the_quota(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    gold = sim.add_subscription_policy("Gold", request_count=5000, time_unit="min", unit_time=5, burst=(50, "sec"))
    event = sim.published[-1]
    assert event["type"] == "POLICY_CREATE"
    assert set(event) == COMMON | {
        "policyId", "policyName", "quotaType", "policyType", "rateLimitCount", "rateLimitTimeUnit",
        "stopOnQuotaReach", "graphQLMaxDepth", "graphQLMaxComplexity", "subscriberCount",
    }  # fmt: skip
    assert (event["policyType"], event["policyName"], event["policyId"]) == ("SUBSCRIPTION", "Gold", gold["id"])
    assert (event["rateLimitCount"], event["rateLimitTimeUnit"], event["quotaType"]) == (50, "sec", "requestCount")
    assert isinstance(parsed(sim, event), PolicyEvent)

    assert {"name", "tenantDomain", "quotaType", "rateLimitCount", "rateLimitTimeUnit", "stopOnQuotaReach",
            "graphQLMaxDepth", "graphQLMaxComplexity", "defaultLimit"} <= set(gold)  # fmt: skip
    assert gold["defaultLimit"] == {
        "quotaType": "requestCount",
        "requestCount": {"timeUnit": "min", "unitTime": 5, "requestCount": 5000},
    }
    policy = CpSubscriptionPolicy.model_validate(gold)
    assert policy.default_limit is not None and policy.default_limit.request_count is not None
    assert policy.default_limit.request_count.unit_time == 5 and policy.rate_limit_count == 50

    names = [p["name"] for p in listed(client, "subscription-policies")]
    assert names == ["Unlimited", "Gold"]
    assert listed(client, "subscription-policies", policyName="Gold") == [gold]
    assert listed(client, "subscription-policies", policyName="Platinum") == []
    with pytest.raises(ValueError):
        sim.add_subscription_policy("Gold")

    updated = sim.update_subscription_policy("Gold", request_count=10, burst=None, stop_on_quota_reach=False)
    assert updated["id"] == gold["id"] and updated["rateLimitCount"] == 0 and updated["stopOnQuotaReach"] is False
    assert updated["defaultLimit"]["requestCount"] == {"timeUnit": "min", "unitTime": 5, "requestCount": 10}
    assert sim.published[-1]["type"] == "POLICY_UPDATE" and "defaultLimit" not in sim.published[-1]
    with pytest.raises(TypeError):
        sim.update_subscription_policy("Gold", colour="red")

    sim.delete_subscription_policy("Gold")
    assert sim.published[-1]["type"] == "POLICY_DELETE" and sim.published[-1]["policyName"] == "Gold"
    assert [p["name"] for p in listed(client, "subscription-policies")] == ["Unlimited"]


def test_other_quota_types_fill_only_their_member(sim: ControlPlaneSimulator) -> None:
    band = sim.add_subscription_policy("Band", bandwidth=(1, "MB"), time_unit="hour")
    assert band["quotaType"] == "bandwidthVolume"
    assert band["defaultLimit"] == {
        "quotaType": "bandwidthVolume",
        "bandwidth": {"timeUnit": "hour", "unitTime": 1, "dataAmount": 1, "dataUnit": "MB"},
    }
    events = sim.add_subscription_policy("Events", quota_type="eventCount", request_count=300, time_unit="day")
    assert events["defaultLimit"] == {
        "quotaType": "eventCount",
        "eventCount": {"timeUnit": "day", "unitTime": 1, "eventCount": 300},
    }
    ai = sim.add_subscription_policy("AI", ai_quota={"totalTokenCount": 1000, "promptTokenCount": 600})
    assert ai["quotaType"] == "aiApiQuota" and set(ai["defaultLimit"]) == {"quotaType", "aiApiQuota"}
    assert ai["defaultLimit"]["aiApiQuota"] == {
        "timeUnit": "min", "unitTime": 1, "requestCount": 100, "totalTokenCount": 1000, "promptTokenCount": 600,
    }  # fmt: skip
    back = sim.update_subscription_policy("Band", quota_type="requestCount", request_count=7)
    assert back["defaultLimit"] == {
        "quotaType": "requestCount",
        "requestCount": {"timeUnit": "hour", "unitTime": 1, "requestCount": 7},
    }
    with pytest.raises(ValueError):
        sim.add_subscription_policy("Bad", quota_type="bandwidthVolume")


def test_application_and_api_policy_lists(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    [unlimited] = listed(client, "application-policies")
    assert unlimited["name"] == "Unlimited" and unlimited["tenantDomain"] == SUPER_TENANT
    assert {"name", "tenantDomain", "quotaType", "defaultLimit", "burstLimit"} <= set(unlimited)
    sim.application_policies.append({"name": "10PerMin", "tenantDomain": SUPER_TENANT})
    assert listed(client, "application-policies", policyName="10PerMin") == [
        {"name": "10PerMin", "tenantDomain": SUPER_TENANT}
    ]
    assert listed(client, "api-policies") == []


# ---------------------------------------------------------------- organizations and tenant headers


def test_tenant_headers_select_the_organization(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    mine = sim.create_application("mine")
    theirs = sim.create_application("theirs", organization="acme")
    event = sim.published[-1]
    assert event["tenantDomain"] == "acme" and isinstance(event["tenantId"], int) and event["tenantId"] != -1234
    assert sim.tenant_id("acme") == event["tenantId"] and sim.tenant_id(SUPER_TENANT) == -1234
    assert theirs["organization"] == "acme" and theirs["id"] != mine["id"]
    sim.add_key(theirs["uuid"], consumer_key="acme-key", organization="acme")
    sim.add_key(mine["uuid"], consumer_key="my-key")
    sim.subscribe(theirs["uuid"], str(uuidlib.uuid4()), organization="acme")
    sim.add_subscription_policy("AcmeGold", organization="acme")
    assert sim.published[-1]["tenantDomain"] == "acme"

    acme = {"x-wso2-tenant": "acme"}
    assert [a["uuid"] for a in listed(client, "applications", acme)] == [theirs["uuid"]]
    assert [a["uuid"] for a in listed(client, "applications")] == [mine["uuid"]]  # absent: carbon.super
    assert [a["uuid"] for a in listed(client, "applications", {"x-wso2-tenant": SUPER_TENANT})] == [mine["uuid"]]
    assert {a["uuid"] for a in listed(client, "applications", {"x-wso2-tenant": "ALL"})} == {
        mine["uuid"], theirs["uuid"],
    }  # fmt: skip
    assert [m["consumerKey"] for m in listed(client, "application-key-mappings", acme)] == ["acme-key"]
    assert listed(client, "application-key-mappings", acme, consumerKey="my-key") == []
    assert len(listed(client, "application-key-mappings", {"x-wso2-tenant": "ALL"})) == 2
    [acme_sub] = listed(client, "subscriptions", acme)
    assert acme_sub["applicationOrganization"] == "acme" and listed(client, "subscriptions") == []
    assert listed(client, "applications", {"x-wso2-tenant": "nobody"}) == []

    # The policy lists take the other header; x-wso2-tenant does not select there, ALL is no tenant.
    policies = "subscription-policies"
    assert [p["name"] for p in listed(client, policies, {"xWSO2Tenant": "acme"})] == ["Unlimited", "AcmeGold"]
    assert {p["tenantDomain"] for p in listed(client, policies, {"xWSO2Tenant": "acme"})} == {"acme"}
    assert [p["name"] for p in listed(client, policies, acme)] == ["Unlimited"]  # carbon.super's
    assert listed(client, policies, {"xWSO2Tenant": "ALL"}) == []
    assert listed(client, policies, {"xWSO2Tenant": "acme"}, policyName="AcmeGold")[0]["tenantDomain"] == "acme"
    assert listed(client, "application-policies", {"xWSO2Tenant": "acme"})[0]["tenantDomain"] == "acme"
    # The applications list ignores xWSO2Tenant: both headers are needed, as the agent sends them.
    assert [a["uuid"] for a in listed(client, "applications", {"xWSO2Tenant": "acme"})] == [mine["uuid"]]


# ---------------------------------------------------------------- events without changing the truth


def test_truth_changes_while_the_agent_is_down_and_events_out_of_order(sim: ControlPlaneSimulator) -> None:
    app = sim.create_application("shop", publish=False)
    sub = sim.subscribe(app["uuid"], str(uuidlib.uuid4()), publish=False)
    key = sim.add_key(app["uuid"], publish=False)
    sim.add_subscription_policy("Gold", publish=False)
    assert sim.published == []

    # The subscription's event first, then the application's, then one about a key already gone.
    sim.publish("SUBSCRIPTIONS_CREATE", sim.consumer_event("subscription", sub, "SUBSCRIPTIONS_CREATE"))
    sim.publish("APPLICATION_CREATE", sim.consumer_event("application", app, "APPLICATION_CREATE"))
    sim.remove_key(app["uuid"], key["consumerKey"], publish=False)
    sim.publish("APPLICATION_REGISTRATION_CREATE", sim.consumer_event("key", key, "APPLICATION_REGISTRATION_CREATE"))
    tier = sim.consumer_truth().subscription_policies[-1]
    sim.publish("POLICY_UPDATE", sim.consumer_event("tier", tier, "POLICY_UPDATE"))
    assert [e["type"] for e in sim.published] == [
        "SUBSCRIPTIONS_CREATE", "APPLICATION_CREATE", "APPLICATION_REGISTRATION_CREATE", "POLICY_UPDATE",
    ]  # fmt: skip
    assert sim.published[0]["subscriptionUUID"] == sub["subscriptionUUID"]
    assert sim.published[2]["consumerKey"] == key["consumerKey"] and sim.consumer_truth().key_mappings == []
    assert sim.published[3]["policyName"] == "Gold" and sim.published[3]["policyType"] == "SUBSCRIPTION"
    assert len({e["eventId"] for e in sim.published}) == 4

    with pytest.raises(ValueError):
        sim.consumer_event("application", app, "SUBSCRIPTIONS_CREATE")
    with pytest.raises(ValueError):
        sim.consumer_event("gadget", app, "APPLICATION_CREATE")
    api_policy = sim.consumer_event(
        "api_policy", {"id": 3, "name": "10K", "quotaType": "requestCount"}, "POLICY_CREATE"
    )
    assert api_policy["policyType"] == "API" and api_policy["addedConditionGroupIds"] == []


# ---------------------------------------------------------------- failures, empty answers, control endpoints


@pytest.mark.parametrize(
    "endpoint",
    [
        "subscriptions",
        "applications",
        "application-key-mappings",
        "subscription-policies",
        "application-policies",
        "api-policies",
    ],
)
def test_failure_injection_and_empty_lists(sim: ControlPlaneSimulator, client: httpx.Client, endpoint: str) -> None:
    app = sim.create_application("shop")
    sim.add_key(app["uuid"])
    sim.subscribe(app["uuid"], str(uuidlib.uuid4()))
    sim.api_policies.append({"name": "10K"})
    assert listed(client, endpoint)

    sim.fail_requests(endpoint, status=503, times=2)
    assert [client.get(endpoint).status_code for _ in range(3)] == [503, 503, 200]
    sim.fail_requests(endpoint, status=None, delay=0.2, times=1)
    started = time.monotonic()
    assert client.get(endpoint).status_code == 200 and time.monotonic() - started >= 0.2

    sim.empty_lists.add(endpoint)
    assert client.get(endpoint).json() == {"count": 0, "list": [], "pagination": None}
    sim.empty_lists.clear()
    assert listed(client, endpoint)


def test_state_and_consumer_control_endpoints(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    control = httpx.Client(base_url=sim.url + "_sim/", timeout=5)
    created = control.post(
        "consumers", json={"action": "create_application", "args": ["shop"], "kwargs": {"organization": "acme"}}
    )
    assert created.status_code == 200, created.text
    app = created.json()
    tier = control.post(
        "consumers",
        json={"action": "add_subscription_policy", "args": ["Gold"], "kwargs": {"burst": [5, "sec"], "publish": False}},
    )
    assert tier.json()["rateLimitCount"] == 5
    assert control.post("consumers", json={"action": "stop"}).status_code == 400
    assert control.post("consumers", json={"action": "unsubscribe", "args": ["nope"]}).status_code == 400

    state = control.get("state").json()
    assert [a["uuid"] for a in state["consumers"]["acme"]["applications"]] == [app["uuid"]]
    assert state["consumers"]["acme"]["tenantId"] == sim.tenant_id("acme")
    assert [p["name"] for p in state["consumers"][SUPER_TENANT]["subscriptionPolicies"]] == ["Unlimited", "Gold"]
    assert sim.published[-1]["type"] == "APPLICATION_CREATE" and sim.published[-1]["tenantDomain"] == "acme"
    control.close()


def test_group_ids_have_the_control_planes_shape(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    # The internal API's Application.groupIds are GroupId objects; the event joins the names.
    app = sim.create_application("shared", group_ids=["team-a", "team-b"])
    assert app["groupIds"] == [
        {"groupId": "team-a", "applicationId": app["id"]},
        {"groupId": "team-b", "applicationId": app["id"]},
    ]
    assert sim.published[-1]["groupId"] == "team-a,team-b"
    assert listed(client, "applications")[0]["groupIds"] == app["groupIds"]
    sim.update_application(app["uuid"], group_ids=["team-c"])
    assert sim.published[-1]["groupId"] == "team-c"
