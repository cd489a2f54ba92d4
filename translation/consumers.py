"""Consumers as gateway resources: applications, subscriptions, their mappings and subscription tiers.

Pure functions, deterministic to the byte, shaped as ``../shared/reference/applications-subscriptions.md``
section 3 says and as the CRDs in ``../shared/apk-crds`` validate. Names follow the older agent
(the application and subscription UUIDs, sha1 hex for mappings and tiers), so taking over from it
converges without churn.

- ``Application`` (cp.wso2.com/v1alpha2): its key mappings live inside it, one
  ``securitySchemes.oauth2.environments`` entry per consumer key, ``envId`` equal to the API's
  ``spec.environment`` (``Default`` when the API sets none).
- ``Subscription`` (cp.wso2.com/v1alpha3) with ``ratelimitRef`` to its tier's resource, and an
  ``ApplicationMapping`` (cp.wso2.com/v1alpha2) only while the subscription passes traffic: some
  gateway builds ignore ``subscriptionStatus``, so a blocked subscription loses its mapping.
- A subscription tier's quota as a ``RateLimitPolicy`` (``override.subscription``) or, for AI
  quotas, an ``AIRateLimitPolicy``, converted exactly: the gateway counts per one Second, Minute,
  Hour or Day, so "100 per 5 minutes" cannot be expressed and is refused, never rounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.consumers import KEY_TYPES, ConsumerState, CpApplication, CpKeyMapping, CpSubscription, CpSubscriptionPolicy
from models.naming import (
    CONSUMER_KEY_LABEL,
    CONSUMER_LABEL,
    CONSUMER_ORGANIZATION_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    ORGANIZATION_ANNOTATION,
    label_value,
    sha1_hex,
)
from translation.errors import TranslationError

CP_GROUP = "cp.wso2.com"
APPLICATION_VERSION = "cp.wso2.com/v1alpha2"
SUBSCRIPTION_VERSION = "cp.wso2.com/v1alpha3"
MAPPING_VERSION = "cp.wso2.com/v1alpha2"
RATE_LIMIT_VERSION = "dp.wso2.com/v1alpha3"
AI_RATE_LIMIT_VERSION = "dp.wso2.com/v1alpha3"
# The gateway ignores a tier's targetRef; the CRD requires one.
TIER_TARGET = {"group": "gateway.networking.k8s.io", "kind": "Subscription", "name": "default"}
MAX_COUNT = 2**31 - 1
_RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# Every spelling of a time unit the control plane writes, in seconds.
_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
}
_UNCOUNTABLE = ("week", "weeks", "month", "months", "year", "years")
_GATEWAY_UNITS = (("Day", 86400), ("Hour", 3600), ("Minute", 60), ("Second", 1))


class ConsumerOptions(BaseModel):
    """Where consumer resources go, and the environment the key mappings are for."""

    model_config = ConfigDict(frozen=True)

    application_namespace: str
    tier_namespace: str
    # The ``envId`` of every key mapping: the API's ``spec.environment``, ``Default`` when it has none.
    environment: str = "Default"


class ConsumerTranslation(BaseModel):
    resources: list[dict[str, Any]] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)


def tier_resource_name(tier: str, organization: str) -> str:
    return sha1_hex(f"{tier}-{organization}")


def mapping_name(application_uuid: str, subscription_uuid: str) -> str:
    return sha1_hex(f"{application_uuid}:{subscription_uuid}")


def _metadata(name: str, namespace: str, kind: str, key: str, organization: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {
            MANAGED_BY_LABEL: MANAGED_BY_VALUE,
            CONSUMER_LABEL: kind,
            CONSUMER_KEY_LABEL: label_value(key),
            CONSUMER_ORGANIZATION_LABEL: sha1_hex(organization),
        },
        "annotations": {ORGANIZATION_ANNOTATION: organization},
    }


def _uuid_name(value: str, what: str) -> str:
    if not _RFC1123.match(value) or len(value) > 253:
        raise TranslationError(f"{what} {value!r} cannot name a Kubernetes object (lowercase RFC 1123 names only)")
    return value


def application_resource(
    app: CpApplication, mappings: Iterable[CpKeyMapping], organization: str, options: ConsumerOptions
) -> dict[str, Any]:
    """The ``Application`` with the consumer keys of ``mappings`` that belong to it."""
    name = _uuid_name(app.uuid, "application UUID")
    environments: dict[tuple[str, str], dict[str, str]] = {}
    for mapping in mappings:
        ours = mapping.application_uuid == app.uuid or (
            not mapping.application_uuid and app.id is not None and mapping.application_id == app.id
        )
        if not ours:
            continue
        if mapping.key_type not in KEY_TYPES:
            raise TranslationError(
                f"application {app.name or app.uuid}: key {mapping.consumer_key!r} has key type "
                f"{mapping.key_type!r}; the gateway knows {' and '.join(KEY_TYPES)}"
            )
        environments[(mapping.key_type, mapping.consumer_key)] = {
            "envId": options.environment,
            "appId": mapping.consumer_key,
            "keyType": mapping.key_type,
        }
    spec: dict[str, Any] = {
        "name": app.name or app.uuid,
        "owner": app.owner or "admin",
        "organization": organization,
        "attributes": dict(sorted(app.attributes.items())),
    }
    if environments:
        spec["securitySchemes"] = {"oauth2": {"environments": [environments[k] for k in sorted(environments)]}}
    return {
        "apiVersion": APPLICATION_VERSION,
        "kind": "Application",
        "metadata": _metadata(name, options.application_namespace, "application", app.uuid, organization),
        "spec": spec,
    }


def subscription_resources(
    sub: CpSubscription, api_name: str, api_version: str, organization: str, options: ConsumerOptions
) -> list[dict[str, Any]]:
    """The ``Subscription``, and its ``ApplicationMapping`` while the subscription passes traffic."""
    name = _uuid_name(sub.uuid, "subscription UUID")
    if not sub.application_uuid:
        raise TranslationError(f"subscription {sub.uuid} names no application (applicationUUID)")
    tier = sub.policy or "Unlimited"
    resources: list[dict[str, Any]] = [
        {
            "apiVersion": SUBSCRIPTION_VERSION,
            "kind": "Subscription",
            "metadata": _metadata(name, options.application_namespace, "subscription", sub.uuid, organization),
            "spec": {
                "organization": organization,
                "api": {"name": api_name, "version": api_version},
                "subscriptionStatus": sub.state,
                # Always named, as the CRD requires; an Unlimited tier has no resource, so no limit.
                "ratelimitRef": {"name": tier_resource_name(tier, organization), "level": "app"},
            },
        }
    ]
    if sub.active:
        resources.append(
            {
                "apiVersion": MAPPING_VERSION,
                "kind": "ApplicationMapping",
                "metadata": _metadata(
                    mapping_name(sub.application_uuid, sub.uuid),
                    options.application_namespace,
                    "application-mapping",
                    sub.uuid,
                    organization,
                ),
                "spec": {"applicationRef": sub.application_uuid, "subscriptionRef": sub.uuid},
            }
        )
    return resources


def per_gateway_unit(count: int, unit_time: int, time_unit: str, what: str) -> tuple[int, str]:
    """``count`` per ``unit_time`` ``time_unit`` as requests per one gateway unit, exactly, or a refusal."""
    spelled = (time_unit or "").strip().lower()
    if spelled in _UNCOUNTABLE:
        raise TranslationError(f"{what} counts per {spelled}; the gateway counts per Second, Minute, Hour or Day only")
    seconds_per_unit = _UNIT_SECONDS.get(spelled)
    if seconds_per_unit is None:
        raise TranslationError(f"{what} has the time unit {time_unit!r}, which is not a unit of time the gateway knows")
    if unit_time < 1:
        raise TranslationError(f"{what} has a window of {unit_time} {time_unit}")
    window = unit_time * seconds_per_unit
    for unit, seconds in _GATEWAY_UNITS:
        if window == seconds:
            if not 0 < count <= MAX_COUNT:
                raise TranslationError(f"{what} allows {count} requests per {unit}; the gateway takes 1 to {MAX_COUNT}")
            return count, unit
    raise TranslationError(
        f"{what} allows {count} per {unit_time} {time_unit}; the gateway counts per one Second, Minute, Hour or "
        "Day, so this window cannot be expressed exactly"
    )


def tier_resource(policy: CpSubscriptionPolicy, organization: str, options: ConsumerOptions) -> dict[str, Any] | None:
    """The tier's ``RateLimitPolicy`` (or ``AIRateLimitPolicy``); None when it limits nothing."""
    what = f"subscription tier {policy.name!r}"
    if policy.name.strip().lower() == "unlimited":
        return None
    limit = policy.default_limit
    quota = ((limit.quota_type if limit else "") or policy.quota_type or "requestCount").strip()
    metadata = _metadata(
        tier_resource_name(policy.name, organization), options.tier_namespace, "tier", policy.name, organization
    )
    if quota.lower() in ("bandwidthvolume", "bandwidth"):
        raise TranslationError(f"{what} limits bandwidth; the gateway limits request counts only")
    if quota.lower() == "eventcount":
        raise TranslationError(f"{what} limits event counts (streaming APIs); the gateway limits request counts only")
    if quota.lower() == "aiapiquota":
        return _ai_tier(policy, organization, metadata, what)
    if quota.lower() != "requestcount":
        raise TranslationError(f"{what} has quota type {quota!r}, which the gateway cannot enforce")
    counted = limit.request_count if limit else None
    burst = None
    if policy.rate_limit_count > 0 and policy.rate_limit_time_unit.strip().upper() not in ("", "NA"):
        burst = per_gateway_unit(policy.rate_limit_count, 1, policy.rate_limit_time_unit, f"{what}'s burst limit")
    if counted is None or counted.request_count <= 0 or counted.request_count >= MAX_COUNT:
        if burst is None:
            return None  # no quota the gateway needs to count
        request = None
    else:
        request = per_gateway_unit(counted.request_count, counted.unit_time, counted.time_unit, what)
    subscription: dict[str, Any] = {"organization": organization, "stopOnQuotaReach": policy.stop_on_quota_reach}
    if request is not None:
        subscription["requestCount"] = {"requestsPerUnit": request[0], "unit": request[1]}
    if burst is not None:
        subscription["burstControl"] = {"requestsPerUnit": burst[0], "unit": burst[1]}
    return {
        "apiVersion": RATE_LIMIT_VERSION,
        "kind": "RateLimitPolicy",
        "metadata": metadata,
        "spec": {"override": {"subscription": subscription}, "targetRef": dict(TIER_TARGET)},
    }


