"""Consumers as gateway resources: applications with their keys, subscriptions, mappings, tiers.

Items are built in the control plane's wire names (``internal/data/v1`` lists and events, in every
spelling ``applications-subscriptions.md`` names), parsed by the models. Table tests pin the
conversion of quotas and the shape of each resource; properties over generated organizations pin
validity against the CRDs, the apply order, determinism and what each entity turns into.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.consumers import ConsumerState, CpApplication, CpKeyMapping, CpSubscription, CpSubscriptionPolicy
from models.naming import (
    CONSUMER_KEY_LABEL,
    CONSUMER_LABEL,
    CONSUMER_ORGANIZATION_LABEL,
    GATEWAY_ID_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    consumer_selector,
)
from translation.consumers import (
    MAX_COUNT,
    TOKEN_UNITS,
    ConsumerOptions,
    application_resource,
    desired_consumer_resources,
    mapping_name,
    per_gateway_unit,
    subscription_resources,
    tier_resource,
    tier_resource_name,
)
from translation.crd_schemas import CrdSchemas, validate_resources
from translation.errors import TranslationError

ORG = "carbon.super"
OPTIONS = ConsumerOptions(application_namespace="apk-apps", tier_namespace="apk-tiers")
APP = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
OTHER_APP = "16fd2706-8baf-433b-82eb-8c7fada847da"
SUB = "b4b1d3a0-5c1e-4f4a-9d3c-2a7e8f9b0c1d"
OTHER_SUB = "e1c4f2b7-3a9d-4c8e-8f1b-6d5a4c3b2a10"
API = "8f1c2a4e-5b6d-4e7f-9a0b-1c2d3e4f5a6b"
ACTIVE = ("UNBLOCKED", "TIER_UPDATE_PENDING", "PROD_ONLY_BLOCKED")
INACTIVE = ("BLOCKED", "ON_HOLD", "REJECTED")


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def application(uuid: str = APP, **fields: Any) -> CpApplication:
    return CpApplication.model_validate(
        {"uuid": uuid, "id": 1, "name": "PizzaApp", "subName": "alice", "attributes": {"team": "pizza"}, **fields}
    )


def key(consumer_key: str, key_type: str = "PRODUCTION", **fields: Any) -> CpKeyMapping:
    return CpKeyMapping.model_validate(
        {"applicationUUID": APP, "consumerKey": consumer_key, "keyType": key_type, "keyManager": "Resident Key Manager"}
        | fields
    )


def subscription(uuid: str = SUB, **fields: Any) -> CpSubscription:
    return CpSubscription.model_validate(
        {
            "subscriptionUUID": uuid,
            "policyId": "Gold",
            "apiUUID": API,
            "applicationUUID": APP,
            "subscriptionState": "UNBLOCKED",
        }
        | fields
    )


def tier(
    name: str = "Gold",
    count: int = 5000,
    unit: str = "min",
    unit_time: int = 1,
    *,
    burst: int = 0,
    burst_unit: str = "",
    **fields: Any,
) -> CpSubscriptionPolicy:
    return CpSubscriptionPolicy.model_validate(
        {
            "name": name,
            "tenantDomain": ORG,
            "quotaType": "requestCount",
            "rateLimitCount": burst,
            "rateLimitTimeUnit": burst_unit,
            "stopOnQuotaReach": True,
            "defaultLimit": {
                "quotaType": "requestCount",
                "requestCount": {"timeUnit": unit, "unitTime": unit_time, "requestCount": count},
            },
        }
        | fields
    )


def ai_tier(name: str = "AIGold", **quota: Any) -> CpSubscriptionPolicy:
    return CpSubscriptionPolicy.model_validate(
        {
            "name": name,
            "quotaType": "aiApiQuota",
            "defaultLimit": {"quotaType": "aiApiQuota", "aiApiQuota": {"timeUnit": "min", "unitTime": 1} | quota},
        }
    )


def rich_state() -> ConsumerState:
    return ConsumerState(
        organization=ORG,
        applications=[application(), application(OTHER_APP, id=2, name="Other", attributes={})],
        key_mappings=[
            key("prod-key"),
            key("sandbox-key", "SANDBOX"),
            key("other-key", applicationUUID=OTHER_APP),
        ],
        subscriptions=[
            subscription(),
            subscription(OTHER_SUB, applicationUUID=OTHER_APP, policyId="Unlimited", subscriptionState="BLOCKED"),
        ],
        subscription_policies=[
            tier(burst=10, burst_unit="sec"),
            tier("Unlimited", 2147483647),
            ai_tier(requestCount=100, totalTokenCount=10000, promptTokenCount=4000, completionTokenCount=6000),
        ],
    )


APIS = {API: ("PizzaShackAPI", "1.0.0")}


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def selects(selector: str, resource: dict[str, Any]) -> bool:
    """Whether a label selector of ``key=value`` and bare ``key`` (exists) terms selects ``resource``."""
    labels = resource["metadata"].get("labels") or {}
    for term in selector.split(","):
        name, _, value = term.partition("=")
        if name not in labels or (value and labels[name] != value):
            return False
    return True


class TestCrdValidation:
    def test_everything_validates(self, crds: CrdSchemas) -> None:
        out = desired_consumer_resources(rich_state(), APIS, OPTIONS)
        kinds = {r["kind"] for r in out.resources}
        assert kinds == {"RateLimitPolicy", "AIRateLimitPolicy", "Application", "Subscription", "ApplicationMapping"}
        assert out.problems == [] and out.skipped == []
        assert validate_resources(out.resources, crds) == []

    @pytest.mark.parametrize(
        "policy",
        [
            tier(),
            tier(burst=10, burst_unit="min"),
            tier(count=MAX_COUNT, burst=10, burst_unit="sec"),
            ai_tier(totalTokenCount=500),
            ai_tier(requestCount=10),
            ai_tier(promptTokenCount=100, completionTokenCount=200),
        ],
        ids=["requests", "burst", "burst-only", "total-tokens", "ai-requests", "prompt-and-completion"],
    )
    def test_every_tier_shape_validates(self, crds: CrdSchemas, policy: CpSubscriptionPolicy) -> None:
        resource = tier_resource(policy, ORG, OPTIONS)
        assert resource is not None
        assert validate_resources([resource], crds) == []

    def test_application_without_keys_validates(self, crds: CrdSchemas) -> None:
        resource = application_resource(application(name="", subName="", attributes={}), [], ORG, OPTIONS)
        assert "securitySchemes" not in resource["spec"]
        assert validate_resources([resource], crds) == []

    @pytest.mark.parametrize("state", [*ACTIVE, *INACTIVE])
    def test_subscriptions_validate_in_every_state(self, crds: CrdSchemas, state: str) -> None:
        resources = subscription_resources(subscription(subscriptionState=state), "A", "1", ORG, OPTIONS)
        assert validate_resources(resources, crds) == []


class TestQuotaConversion:
    @pytest.mark.parametrize(
        ("unit", "unit_time", "count", "expected"),
        [
            ("sec", 1, 1, (1, "Second")),
            ("min", 1, 100, (100, "Minute")),
            ("sec", 60, 10, (10, "Minute")),
            ("min", 60, 500, (500, "Hour")),
            ("sec", 3600, 7, (7, "Hour")),
            ("hours", 24, 1000, (1000, "Day")),
            ("min", 1440, 9, (9, "Day")),
            ("sec", 86400, 3, (3, "Day")),
            ("days", 1, 20, (20, "Day")),
        ],
    )
    def test_exact_windows(self, unit: str, unit_time: int, count: int, expected: tuple[int, str]) -> None:
        resource = tier_resource(tier(count=count, unit=unit, unit_time=unit_time), ORG, OPTIONS)
        assert resource is not None
        limit = resource["spec"]["override"]["subscription"]["requestCount"]
        assert (limit["requestsPerUnit"], limit["unit"]) == expected

    @pytest.mark.parametrize(
        ("spellings", "unit"),
        [
            (("sec", "SEC", "secs", "second", "Second", "seconds", "SECONDS", "s"), "Second"),
            (("min", "MIN", "mins", "minute", "Minute", "minutes", "MINUTES", "m"), "Minute"),
            (("hour", "HOUR", "hours", "Hours", "hr", "hrs", "h"), "Hour"),
            (("day", "DAY", "days", "Days", "d"), "Day"),
        ],
    )
    def test_every_unit_spelling(self, spellings: tuple[str, ...], unit: str) -> None:
        for spelled in spellings:
            resource = tier_resource(tier(count=5, unit=f" {spelled} "), ORG, OPTIONS)
            assert resource is not None
            assert resource["spec"]["override"]["subscription"]["requestCount"] == {"requestsPerUnit": 5, "unit": unit}

    def test_five_minutes_refused_naming_the_tier(self) -> None:
        with pytest.raises(TranslationError) as caught:
            tier_resource(tier(count=100, unit="min", unit_time=5), ORG, OPTIONS)
        assert caught.value.message == (
            "subscription tier 'Gold' allows 100 requests per 5 min; the gateway counts per Second, Minute, "
            "Hour or Day, so this window cannot be expressed exactly"
        )

    @pytest.mark.parametrize(
        ("unit", "unit_time", "shown"),
        [
            ("month", 1, "per month"),
            ("months", 3, "per 3 months"),
            ("year", 1, "per year"),
            ("week", 1, "per week"),
            ("days", 7, "per 7 days"),
            ("hours", 2, "per 2 hours"),
            ("sec", 120, "per 120 sec"),
            ("min", 90, "per 90 min"),
        ],
    )
    def test_inexact_windows_refused(self, unit: str, unit_time: int, shown: str) -> None:
        with pytest.raises(TranslationError, match="cannot be expressed exactly") as caught:
            tier_resource(tier("Silver", count=10, unit=unit, unit_time=unit_time), ORG, OPTIONS)
        assert caught.value.message.startswith(f"subscription tier 'Silver' allows 10 requests {shown};")

    def test_unknown_unit_refused(self) -> None:
        with pytest.raises(TranslationError, match="'fortnight', which is not a unit of time"):
            tier_resource(tier(unit="fortnight"), ORG, OPTIONS)

    def test_empty_window_refused(self) -> None:
        with pytest.raises(TranslationError, match="a window is at least one unit long"):
            tier_resource(tier(unit_time=0), ORG, OPTIONS)

    @pytest.mark.parametrize("quota", ["bandwidthVolume", "bandwidth"])
    def test_bandwidth_refused(self, quota: str) -> None:
        policy = CpSubscriptionPolicy.model_validate(
            {"name": "Big", "quotaType": quota, "defaultLimit": {"quotaType": quota, "bandwidth": {"dataAmount": 1}}}
        )
        with pytest.raises(TranslationError, match=r"subscription tier 'Big' has a bandwidth quota"):
            tier_resource(policy, ORG, OPTIONS)

    def test_bandwidth_refused_when_only_the_member_says_so(self) -> None:
        policy = CpSubscriptionPolicy.model_validate({"name": "Big", "defaultLimit": {"bandwidth": {"dataAmount": 1}}})
        with pytest.raises(TranslationError, match="bandwidth quota"):
            tier_resource(policy, ORG, OPTIONS)

    def test_event_count_refused(self) -> None:
        policy = CpSubscriptionPolicy.model_validate(
            {"name": "Stream", "defaultLimit": {"quotaType": "eventCount", "eventCount": {"eventCount": 10}}}
        )
        with pytest.raises(TranslationError, match="subscription tier 'Stream' has an eventCount quota"):
            tier_resource(policy, ORG, OPTIONS)

    @pytest.mark.parametrize("name", ["Unlimited", "unlimited", "UNLIMITED"])
    def test_unlimited_has_no_resource(self, name: str) -> None:
        assert tier_resource(tier(name, count=10), ORG, OPTIONS) is None

    @pytest.mark.parametrize("count", [0, -1, MAX_COUNT, MAX_COUNT + 5])
    def test_unbounded_count_without_burst_has_no_resource(self, count: int) -> None:
        assert tier_resource(tier(count=count), ORG, OPTIONS) is None

    def test_unbounded_count_with_burst_keeps_the_burst(self) -> None:
        resource = tier_resource(tier(count=MAX_COUNT, burst=20, burst_unit="min"), ORG, OPTIONS)
        assert resource is not None
        assert resource["spec"]["override"]["subscription"] == {
            "organization": ORG,
            "stopOnQuotaReach": True,
            "requestCount": {"requestsPerUnit": MAX_COUNT, "unit": "Minute"},
            "burstControl": {"requestsPerUnit": 20, "unit": "Minute"},
        }

    @pytest.mark.parametrize(("burst", "burst_unit"), [(0, "sec"), (-1, "min"), (10, ""), (10, "NA")])
    def test_no_burst(self, burst: int, burst_unit: str) -> None:
        resource = tier_resource(tier(burst=burst, burst_unit=burst_unit), ORG, OPTIONS)
        assert resource is not None
        assert "burstControl" not in resource["spec"]["override"]["subscription"]

    def test_rate_limit_policy_shape(self) -> None:
        policy = tier("Gold", 5000, "min", burst=10, burst_unit="sec", stopOnQuotaReach=False)
        assert tier_resource(policy, ORG, OPTIONS) == {
            "apiVersion": "dp.wso2.com/v1alpha3",
            "kind": "RateLimitPolicy",
            "metadata": {
                "name": sha1(f"Gold-{ORG}"),
                "namespace": "apk-tiers",
                "labels": {
                    MANAGED_BY_LABEL: MANAGED_BY_VALUE,
                    GATEWAY_ID_LABEL: "Default",
                    CONSUMER_LABEL: "tier",
                    CONSUMER_KEY_LABEL: "Gold",
                    CONSUMER_ORGANIZATION_LABEL: sha1(ORG),
                },
                "annotations": {
                    "gateway-agent.wso2.com/organization": ORG,
                    "gateway-agent.wso2.com/consumer-name": "Gold",
                },
            },
            "spec": {
                "override": {
                    "subscription": {
                        "organization": ORG,
                        "stopOnQuotaReach": False,
                        "requestCount": {"requestsPerUnit": 5000, "unit": "Minute"},
                        "burstControl": {"requestsPerUnit": 10, "unit": "Second"},
                    }
                },
                "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Subscription", "name": "default"},
            },
        }


class TestAiTiers:
    def test_tokens_and_requests(self) -> None:
        policy = ai_tier(requestCount=100, totalTokenCount=1000, promptTokenCount=400, completionTokenCount=600)
        resource = tier_resource(policy, ORG, OPTIONS)
        assert resource is not None
        assert resource["kind"] == "AIRateLimitPolicy"
        assert resource["metadata"]["name"] == sha1(f"AIGold-{ORG}")
        assert resource["spec"] == {
            "override": {
                "organization": ORG,
                "requestCount": {"requestsPerUnit": 100, "unit": "Minute"},
                "tokenCount": {
                    "requestTokenCount": 400,
                    "responseTokenCount": 600,
                    "totalTokenCount": 1000,
                    "unit": "Minute",
                },
            },
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Subscription", "name": "default"},
        }

    def test_a_total_alone_bounds_each_direction(self) -> None:
        resource = tier_resource(ai_tier(totalTokenCount=500), ORG, OPTIONS)
        assert resource is not None
        assert resource["spec"]["override"]["tokenCount"] == {
            "requestTokenCount": 500,
            "responseTokenCount": 500,
            "totalTokenCount": 500,
            "unit": "Minute",
        }
        assert "requestCount" not in resource["spec"]["override"]

    def test_a_missing_total_is_the_sum(self) -> None:
        resource = tier_resource(ai_tier(promptTokenCount=100, completionTokenCount=200), ORG, OPTIONS)
        assert resource is not None
        assert resource["spec"]["override"]["tokenCount"]["totalTokenCount"] == 300

    def test_tokens_per_second_refused(self) -> None:
        policy = CpSubscriptionPolicy.model_validate(
            {"name": "Fast", "defaultLimit": {"aiApiQuota": {"timeUnit": "sec", "unitTime": 1, "totalTokenCount": 9}}}
        )
        with pytest.raises(TranslationError, match="counts per Minute, Hour or Day"):
            tier_resource(policy, ORG, OPTIONS)

    def test_same_window_rules(self) -> None:
        policy = CpSubscriptionPolicy.model_validate(
            {"name": "Slow", "defaultLimit": {"aiApiQuota": {"timeUnit": "min", "unitTime": 5, "requestCount": 9}}}
        )
        with pytest.raises(TranslationError, match="'Slow' allows 9 requests per 5 min"):
            tier_resource(policy, ORG, OPTIONS)

    def test_no_limit_no_resource(self) -> None:
        assert tier_resource(ai_tier(), ORG, OPTIONS) is None

    def test_without_limits_refused(self) -> None:
        policy = CpSubscriptionPolicy.model_validate({"name": "Hollow", "quotaType": "aiApiQuota"})
        with pytest.raises(TranslationError, match="'Hollow' is an aiApiQuota without its limits"):
            tier_resource(policy, ORG, OPTIONS)


class TestSubscriptions:
    @pytest.mark.parametrize("state", ACTIVE)
    def test_active_states_are_mapped(self, state: str) -> None:
        resources = subscription_resources(
            subscription(subscriptionState=state), "PizzaShackAPI", "1.0.0", ORG, OPTIONS
        )
        assert [r["kind"] for r in resources] == ["Subscription", "ApplicationMapping"]
        assert resources[0]["spec"]["subscriptionStatus"] == state

    @pytest.mark.parametrize("state", INACTIVE)
    def test_inactive_states_have_no_mapping(self, state: str) -> None:
        resources = subscription_resources(
            subscription(subscriptionState=state), "PizzaShackAPI", "1.0.0", ORG, OPTIONS
        )
        assert [r["kind"] for r in resources] == ["Subscription"]
        assert resources[0]["spec"]["subscriptionStatus"] == state

    def test_prod_only_blocked_keeps_the_mapping(self) -> None:
        resources = subscription_resources(
            subscription(subscriptionState="prod_only_blocked"), "PizzaShackAPI", "1.0.0", ORG, OPTIONS
        )
        assert resources[1]["spec"] == {"applicationRef": APP, "subscriptionRef": SUB}

    def test_shape_and_names(self) -> None:
        subscription_object, mapping = subscription_resources(subscription(), "PizzaShackAPI", "1.0.0", ORG, OPTIONS)
        assert subscription_object["apiVersion"] == "cp.wso2.com/v1alpha3"
        assert subscription_object["metadata"]["name"] == SUB
        assert subscription_object["metadata"]["namespace"] == "apk-apps"
        assert subscription_object["spec"] == {
            "organization": ORG,
            "api": {"name": "PizzaShackAPI", "version": "1.0.0"},
            "subscriptionStatus": "UNBLOCKED",
            "ratelimitRef": {"name": sha1(f"Gold-{ORG}"), "level": "app"},
        }
        assert mapping["apiVersion"] == "cp.wso2.com/v1alpha2"
        assert mapping["metadata"]["name"] == sha1(f"{APP}:{SUB}")
        assert tier_resource_name("Gold", ORG) == sha1(f"Gold-{ORG}")

    @pytest.mark.parametrize("policy", ["Unlimited", ""])
    def test_unlimited_refers_to_no_resource(self, policy: str) -> None:
        (subscription_object, _) = subscription_resources(subscription(policyId=policy), "A", "1", ORG, OPTIONS)
        # The CRD requires a ratelimitRef; no tier resource carries this name.
        assert subscription_object["spec"]["ratelimitRef"] == {"name": sha1(f"Unlimited-{ORG}"), "level": "app"}
        assert tier_resource(tier("Unlimited"), ORG, OPTIONS) is None

    def test_subscription_and_mapping_are_selected_together(self) -> None:
        other = subscription_resources(subscription(OTHER_SUB), "A", "1", ORG, OPTIONS)
        ours = subscription_resources(subscription(), "A", "1", ORG, OPTIONS)
        selector = consumer_selector(None, SUB)
        assert [selects(selector, r) for r in ours + other] == [True, True, False, False]
        assert [selects(consumer_selector("application-mapping", SUB), r) for r in ours] == [False, True]
        assert all(selects(consumer_selector(organization=ORG), r) for r in ours)
        assert not any(selects(consumer_selector(organization="other.org"), r) for r in ours)

    def test_active_without_application_refused(self) -> None:
        with pytest.raises(TranslationError, match=f"subscription {SUB} names no application"):
            subscription_resources(subscription(applicationUUID=""), "A", "1", ORG, OPTIONS)

    def test_inactive_without_application_is_only_a_subscription(self) -> None:
        resources = subscription_resources(
            subscription(applicationUUID="", subscriptionState="BLOCKED"), "A", "1", ORG, OPTIONS
        )
        assert [r["kind"] for r in resources] == ["Subscription"]

    def test_uuid_that_cannot_name_an_object_refused(self) -> None:
        with pytest.raises(TranslationError, match="'Sub_1' cannot name a Kubernetes object"):
            subscription_resources(subscription("Sub_1"), "A", "1", ORG, OPTIONS)


class TestApplications:
    def test_shape(self) -> None:
        resource = application_resource(application(), [key("prod-key")], ORG, OPTIONS)
        assert resource["apiVersion"] == "cp.wso2.com/v1alpha2"
        assert resource["metadata"]["name"] == APP
        assert resource["metadata"]["labels"] == {
            MANAGED_BY_LABEL: MANAGED_BY_VALUE,
            GATEWAY_ID_LABEL: "Default",
            CONSUMER_LABEL: "application",
            CONSUMER_KEY_LABEL: APP,
            CONSUMER_ORGANIZATION_LABEL: sha1(ORG),
        }
        assert resource["spec"] == {
            "name": "PizzaApp",
            "owner": "alice",
            "organization": ORG,
            "attributes": {"team": "pizza"},
            "securitySchemes": {
                "oauth2": {"environments": [{"envId": "Default", "appId": "prod-key", "keyType": "PRODUCTION"}]}
            },
        }

    def test_keys_of_this_application_only_deduplicated_and_sorted(self) -> None:
        mappings = [
            key("s-key", "sandbox"),
            key("p-key"),
            key("p-key", keyManager="Other KM"),  # the same key from a second key manager
            key("by-id", applicationUUID="", applicationId=1),
            key("foreign", applicationUUID=OTHER_APP),
            key("foreign-id", applicationUUID="", applicationId=2),
        ]
        resource = application_resource(application(), mappings, ORG, OPTIONS)
        assert resource["spec"]["securitySchemes"]["oauth2"]["environments"] == [
            {"envId": "Default", "appId": "by-id", "keyType": "PRODUCTION"},
            {"envId": "Default", "appId": "p-key", "keyType": "PRODUCTION"},
            {"envId": "Default", "appId": "s-key", "keyType": "SANDBOX"},
        ]

    def test_environment_option(self) -> None:
        options = ConsumerOptions(application_namespace="apk", tier_namespace="apk", environment="prod")
        resource = application_resource(application(), [key("k")], ORG, options)
        assert resource["spec"]["securitySchemes"]["oauth2"]["environments"][0]["envId"] == "prod"
        assert ConsumerOptions(application_namespace="a", tier_namespace="b", environment=" ").environment == "Default"

    def test_bad_namespace_refused(self) -> None:
        with pytest.raises(ValidationError, match="not a valid Kubernetes namespace"):
            ConsumerOptions(application_namespace="Apps!", tier_namespace="apk")

    def test_unknown_key_type_refused(self) -> None:
        with pytest.raises(TranslationError, match=r"application .*'PizzaApp'.*key type 'OTHER'"):
            application_resource(application(), [key("k", "other")], ORG, OPTIONS)

    def test_uuid_that_cannot_name_an_object_refused(self) -> None:
        with pytest.raises(TranslationError, match="'App_One' cannot name a Kubernetes object"):
            application_resource(application("App_One"), [], ORG, OPTIONS)


class TestDesiredResources:
    def test_apply_order_and_contents(self) -> None:
        out = desired_consumer_resources(rich_state(), APIS, OPTIONS)
        assert [r["kind"] for r in out.resources] == [
            "RateLimitPolicy",
            "AIRateLimitPolicy",
            "Application",
            "Application",
            "Subscription",
            "Subscription",
            "ApplicationMapping",
        ]
        (mapping,) = by_kind(out.resources, "ApplicationMapping")
        assert mapping["spec"] == {"applicationRef": APP, "subscriptionRef": SUB}  # OTHER_SUB is blocked
        environments = {
            a["metadata"]["name"]: [e["appId"] for e in a["spec"]["securitySchemes"]["oauth2"]["environments"]]
            for a in by_kind(out.resources, "Application")
        }
        assert environments == {APP: ["prod-key", "sandbox-key"], OTHER_APP: ["other-key"]}

    def test_deterministic(self) -> None:
        first = desired_consumer_resources(rich_state(), APIS, OPTIONS)
        second = desired_consumer_resources(rich_state(), APIS, OPTIONS)
        assert json.dumps(first.model_dump()) == json.dumps(second.model_dump())

    @pytest.mark.parametrize("seed", range(5))
    def test_input_order_does_not_matter(self, seed: int) -> None:
        state = rich_state()
        shuffled = state.model_copy(deep=True)
        rng = random.Random(seed)
        for field in ("applications", "key_mappings", "subscriptions", "subscription_policies"):
            items = list(getattr(shuffled, field))
            rng.shuffle(items)
            setattr(shuffled, field, items)
        expected = desired_consumer_resources(state, APIS, OPTIONS).model_dump()
        assert json.dumps(desired_consumer_resources(shuffled, APIS, OPTIONS).model_dump()) == json.dumps(expected)

    def test_duplicates_listed_once(self) -> None:
        state = rich_state()
        doubled = state.model_copy(
            update={
                "applications": state.applications * 2,
                "key_mappings": state.key_mappings * 2,
                "subscriptions": state.subscriptions * 2,
                "subscription_policies": state.subscription_policies * 2,
            }
        )
        assert desired_consumer_resources(doubled, APIS, OPTIONS) == desired_consumer_resources(state, APIS, OPTIONS)

    def test_problems_do_not_stop_the_others(self) -> None:
        state = rich_state()
        state.applications.append(application("Bad_App", id=3))
        state.key_mappings.append(key("orphan", applicationUUID="4a3b2c1d-0000-4000-8000-00000000dead"))
        state.key_mappings.append(key("odd", "TEST"))
        state.subscriptions.append(subscription("Bad_Sub"))
        state.subscription_policies.append(tier("Monthly", unit="month"))
        state.subscription_policies.append(
            CpSubscriptionPolicy.model_validate({"name": "Big", "defaultLimit": {"quotaType": "bandwidthVolume"}})
        )
        out = desired_consumer_resources(state, APIS, OPTIONS)
        assert out.problems == [
            "subscription tier 'Big' has a bandwidth quota (data volume per time); the gateway limits request counts "
            "only",
            "subscription tier 'Monthly' allows 5000 requests per month; the gateway counts per Second, Minute, Hour "
            "or Day, so this window cannot be expressed exactly",
            "key mapping 'orphan' (PRODUCTION) names application 4a3b2c1d-0000-4000-8000-00000000dead, which the "
            "control plane does not list for organization 'carbon.super'",
            f"application {APP} ('PizzaApp'): key mapping 'odd' has key type 'TEST'; the gateway knows PRODUCTION "
            "and SANDBOX",
            "application Bad_App ('PizzaApp'): 'Bad_App' cannot name a Kubernetes object (lowercase letters, digits, "
            "'-' and '.' only)",
            "subscription Bad_Sub: 'Bad_Sub' cannot name a Kubernetes object (lowercase letters, digits, '-' and '.' "
            "only)",
        ]
        good = desired_consumer_resources(rich_state(), APIS, OPTIONS)
        assert out.resources == good.resources

    def test_subscription_of_an_unknown_api_skipped(self) -> None:
        state = rich_state()
        state.subscriptions.append(subscription(OTHER_SUB, apiUUID="api-elsewhere"))
        out = desired_consumer_resources(
            state.model_copy(update={"subscriptions": state.subscriptions[2:]}), {}, OPTIONS
        )
        assert out.skipped == [
            f"subscription {OTHER_SUB}: API api-elsewhere is not deployed on this gateway and the control plane "
            "did not name it"
        ]
        assert by_kind(out.resources, "Subscription") == []

    def test_the_item_names_its_api(self) -> None:
        state = rich_state()
        named = [subscription(apiUUID="api-elsewhere", apiName="Named", apiVersion="2.0")]
        out = desired_consumer_resources(state.model_copy(update={"subscriptions": named}), APIS, OPTIONS)
        (subscription_object,) = by_kind(out.resources, "Subscription")
        assert subscription_object["spec"]["api"] == {"name": "Named", "version": "2.0"}
        assert out.skipped == []

    def test_deployed_api_names_it(self) -> None:
        out = desired_consumer_resources(rich_state(), APIS, OPTIONS)
        assert {s["spec"]["api"]["name"] for s in by_kind(out.resources, "Subscription")} == {"PizzaShackAPI"}

    def test_application_found_by_id(self) -> None:
        state = rich_state()
        by_id = [subscription(applicationUUID="", appId=2)]
        out = desired_consumer_resources(state.model_copy(update={"subscriptions": by_id}), APIS, OPTIONS)
        (mapping,) = by_kind(out.resources, "ApplicationMapping")
        assert mapping["spec"]["applicationRef"] == OTHER_APP
        assert mapping["metadata"]["name"] == sha1(f"{OTHER_APP}:{SUB}")

    def test_namespaces(self) -> None:
        out = desired_consumer_resources(rich_state(), APIS, OPTIONS)
        namespaces = {r["kind"]: r["metadata"]["namespace"] for r in out.resources}
        assert namespaces == {
            "RateLimitPolicy": "apk-tiers",
            "AIRateLimitPolicy": "apk-tiers",
            "Application": "apk-apps",
            "Subscription": "apk-apps",
            "ApplicationMapping": "apk-apps",
        }

    def test_every_resource_is_labelled_for_its_organization(self) -> None:
        out = desired_consumer_resources(rich_state(), APIS, OPTIONS)
        assert all(selects(consumer_selector(organization=ORG), r) for r in out.resources)
        assert [r["metadata"]["labels"][CONSUMER_KEY_LABEL] for r in out.resources] == [
            "Gold",
            "AIGold",
            *sorted([APP, OTHER_APP]),
            SUB,
            OTHER_SUB,
            SUB,
        ]


# --- Conversion of windows, independently of the translator's own table --------------------------

SECONDS_OF = {
    **dict.fromkeys(("sec", "second", "seconds"), 1),
    **dict.fromkeys(("min", "minute", "minutes"), 60),
    **dict.fromkeys(("hour", "hours"), 3600),
    **dict.fromkeys(("day", "days"), 86400),
}
GATEWAY_UNIT_OF = {1: "Second", 60: "Minute", 3600: "Hour", 86400: "Day"}
CALENDAR = ("week", "weeks", "month", "months", "year", "years")
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def any_case(word: str) -> st.SearchStrategy[str]:
    """``word`` with each letter in either case."""
    return st.tuples(*(st.sampled_from(sorted({c.lower(), c.upper()})) for c in word)).map("".join)


spelled_units = st.sampled_from(sorted(SECONDS_OF)).flatmap(lambda u: st.tuples(st.just(u), any_case(u)))
tier_names = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=24).filter(
    lambda n: n.lower() != "unlimited"
)


class TestConversionTable:
    """The brief's table, through ``per_gateway_unit`` and through a tier."""

    @pytest.mark.parametrize(
        ("count", "unit_time", "unit", "expected"),
        [
            (1, 1, "sec", (1, "Second")),
            (100, 1, "min", (100, "Minute")),
            (100, 60, "sec", (100, "Minute")),
            (100, 60, "min", (100, "Hour")),
            (100, 24, "hours", (100, "Day")),
            (100, 1440, "min", (100, "Day")),
            (100, 3600, "sec", (100, "Hour")),
        ],
    )
    def test_table(self, count: int, unit_time: int, unit: str, expected: tuple[int, str]) -> None:
        assert per_gateway_unit(count, unit_time, unit, "tier 'T'") == expected

    @pytest.mark.parametrize("spelled", sorted(SECONDS_OF))
    @pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
    def test_every_spelling_in_any_case(self, spelled: str, case: Any) -> None:
        assert per_gateway_unit(7, 1, case(spelled), "tier 'T'") == (7, GATEWAY_UNIT_OF[SECONDS_OF[spelled]])

    @pytest.mark.parametrize(
        ("unit_time", "unit", "match"),
        [
            (5, "min", "cannot be expressed exactly"),
            (1, "month", "cannot be expressed exactly"),
            (1, "Year", "cannot be expressed exactly"),
            (1, "WEEK", "cannot be expressed exactly"),
            (1, "lightyear", "not a unit of time"),
            (1, "", "not a unit of time"),
        ],
    )
    def test_refusals_name_the_tier(self, unit_time: int, unit: str, match: str) -> None:
        with pytest.raises(TranslationError, match=match) as caught:
            tier_resource(tier("Platinum", count=100, unit=unit, unit_time=unit_time), ORG, OPTIONS)
        assert "subscription tier 'Platinum'" in caught.value.message

    def test_five_minutes_is_neither_twenty_nor_a_hundred_per_minute(self) -> None:
        with pytest.raises(TranslationError, match=r"allows 100 requests per 5 min;.*cannot be expressed exactly"):
            per_gateway_unit(100, 5, "min", "subscription tier 'Gold'")

    def test_token_counts_have_no_second(self) -> None:
        assert per_gateway_unit(9, 60, "sec", "t", noun="tokens", units=TOKEN_UNITS) == (9, "Minute")
        with pytest.raises(TranslationError, match=r"9 tokens per sec; the gateway counts per Minute, Hour or Day"):
            per_gateway_unit(9, 1, "sec", "t", noun="tokens", units=TOKEN_UNITS)

    @EXAMPLES
    @given(
        unit=spelled_units,
        unit_time=st.one_of(st.sampled_from([1, 2, 5, 7, 24, 60, 90, 1440, 3600, 86400]), st.integers(1, 100_000)),
        count=st.integers(1, MAX_COUNT - 1),
        name=tier_names,
    )
    def test_exact_or_refused_naming_the_tier(
        self, unit: tuple[str, str], unit_time: int, count: int, name: str
    ) -> None:
        canonical, spelled = unit
        seconds = unit_time * SECONDS_OF[canonical]
        policy = tier(name, count=count, unit=spelled, unit_time=unit_time)
        if seconds in GATEWAY_UNIT_OF:
            resource = tier_resource(policy, ORG, OPTIONS)
            assert resource is not None
            assert resource["spec"]["override"]["subscription"]["requestCount"] == {
                "requestsPerUnit": count,
                "unit": GATEWAY_UNIT_OF[seconds],
            }
        else:
            with pytest.raises(TranslationError, match="cannot be expressed exactly") as caught:
                tier_resource(policy, ORG, OPTIONS)
            assert f"subscription tier {name!r}" in caught.value.message

    @EXAMPLES
    @given(unit=st.sampled_from(CALENDAR).flatmap(any_case), unit_time=st.integers(1, 1000), name=tier_names)
    def test_calendar_units_always_refused(self, unit: str, unit_time: int, name: str) -> None:
        with pytest.raises(TranslationError, match="cannot be expressed exactly") as caught:
            tier_resource(tier(name, count=10, unit=unit, unit_time=unit_time), ORG, OPTIONS)
        assert f"subscription tier {name!r}" in caught.value.message


