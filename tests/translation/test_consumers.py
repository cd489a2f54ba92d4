"""Consumers as gateway resources: applications with their keys, subscriptions, mappings, tiers.

Items are built in the control plane's wire names (``internal/data/v1`` lists), parsed by the models.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest
from pydantic import ValidationError

from models.consumers import ConsumerState, CpApplication, CpKeyMapping, CpSubscription, CpSubscriptionPolicy
from models.naming import (
    CONSUMER_KEY_LABEL,
    CONSUMER_LABEL,
    CONSUMER_ORGANIZATION_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    consumer_selector,
)
from translation.consumers import (
    MAX_COUNT,
    ConsumerOptions,
    application_resource,
    desired_consumer_resources,
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