def _ai_tier(
    policy: CpSubscriptionPolicy, organization: str, metadata: dict[str, Any], what: str
) -> dict[str, Any] | None:
    quota = policy.default_limit.ai_api_quota if policy.default_limit else None
    if quota is None:
        raise TranslationError(f"{what} is an AI quota without its limits (defaultLimit.aiApiQuota)")
    override: dict[str, Any] = {"organization": organization}
    if quota.request_count and quota.request_count > 0:
        count, unit = per_gateway_unit(quota.request_count, quota.unit_time, quota.time_unit, what)
        override["requestCount"] = {"requestsPerUnit": count, "unit": unit}
    tokens = {
        "totalTokenCount": quota.total_token_count,
        "requestTokenCount": quota.prompt_token_count,
        "responseTokenCount": quota.completion_token_count,
    }
    tokens = {k: v for k, v in tokens.items() if v is not None and v > 0}
    if tokens:
        largest = max(tokens.values())
        _, unit = per_gateway_unit(largest, quota.unit_time, quota.time_unit, f"{what}'s token quota")
        if unit == "Second":
            raise TranslationError(
                f"{what} counts tokens per second; the gateway counts tokens per Minute, Hour or Day"
            )
        override["tokenCount"] = {**tokens, "unit": unit}
    if len(override) == 1:
        return None
    return {
        "apiVersion": AI_RATE_LIMIT_VERSION,
        "kind": "AIRateLimitPolicy",
        "metadata": metadata,
        "spec": {"override": override, "targetRef": dict(TIER_TARGET)},
    }