class TestTierDetails:
    @pytest.mark.parametrize("stop", [True, False])
    def test_stop_on_quota_reach_carried(self, stop: bool) -> None:
        resource = tier_resource(tier(stopOnQuotaReach=stop), ORG, OPTIONS)
        assert resource is not None
        assert resource["spec"]["override"]["subscription"]["stopOnQuotaReach"] is stop

    @pytest.mark.parametrize("fields", [{}, {"stopOnQuotaReach": None}], ids=["absent", "null"])
    def test_stop_on_quota_reach_defaults_to_true(self, fields: dict[str, Any]) -> None:
        policy = CpSubscriptionPolicy.model_validate(
            {"name": "Gold", "defaultLimit": {"requestCount": {"timeUnit": "min", "requestCount": 5}}} | fields
        )
        resource = tier_resource(policy, ORG, OPTIONS)
        assert resource is not None
        assert resource["spec"]["override"]["subscription"]["stopOnQuotaReach"] is True

    @pytest.mark.parametrize(
        ("burst_unit", "unit"),
        [
            ("sec", "Second"),
            ("SECOND", "Second"),
            ("min", "Minute"),
            ("Minutes", "Minute"),
            ("hour", "Hour"),
            ("days", "Day"),
        ],
    )
    def test_burst_from_rate_limit_count_and_unit(self, burst_unit: str, unit: str) -> None:
        resource = tier_resource(tier(count=1000, unit="day", burst=25, burst_unit=burst_unit), ORG, OPTIONS)
        assert resource is not None
        subscription_limit = resource["spec"]["override"]["subscription"]
        assert subscription_limit["burstControl"] == {"requestsPerUnit": 25, "unit": unit}
        assert subscription_limit["requestCount"] == {"requestsPerUnit": 1000, "unit": "Day"}

    @pytest.mark.parametrize(("burst_unit", "match"), [("month", "cannot be expressed"), ("jiffy", "not a unit")])
    def test_burst_in_a_unit_the_gateway_lacks_refused(self, burst_unit: str, match: str) -> None:
        with pytest.raises(TranslationError, match=match) as caught:
            tier_resource(tier("Spiky", burst=5, burst_unit=burst_unit), ORG, OPTIONS)
        assert "subscription tier 'Spiky'" in caught.value.message
        assert "burst limit" in caught.value.message

    def test_missing_request_count_refused(self) -> None:
        policy = CpSubscriptionPolicy.model_validate({"name": "Empty", "quotaType": "requestCount"})
        with pytest.raises(TranslationError, match="'Empty' is a requestCount quota without its limit"):
            tier_resource(policy, ORG, OPTIONS)

    def test_unknown_quota_type_refused(self) -> None:
        policy = CpSubscriptionPolicy.model_validate({"name": "Odd", "quotaType": "coffeeCount"})
        with pytest.raises(TranslationError, match="'Odd' has quota type 'coffeecount'"):
            tier_resource(policy, ORG, OPTIONS)

    def test_unlimited_refuses_nothing(self) -> None:
        bandwidth = CpSubscriptionPolicy.model_validate({"name": "Unlimited", "quotaType": "bandwidthVolume"})
        assert tier_resource(bandwidth, ORG, OPTIONS) is None

    def test_a_tier_name_of_any_text_validates(self, crds: CrdSchemas) -> None:
        resource = tier_resource(tier("Gold Plus \u2603 " * 8), ORG, OPTIONS)
        assert resource is not None
        assert resource["metadata"]["name"] == sha1(f"{('Gold Plus ☃ ' * 8).strip()}-{ORG}")
        assert validate_resources([resource], crds) == []

    def test_padded_tier_name_is_referred_to_by_its_subscriptions(self) -> None:
        resource = tier_resource(tier("Gold "), ORG, OPTIONS)
        assert resource is not None
        (subscription_object, _) = subscription_resources(subscription(policyId="Gold "), "A", "1", ORG, OPTIONS)
        assert subscription_object["spec"]["ratelimitRef"]["name"] == resource["metadata"]["name"]