def desired_consumer_resources(
    state: ConsumerState, apis: dict[str, tuple[str, str]], options: ConsumerOptions
) -> ConsumerTranslation:
    """Every consumer resource of one organization, in apply order; an entity that cannot be
    translated is a problem line naming it, and the others go on."""
    org, out = state.organization, ConsumerTranslation()
    tiers, applications, subscriptions = [], [], []
    for policy in sorted(state.subscription_policies, key=lambda p: p.name):
        try:
            resource = tier_resource(policy, org, options)
        except TranslationError as exc:
            out.problems.append(str(exc))
            continue
        if resource is not None:
            tiers.append(resource)
    for app in sorted(state.applications, key=lambda a: a.uuid):
        try:
            applications.append(application_resource(app, state.key_mappings, org, options))
        except TranslationError as exc:
            out.problems.append(f"application {app.uuid}: {exc}")
    known = {a.uuid for a in state.applications} | {str(a.id) for a in state.applications if a.id is not None}
    for mapping in state.key_mappings:
        if mapping.application_uuid not in known and str(mapping.application_id) not in known:
            out.problems.append(
                f"key {mapping.consumer_key} names application {mapping.application_uuid or mapping.application_id}, "
                "which the control plane does not list"
            )
    for sub in sorted(state.subscriptions, key=lambda s: s.uuid):
        name, version = sub.api_name, sub.api_version
        if not (name and version) and sub.api_uuid in apis:
            name, version = apis[sub.api_uuid]
        if not (name and version):
            out.skipped.append(
                f"subscription {sub.uuid}: API {sub.api_uuid} is not deployed on this gateway and the control "
                "plane did not name it"
            )
            continue
        try:
            subscriptions.extend(subscription_resources(sub, name, version, org, options))
        except TranslationError as exc:
            out.problems.append(f"subscription {sub.uuid}: {exc}")
    order = {"Subscription": 0, "ApplicationMapping": 1}
    subscriptions.sort(key=lambda r: (order[r["kind"]], r["metadata"]["name"]))
    out.resources = tiers + applications + subscriptions
    return out