class TestAiTierValidation:
    @pytest.mark.parametrize(
        "quota",
        [
            {"requestCount": 100, "totalTokenCount": 1000, "promptTokenCount": 400, "completionTokenCount": 600},
            {"completionTokenCount": 50},
            {"promptTokenCount": MAX_COUNT - 1, "completionTokenCount": MAX_COUNT - 1},
            {"requestCount": 10, "timeUnit": "sec", "unitTime": 3600, "totalTokenCount": 5},
            {"requestCount": 10, "timeUnit": "days", "unitTime": 1},
        ],
        ids=["all", "completion-only", "sum-capped", "hour-in-seconds", "requests-per-day"],
    )
    def test_validates_with_int32_counts(self, crds: CrdSchemas, quota: dict[str, Any]) -> None:
        resource = tier_resource(ai_tier(**quota), ORG, OPTIONS)
        assert resource is not None and resource["kind"] == "AIRateLimitPolicy"
        assert validate_resources([resource], crds) == []
        assert_int32_counts(resource)
        tokens = resource["spec"]["override"].get("tokenCount")
        if tokens:
            assert set(tokens) == {"requestTokenCount", "responseTokenCount", "totalTokenCount", "unit"}


def assert_int32_counts(resource: dict[str, Any]) -> None:
    """Every count in the resource is a limit the CRDs' int32 fields hold, and at least 1
    (the validator does not check ``format: int32``)."""

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        elif isinstance(value, int) and not isinstance(value, bool):
            assert 1 <= value <= MAX_COUNT, f"{path} = {value}"

    walk(resource["spec"], "spec")


# --- Parsing of the control plane's items -------------------------------------------------------


class TestParsing:
    def test_application_list_item(self) -> None:
        app = CpApplication.model_validate(
            {
                "uuid": APP,
                "id": 3,
                "name": "PizzaApp",
                "subName": "alice",
                "policy": "10PerMin",
                "tokenType": "JWT",
                "groupIds": [{"groupId": "team-a", "applicationId": 3}, {"groupId": "team-b", "applicationId": 3}],
                "attributes": {"team": "pizza", "count": 2, "none": None},
                "organization": ORG,
                "somethingNew": {"ignored": True},
            }
        )
        assert (app.uuid, app.id, app.name, app.owner, app.policy, app.token_type, app.organization) == (
            APP,
            3,
            "PizzaApp",
            "alice",
            "10PerMin",
            "JWT",
            ORG,
        )
        assert app.group_ids == ["team-a", "team-b"]
        assert app.attributes == {"team": "pizza", "count": "2", "none": ""}

    def test_application_event_fields(self) -> None:
        app = CpApplication.model_validate(
            {
                "applicationId": 4,
                "uuid": APP,
                "applicationName": "PizzaApp",
                "tokenType": "JWT",
                "applicationPolicy": "Unlimited",
                "groupId": "team-a, team-b,,",
                "attributes": {},
                "subscriber": "bob",
                "tenantDomain": ORG,
            }
        )
        assert (app.id, app.name, app.owner, app.policy, app.organization) == (4, "PizzaApp", "bob", "Unlimited", ORG)
        assert app.group_ids == ["team-a", "team-b"]

    @pytest.mark.parametrize("field", ["id", "applicationId", "appId"])
    def test_application_id_spellings(self, field: str) -> None:
        assert CpApplication.model_validate({"uuid": APP, field: 9}).id == 9

    @pytest.mark.parametrize("field", ["uuid", "applicationUUID", "applicationUuid"])
    def test_application_uuid_spellings(self, field: str) -> None:
        assert CpApplication.model_validate({field: APP}).uuid == APP

    def test_application_nulls_are_defaults(self) -> None:
        app = CpApplication.model_validate(
            {
                "uuid": APP,
                "id": None,
                "name": None,
                "subName": None,
                "policy": None,
                "tokenType": None,
                "groupIds": None,
                "attributes": None,
                "organization": None,
            }
        )
        assert (app.id, app.name, app.owner, app.policy, app.group_ids, app.attributes) == (None, "", "", "", [], {})
        resource = application_resource(app, [], ORG, OPTIONS)
        assert resource["spec"] == {"name": "", "owner": "", "organization": ORG, "attributes": {}}

    def test_null_group_in_group_ids_is_no_group(self) -> None:
        app = CpApplication.model_validate(
            {
                "uuid": APP,
                "groupIds": [
                    {"groupId": None, "applicationId": 1},
                    {"groupId": "", "applicationId": 1},
                    {"groupId": "team-a", "applicationId": 1},
                ],
            }
        )
        assert app.group_ids == ["team-a"]

    @pytest.mark.parametrize(
        "item",
        [{"name": "x"}, {"uuid": None}, {"uuid": ""}],
        ids=["missing", "null", "empty"],
    )
    def test_application_without_uuid_refused(self, item: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            CpApplication.model_validate(item)

    @pytest.mark.parametrize(
        "item",
        [
            {
                "applicationId": 1,
                "applicationUUID": APP,
                "consumerKey": "k",
                "keyType": "PRODUCTION",
                "keyManager": "Resident Key Manager",
            },
            {
                "appId": 1,
                "applicationUuid": APP,
                "consumer_key": "k",
                "key_type": " production ",
                "keymanager": "Resident Key Manager",
            },
        ],
        ids=["list", "other-spellings"],
    )
    def test_key_mapping_spellings(self, item: dict[str, Any]) -> None:
        mapping = CpKeyMapping.model_validate(item)
        assert (mapping.application_id, mapping.application_uuid, mapping.consumer_key, mapping.key_type) == (
            1,
            APP,
            "k",
            "PRODUCTION",
        )
        assert mapping.key_manager == "Resident Key Manager"

    def test_key_mapping_nulls(self) -> None:
        mapping = CpKeyMapping.model_validate(
            {
                "applicationId": None,
                "applicationUUID": None,
                "consumerKey": "k",
                "keyType": "sandbox",
                "keyManager": None,
            }
        )
        assert (mapping.application_id, mapping.application_uuid, mapping.key_type, mapping.key_manager) == (
            None,
            "",
            "SANDBOX",
            "",
        )

    @pytest.mark.parametrize(
        "item",
        [
            {"keyType": "PRODUCTION"},
            {"consumerKey": "", "keyType": "PRODUCTION"},
            {"consumerKey": "k"},
            {"consumerKey": "k", "keyType": None},
        ],
        ids=["no-key", "empty-key", "no-type", "null-type"],
    )
    def test_key_mapping_without_key_or_type_refused(self, item: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            CpKeyMapping.model_validate({"applicationUUID": APP} | item)

    def test_subscription_list_item(self) -> None:
        sub = CpSubscription.model_validate(
            {
                "subscriptionUUID": SUB,
                "subscriptionId": 11,
                "policyId": "Gold",
                "apiUUID": API,
                "apiId": 5,
                "applicationUUID": APP,
                "appId": 1,
                "subscriptionState": "blocked",
                "apiName": "PizzaShackAPI",
                "apiVersion": "1.0.0",
                "apiOrganization": ORG,
                "applicationOrganization": ORG,
            }
        )
        assert (sub.uuid, sub.id, sub.policy, sub.api_uuid, sub.api_id, sub.application_uuid, sub.application_id) == (
            SUB,
            11,
            "Gold",
            API,
            5,
            APP,
            1,
        )
        assert (sub.state, sub.active, sub.api_name, sub.api_version) == ("BLOCKED", False, "PizzaShackAPI", "1.0.0")
        assert (sub.api_organization, sub.application_organization) == (ORG, ORG)

    def test_subscription_event_fields(self) -> None:
        sub = CpSubscription.model_validate(
            {
                "subscriptionId": 11,
                "subscriptionUUID": SUB,
                "apiId": 5,
                "apiUUID": API,
                "applicationId": 1,
                "applicationUUID": APP,
                "policyId": "Gold",
                "subscriptionState": "ON_HOLD",
                "eventId": "e1",
                "timeStamp": 1,
                "tenantDomain": ORG,
            }
        )
        assert (sub.application_id, sub.state, sub.active) == (1, "ON_HOLD", False)

    @pytest.mark.parametrize("field", ["subscriptionState", "subscriptionStatus", "state"])
    def test_subscription_state_spellings(self, field: str) -> None:
        assert CpSubscription.model_validate({"uuid": SUB, field: "Tier_Update_Pending"}).state == "TIER_UPDATE_PENDING"

    @pytest.mark.parametrize("state", [None, "", "  "])
    def test_subscription_without_state_is_unblocked(self, state: Any) -> None:
        sub = CpSubscription.model_validate({"subscriptionUUID": SUB, "subscriptionState": state})
        assert (sub.state, sub.active) == ("UNBLOCKED", True)

    def test_subscription_nulls_are_defaults(self) -> None:
        sub = CpSubscription.model_validate(
            {
                "subscriptionUUID": SUB,
                "subscriptionId": None,
                "policyId": None,
                "apiUUID": None,
                "apiId": None,
                "applicationUUID": None,
                "appId": None,
                "apiName": None,
                "apiVersion": None,
            }
        )
        assert (sub.policy, sub.api_uuid, sub.application_uuid, sub.api_name, sub.api_version) == ("",) * 5
        assert (sub.id, sub.api_id, sub.application_id) == (None, None, None)

    def test_subscription_policy_list_item(self) -> None:
        policy = CpSubscriptionPolicy.model_validate(
            {
                "name": "Gold",
                "tenantDomain": ORG,
                "quotaType": "requestCount",
                "rateLimitCount": 10,
                "rateLimitTimeUnit": "sec",
                "stopOnQuotaReach": False,
                "graphQLMaxDepth": 3,
                "graphQLMaxComplexity": 4,
                "subscriberCount": 0,
                "defaultLimit": {
                    "quotaType": "requestCount",
                    "requestCount": {"timeUnit": "min", "unitTime": 1, "requestCount": 5000},
                    "bandwidth": None,
                    "eventCount": None,
                    "aiApiQuota": None,
                },
            }
        )
        assert (policy.organization, policy.rate_limit_count, policy.rate_limit_time_unit) == (ORG, 10, "sec")
        assert (policy.stop_on_quota_reach, policy.graphql_max_depth, policy.graphql_max_complexity) == (False, 3, 4)
        assert policy.default_limit is not None and policy.default_limit.request_count is not None
        assert policy.default_limit.request_count.request_count == 5000
        resource = tier_resource(policy, ORG, OPTIONS)
        assert resource is not None
        assert resource["spec"]["override"]["subscription"]["burstControl"] == {"requestsPerUnit": 10, "unit": "Second"}

    def test_subscription_policy_event_spelling_and_nulls(self) -> None:
        policy = CpSubscriptionPolicy.model_validate(
            {
                "policyName": "Gold",
                "organization": ORG,
                "quotaType": None,
                "rateLimitCount": None,
                "rateLimitTimeUnit": None,
                "stopOnQuotaReach": None,
                "defaultLimit": None,
            }
        )
        assert (policy.name, policy.organization, policy.quota_type, policy.rate_limit_count) == ("Gold", ORG, "", 0)
        assert (policy.rate_limit_time_unit, policy.stop_on_quota_reach, policy.default_limit) == ("", True, None)

    def test_a_parsed_list_translates(self, crds: CrdSchemas) -> None:
        """A whole CP answer, as ``{count, list, pagination}`` bodies, in the list spellings."""
        applications = {
            "count": 1,
            "list": [
                {
                    "uuid": APP,
                    "id": 1,
                    "name": "A",
                    "subName": "alice",
                    "groupIds": [{"groupId": "g", "applicationId": 1}],
                    "attributes": None,
                    "organization": ORG,
                }
            ],
            "pagination": None,
        }
        keys = {
            "count": 2,
            "list": [
                {
                    "applicationId": 1,
                    "applicationUUID": None,
                    "consumerKey": "pk",
                    "keyType": "PRODUCTION",
                    "keyManager": "Resident Key Manager",
                },
                {
                    "applicationId": 1,
                    "applicationUUID": APP,
                    "consumerKey": "sk",
                    "keyType": "SANDBOX",
                    "keyManager": None,
                },
            ],
            "pagination": None,
        }
        subscriptions = {
            "count": 1,
            "list": [
                {
                    "subscriptionUUID": SUB,
                    "subscriptionId": 1,
                    "policyId": "Gold",
                    "apiUUID": API,
                    "apiId": 1,
                    "applicationUUID": None,
                    "appId": 1,
                    "subscriptionState": "UNBLOCKED",
                }
            ],
            "pagination": None,
        }
        policies = {
            "count": 1,
            "list": [
                {
                    "name": "Gold",
                    "tenantDomain": ORG,
                    "quotaType": "requestCount",
                    "rateLimitCount": -1,
                    "rateLimitTimeUnit": None,
                    "stopOnQuotaReach": True,
                    "defaultLimit": {
                        "quotaType": "requestCount",
                        "requestCount": {"timeUnit": "min", "unitTime": 1, "requestCount": 5},
                    },
                }
            ],
            "pagination": None,
        }
        state = ConsumerState(
            organization=ORG,
            applications=applications["list"],
            key_mappings=keys["list"],
            subscriptions=subscriptions["list"],
            subscription_policies=policies["list"],
        )
        out = desired_consumer_resources(state, APIS, OPTIONS)
        assert (out.problems, out.skipped) == ([], [])
        assert [r["kind"] for r in out.resources] == [
            "RateLimitPolicy",
            "Application",
            "Subscription",
            "ApplicationMapping",
        ]
        (app,) = by_kind(out.resources, "Application")
        assert [e["appId"] for e in app["spec"]["securitySchemes"]["oauth2"]["environments"]] == ["pk", "sk"]
        (mapping,) = by_kind(out.resources, "ApplicationMapping")
        assert mapping["spec"] == {"applicationRef": APP, "subscriptionRef": SUB}
        assert validate_resources(out.resources, crds) == []


# --- Subscriptions and key mappings -------------------------------------------------------------


class TestSubscriptionStates:
    @pytest.mark.parametrize("state", [*ACTIVE, *INACTIVE])
    def test_each_state(self, state: str) -> None:
        sub = subscription(subscriptionState=state, policyId="Silver")
        resources = subscription_resources(sub, "PizzaShackAPI", "1.0.0", "wso2.com", OPTIONS)
        subscription_object = resources[0]
        assert subscription_object["kind"] == "Subscription"
        assert subscription_object["spec"]["subscriptionStatus"] == state
        assert subscription_object["spec"]["ratelimitRef"] == {"name": sha1("Silver-wso2.com"), "level": "app"}
        if state in ACTIVE:
            assert [r["kind"] for r in resources] == ["Subscription", "ApplicationMapping"]
            assert resources[1]["metadata"]["name"] == sha1(f"{APP}:{SUB}") == mapping_name(APP, SUB)
            assert resources[1]["spec"] == {"applicationRef": APP, "subscriptionRef": SUB}
        else:
            assert len(resources) == 1

    def test_mapping_name_is_ordered(self) -> None:
        assert mapping_name(APP, SUB) != mapping_name(SUB, APP)
        assert tier_resource_name("Gold", ORG) != tier_resource_name("Gold", "wso2.com")

    def test_unknown_api_name_refused(self) -> None:
        with pytest.raises(TranslationError, match=f"its API {API} are unknown"):
            subscription_resources(subscription(), " ", "1.0.0", ORG, OPTIONS)

    @EXAMPLES
    @given(
        state=st.sampled_from([*ACTIVE, *INACTIVE]).flatmap(any_case),
        policy=st.one_of(st.just(""), tier_names),
        org=st.sampled_from([ORG, "wso2.com", "org-1"]),
    )
    def test_mapped_exactly_while_active(self, state: str, policy: str, org: str) -> None:
        resources = subscription_resources(
            subscription(subscriptionState=state, policyId=policy), "A", "1", org, OPTIONS
        )
        assert resources[0]["spec"]["subscriptionStatus"] == state.upper()
        assert resources[0]["spec"]["ratelimitRef"]["name"] == sha1(f"{policy or 'Unlimited'}-{org}")
        assert (len(resources) == 2) is (state.upper() in ACTIVE)


class TestKeyMappings:
    def test_by_numeric_id_when_the_uuid_is_empty(self) -> None:
        state = ConsumerState(
            organization=ORG,
            applications=[application(id=7), application(OTHER_APP, id=8)],
            key_mappings=[
                key("by-id", applicationUUID="", applicationId=7),
                key("by-id-8", applicationUUID=None, applicationId=8),
            ],
        )
        out = desired_consumer_resources(state, APIS, OPTIONS)
        assert out.problems == []
        keys_of = {
            a["metadata"]["name"]: [e["appId"] for e in a["spec"]["securitySchemes"]["oauth2"]["environments"]]
            for a in by_kind(out.resources, "Application")
        }
        assert keys_of == {APP: ["by-id"], OTHER_APP: ["by-id-8"]}

    def test_the_uuid_wins_over_the_id(self) -> None:
        # The mapping names OTHER_APP by UUID and APP's numeric id: it is OTHER_APP's.
        mapping = key("k", applicationUUID=OTHER_APP, applicationId=1)
        assert "securitySchemes" not in application_resource(application(id=1), [mapping], ORG, OPTIONS)["spec"]

    def test_deduplicated_and_sorted_by_type_then_key(self) -> None:
        mappings = [key("b"), key("a", "SANDBOX"), key("a"), key("b", keyManager="KM2"), key("a", "sandbox")]
        spec = application_resource(application(), mappings, ORG, OPTIONS)["spec"]
        environments = spec["securitySchemes"]["oauth2"]["environments"]
        assert [(e["keyType"], e["appId"]) for e in environments] == [
            ("PRODUCTION", "a"),
            ("PRODUCTION", "b"),
            ("SANDBOX", "a"),
        ]

    def test_env_id_from_options_in_desired(self, crds: CrdSchemas) -> None:
        options = ConsumerOptions(application_namespace="apk-apps", tier_namespace="apk-tiers", environment="eu-prod")
        out = desired_consumer_resources(rich_state(), APIS, options)
        envs = {
            e["envId"]
            for a in by_kind(out.resources, "Application")
            for e in a["spec"]["securitySchemes"]["oauth2"]["environments"]
        }
        assert envs == {"eu-prod"}
        assert validate_resources(out.resources, crds) == []

    @pytest.mark.parametrize("key_type", ["TEST", "PROD", "both"])
    def test_other_key_types_refused(self, key_type: str) -> None:
        with pytest.raises(TranslationError, match=f"key type {key_type.upper()!r}; the gateway knows PRODUCTION"):
            application_resource(application(), [key("k", key_type)], ORG, OPTIONS)

    def test_foreign_bad_key_type_is_not_this_applications_problem(self) -> None:
        resource = application_resource(application(), [key("k", "TEST", applicationUUID=OTHER_APP)], ORG, OPTIONS)
        assert "securitySchemes" not in resource["spec"]

    def test_in_desired_a_bad_key_type_costs_only_that_key(self) -> None:
        state = rich_state()
        state.key_mappings.append(key("odd", "TEST"))
        out = desired_consumer_resources(state, APIS, OPTIONS)
        assert len(out.problems) == 1 and "'odd' has key type 'TEST'" in out.problems[0]
        assert out.resources == desired_consumer_resources(rich_state(), APIS, OPTIONS).resources


# --- desired_consumer_resources -----------------------------------------------------------------


class TestDesiredDetails:
    def test_the_apis_map_fills_only_what_is_missing(self) -> None:
        subs = [
            subscription(SUB, apiName="FromItem", apiVersion="9.9"),
            subscription(OTHER_SUB, apiName="HalfNamed"),  # no version: the map names it
        ]
        out = desired_consumer_resources(rich_state().model_copy(update={"subscriptions": subs}), APIS, OPTIONS)
        apis = {s["metadata"]["name"]: s["spec"]["api"] for s in by_kind(out.resources, "Subscription")}
        assert apis == {
            SUB: {"name": "FromItem", "version": "9.9"},
            OTHER_SUB: {"name": "PizzaShackAPI", "version": "1.0.0"},
        }
        annotations = {
            s["metadata"]["name"]: s["metadata"]["annotations"] for s in by_kind(out.resources, "Subscription")
        }
        assert annotations[OTHER_SUB]["gateway-agent.wso2.com/organization"] == ORG

    def test_unknown_api_skipped_the_rest_goes_on(self) -> None:
        state = rich_state()
        state.subscriptions.append(subscription("0d1c2b3a-0000-4000-8000-000000000001", apiUUID="", apiId=42))
        out = desired_consumer_resources(state, APIS, OPTIONS)
        assert out.skipped == [
            "subscription 0d1c2b3a-0000-4000-8000-000000000001: API 42 is not deployed on this gateway and the "
            "control plane did not name it"
        ]
        assert out.problems == []
        assert out.resources == desired_consumer_resources(rich_state(), APIS, OPTIONS).resources

    def test_a_subscription_naming_no_known_application_is_a_problem(self) -> None:
        state = rich_state()
        state.subscriptions.append(subscription("0d1c2b3a-0000-4000-8000-000000000002", applicationUUID="", appId=99))
        out = desired_consumer_resources(state, APIS, OPTIONS)
        assert out.problems == [
            "subscription 0d1c2b3a-0000-4000-8000-000000000002 names no application (applicationUUID), so it cannot "
            "be mapped"
        ]
        assert out.resources == desired_consumer_resources(rich_state(), APIS, OPTIONS).resources

    def test_empty_state(self) -> None:
        out = desired_consumer_resources(ConsumerState(organization=ORG), {}, OPTIONS)
        assert out.model_dump() == {"resources": [], "problems": [], "skipped": []}

    def test_tiers_sorted_by_kind_then_name(self) -> None:
        state = ConsumerState(
            organization=ORG,
            subscription_policies=[
                ai_tier("Zed", totalTokenCount=5),
                tier("Bronze"),
                ai_tier("Alpha", requestCount=1),
                tier("Silver"),
                tier("Gold"),
            ],
        )
        out = desired_consumer_resources(state, {}, OPTIONS)
        rate = sorted(sha1(f"{n}-{ORG}") for n in ("Bronze", "Silver", "Gold"))
        ai = sorted(sha1(f"{n}-{ORG}") for n in ("Zed", "Alpha"))
        assert [(r["kind"], r["metadata"]["name"]) for r in out.resources] == [
            *(("RateLimitPolicy", n) for n in rate),
            *(("AIRateLimitPolicy", n) for n in ai),
        ]


# --- Properties over generated organizations ----------------------------------------------------

STATES = [*ACTIVE, *INACTIVE]
KIND_ORDER = {
    "RateLimitPolicy": 0,
    "AIRateLimitPolicy": 0,
    "Application": 1,
    "Subscription": 2,
    "ApplicationMapping": 3,
}
EXACT_WINDOWS = [
    (1, "sec"),
    (1, "min"),
    (60, "sec"),
    (60, "min"),
    (24, "hours"),
    (1440, "min"),
    (3600, "sec"),
    (1, "Day"),
    (1, "HOUR"),
]
consumer_keys = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=16)


@st.composite
def organizations(draw: st.DrawFn) -> tuple[ConsumerState, dict[str, tuple[str, str]]]:
    """A translatable organization: every entity is good, some subscriptions' APIs are elsewhere."""
    org = draw(st.sampled_from([ORG, "wso2.com", "acme"]))
    app_uuids = draw(st.lists(st.uuids().map(str), min_size=0, max_size=4, unique=True))
    ids = draw(st.lists(st.integers(1, 10_000), min_size=len(app_uuids), max_size=len(app_uuids), unique=True))
    applications = [
        {
            "uuid": u,
            "id": i,
            "name": draw(st.text(max_size=10)),
            "subName": draw(st.sampled_from(["", "alice", None])),
            "attributes": draw(st.dictionaries(consumer_keys, st.text(max_size=5), max_size=2)),
            "groupIds": [{"groupId": "g", "applicationId": i}],
        }
        for u, i in zip(app_uuids, ids, strict=True)
    ]
    keys = []
    for _ in range(draw(st.integers(0, 6)) if app_uuids else 0):
        index = draw(st.integers(0, len(app_uuids) - 1))
        by_id = draw(st.booleans())
        keys.append(
            {
                "applicationUUID": "" if by_id else app_uuids[index],
                "applicationId": ids[index],
                "consumerKey": draw(consumer_keys),
                "keyType": draw(st.sampled_from(["PRODUCTION", "SANDBOX", "sandbox"])),
                "keyManager": draw(st.sampled_from(["Resident Key Manager", "KM2"])),
            }
        )
    tier_list = []
    for name in draw(st.lists(tier_names, max_size=4, unique=True)):
        unit_time, unit = draw(st.sampled_from(EXACT_WINDOWS))
        if draw(st.booleans()):
            tier_list.append(
                {
                    "name": name,
                    "quotaType": "requestCount",
                    "stopOnQuotaReach": draw(st.booleans()),
                    "rateLimitCount": draw(st.sampled_from([-1, 0, 10])),
                    "rateLimitTimeUnit": draw(st.sampled_from(["sec", "min", "", None])),
                    "defaultLimit": {
                        "quotaType": "requestCount",
                        "requestCount": {
                            "timeUnit": unit,
                            "unitTime": unit_time,
                            "requestCount": draw(st.integers(-1, MAX_COUNT)),
                        },
                    },
                }
            )
        else:
            unit_time, unit = draw(st.sampled_from([w for w in EXACT_WINDOWS if w[1] != "sec"]))
            counts = {
                field: draw(st.one_of(st.none(), st.integers(0, MAX_COUNT)))
                for field in ("requestCount", "totalTokenCount", "promptTokenCount", "completionTokenCount")
            }
            tier_list.append(
                {
                    "name": name,
                    "quotaType": "aiApiQuota",
                    "defaultLimit": {
                        "quotaType": "aiApiQuota",
                        "aiApiQuota": {"timeUnit": unit, "unitTime": unit_time, **counts},
                    },
                }
            )
    tier_list.append({"name": "Unlimited", "quotaType": "requestCount"})
    api_uuids = draw(st.lists(st.uuids().map(str), min_size=1, max_size=3, unique=True))
    apis = {u: (f"api-{n}", "1.0.0") for n, u in enumerate(api_uuids[: draw(st.integers(0, len(api_uuids)))])}
    subscriptions = []
    for sub_uuid in draw(st.lists(st.uuids().map(str), max_size=5, unique=True)) if app_uuids else []:
        index = draw(st.integers(0, len(app_uuids) - 1))
        by_id = draw(st.booleans())
        named = draw(st.booleans())
        subscriptions.append(
            {
                "subscriptionUUID": sub_uuid,
                "apiUUID": draw(st.sampled_from(api_uuids)),
                "applicationUUID": "" if by_id else app_uuids[index],
                "appId": ids[index],
                "policyId": draw(st.sampled_from(["", "Unlimited", *(t["name"] for t in tier_list)])),
                "subscriptionState": draw(st.sampled_from(STATES)),
                **({"apiName": "named-api", "apiVersion": "2.0"} if named else {}),
            }
        )
    state = ConsumerState(
        organization=org,
        applications=applications,
        key_mappings=keys,
        subscriptions=subscriptions,
        subscription_policies=tier_list,
    )
    return state, apis


def shuffled_and_doubled(state: ConsumerState, rng: random.Random) -> ConsumerState:
    update = {}
    for field in ("applications", "key_mappings", "subscriptions", "subscription_policies"):
        items = list(getattr(state, field)) * rng.choice([1, 2])
        rng.shuffle(items)
        update[field] = items
    return state.model_copy(update=update)


class TestProperties:
    @EXAMPLES
    @given(generated=organizations())
    def test_everything_validates_in_apply_order(
        self, crds: CrdSchemas, generated: tuple[ConsumerState, dict[str, tuple[str, str]]]
    ) -> None:
        state, apis = generated
        out = desired_consumer_resources(state, apis, OPTIONS)
        assert out.problems == []
        assert validate_resources(out.resources, crds) == []
        for resource in out.resources:
            assert_int32_counts(resource)
        ranks = [KIND_ORDER[r["kind"]] for r in out.resources]
        assert ranks == sorted(ranks)
        names = [(r["kind"], r["metadata"]["name"]) for r in out.resources]
        assert len(names) == len(set(names))

    @EXAMPLES
    @given(generated=organizations(), seed=st.integers(0, 2**32))
    def test_input_order_and_repetition_do_not_matter(
        self, generated: tuple[ConsumerState, dict[str, tuple[str, str]]], seed: int
    ) -> None:
        state, apis = generated
        expected = json.dumps(desired_consumer_resources(state, apis, OPTIONS).model_dump())
        again = desired_consumer_resources(shuffled_and_doubled(state, random.Random(seed)), apis, OPTIONS)
        assert json.dumps(again.model_dump()) == expected

    @EXAMPLES
    @given(generated=organizations())
    def test_what_each_entity_becomes(self, generated: tuple[ConsumerState, dict[str, tuple[str, str]]]) -> None:
        state, apis = generated
        out = desired_consumer_resources(state, apis, OPTIONS)
        uuid_of_id = {a.id: a.uuid for a in state.applications}

        # Every application, with exactly its own keys.
        expected_keys: dict[str, set[tuple[str, str]]] = {a.uuid: set() for a in state.applications}
        for k in state.key_mappings:
            expected_keys[k.application_uuid or uuid_of_id[k.application_id]].add((k.key_type, k.consumer_key))
        got_keys = {
            a["metadata"]["name"]: {
                (e["keyType"], e["appId"])
                for e in a["spec"].get("securitySchemes", {}).get("oauth2", {}).get("environments", [])
            }
            for a in by_kind(out.resources, "Application")
        }
        assert got_keys == expected_keys

        # Subscriptions of known APIs (named by the item or by the map); mappings of the active ones only.
        known = [s for s in state.subscriptions if (s.api_name and s.api_version) or s.api_uuid in apis]
        assert {s["metadata"]["name"] for s in by_kind(out.resources, "Subscription")} == {s.uuid for s in known}
        assert len(out.skipped) == len(state.subscriptions) - len(known)
        assert {m["metadata"]["name"]: m["spec"] for m in by_kind(out.resources, "ApplicationMapping")} == {
            mapping_name(s.application_uuid or uuid_of_id[s.application_id], s.uuid): {
                "applicationRef": s.application_uuid or uuid_of_id[s.application_id],
                "subscriptionRef": s.uuid,
            }
            for s in known
            if s.state in ACTIVE
        }

        # Every ratelimitRef names a tier resource, or a tier that limits nothing.
        tiers = {r["metadata"]["name"] for r in out.resources if r["kind"].endswith("RateLimitPolicy")}
        unlimited = {
            tier_resource_name(p.name, state.organization)
            for p in state.subscription_policies
            if tier_resource(p, state.organization, OPTIONS) is None
        } | {tier_resource_name("Unlimited", state.organization)}
        for s in by_kind(out.resources, "Subscription"):
            assert s["spec"]["ratelimitRef"]["level"] == "app"
            assert s["spec"]["ratelimitRef"]["name"] in tiers | unlimited

    @EXAMPLES
    @given(generated=organizations(), bad=st.sampled_from(["app", "key", "sub", "tier"]))
    def test_one_bad_entity_is_one_problem(
        self, generated: tuple[ConsumerState, dict[str, tuple[str, str]]], bad: str
    ) -> None:
        state, apis = generated
        good = desired_consumer_resources(state, apis, OPTIONS)
        broken = state.model_copy(deep=True)
        if bad == "app":
            broken.applications.append(application("Not_A_Name", id=99_999))
        elif bad == "key":
            broken.key_mappings.append(key("orphan", applicationUUID="0d1c2b3a-0000-4000-8000-0000000000ff"))
        elif bad == "sub":
            broken.subscriptions.append(subscription("Not_A_Name", apiName="x", apiVersion="1"))
        else:
            broken.subscription_policies.append(tier("EveryFiveMinutes", unit_time=5))
        out = desired_consumer_resources(broken, apis, OPTIONS)
        assert len(out.problems) == 1
        assert out.resources == good.resources
        assert out.skipped == good.skipped
