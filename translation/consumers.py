"""Consumers as gateway resources: applications, subscriptions, their mappings and subscription tiers.

Pure functions, deterministic to the byte, shaped as ``../shared/reference/applications-subscriptions.md``
section 3 says and as the CRDs in ``../shared/apk-crds`` validate. Names follow the older agent
(the application and subscription UUIDs, sha1 hex for mappings and tiers), so taking over from it
converges without churn.

- ``Application`` (cp.wso2.com/v1alpha2): its key mappings live inside it, one
  ``securitySchemes.oauth2.environments`` entry per consumer key and key type, ``envId`` equal to
  the API's ``spec.environment`` (``Default`` when the API sets none).
- ``Subscription`` (cp.wso2.com/v1alpha3) with ``ratelimitRef`` to its tier's resource, and an
  ``ApplicationMapping`` (cp.wso2.com/v1alpha2) only while the subscription passes traffic: some
  gateway builds ignore ``subscriptionStatus``, so a blocked subscription loses its mapping.
- A subscription tier's quota as a ``RateLimitPolicy`` (``override.subscription``) or, for AI
  quotas, an ``AIRateLimitPolicy``, converted exactly: the gateway counts per one Second, Minute,
  Hour or Day, so "100 per 5 minutes" cannot be expressed and is refused, never rounded.

Choices that differ from the reference, and why:

- ``ratelimitRef`` is always set, also for ``Unlimited`` (and an empty tier, taken as ``Unlimited``):
  the v1alpha3 CRD requires it. It names ``tier_resource_name("Unlimited", org)``, as the older
  agent does; no resource has that name, and a tier without a resource limits nothing.
- An AI tier's token limits come as a set of three (request, response, total): the gateway adds a
  limit for each, so one left out would be a limit of zero. A missing request or response limit
  is the total (implied by it), a missing total the sum of the other two, or ``MAX_COUNT``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.consumers import (
    KEY_TYPES,
    AiQuotaLimit,
    ConsumerState,
    CpApplication,
    CpKeyMapping,
    CpSubscription,
    CpSubscriptionPolicy,
)
from models.naming import (
    API_NAME_ANNOTATION,
    API_VERSION_ANNOTATION,
    CONSUMER_APPLICATION,
    CONSUMER_APPLICATION_MAPPING,
    CONSUMER_NAME_ANNOTATION,
    CONSUMER_SUBSCRIPTION,
    CONSUMER_TIER,
    DEFAULT_GATEWAY_ID,
    ORGANIZATION_ANNOTATION,
    consumer_labels,
    sha1_hex,
)
from translation.errors import TranslationError

__all__ = [
    "ConsumerOptions",
    "ConsumerTranslation",
    "application_resource",
    "desired_consumer_resources",
    "mapping_name",
    "per_gateway_unit",
    "subscription_resources",
    "tier_resource",
    "tier_resource_name",
]

APPLICATION_VERSION = "cp.wso2.com/v1alpha2"
SUBSCRIPTION_VERSION = "cp.wso2.com/v1alpha3"
MAPPING_VERSION = "cp.wso2.com/v1alpha2"
RATE_LIMIT_VERSION = "dp.wso2.com/v1alpha3"
AI_RATE_LIMIT_VERSION = "dp.wso2.com/v1alpha3"
UNLIMITED = "Unlimited"
DEFAULT_ENVIRONMENT = "Default"
RATE_LIMIT_LEVEL = "app"  # what the gateway's own control-plane deployer writes
# The gateway ignores a tier's targetRef; the CRD requires one.
TIER_TARGET = {"group": "gateway.networking.k8s.io", "kind": "Subscription", "name": "default"}
MAX_COUNT = 2**31 - 1  # the CRDs' int32 counts; a quota this large (or <= 0) limits nothing
# The gateway's units (its rate limiter's), largest first, in seconds; token counts have no Second.
GATEWAY_UNITS: tuple[tuple[str, int], ...] = (("Day", 86400), ("Hour", 3600), ("Minute", 60), ("Second", 1))
TOKEN_UNITS: tuple[tuple[str, int], ...] = GATEWAY_UNITS[:3]

_RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Every spelling of a time unit the control plane writes (matched case-insensitively), in seconds.
_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
}
# Units the control plane offers that no gateway unit equals.
_CALENDAR_UNITS = frozenset({"week", "weeks", "month", "months", "year", "years"})
_NO_BURST_UNITS = frozenset({"", "na", "none"})


class ConsumerOptions(BaseModel):
    """Where consumer resources go, and the environment the key mappings are for."""

    model_config = ConfigDict(frozen=True)

    application_namespace: str  # Applications, Subscriptions, ApplicationMappings
    tier_namespace: str  # RateLimitPolicies and AIRateLimitPolicies of subscription tiers
    # The ``envId`` of every key mapping: the API's ``spec.environment``, ``Default`` when it has none.
    environment: str = DEFAULT_ENVIRONMENT
    gateway_id: str = DEFAULT_GATEWAY_ID  # the agent whose resources these are (``owner_labels``)

    @field_validator("application_namespace", "tier_namespace")
    @classmethod
    def _namespace_is_dns_label(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL.match(value):
            raise ValueError(f"namespace {value!r} is not a valid Kubernetes namespace name")
        return value

    @field_validator("environment")
    @classmethod
    def _empty_is_default(cls, value: str) -> str:
        return value.strip() or DEFAULT_ENVIRONMENT


class ConsumerTranslation(BaseModel):
    """One organization's consumer resources in apply order (tiers, applications, subscriptions,
    mappings), and a line for each entity left out: ``problems`` could not be translated,
    ``skipped`` need not be (their API is not on this gateway)."""

    resources: list[dict[str, Any]] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)


def tier_resource_name(tier: str, organization: str) -> str:
    """The name of a subscription tier's resource, and of a Subscription's ``ratelimitRef``
    (surrounding whitespace is not part of a tier's name, on either side)."""
    return sha1_hex(f"{tier.strip()}-{organization}")


def mapping_name(application_uuid: str, subscription_uuid: str) -> str:
    """The name of the ApplicationMapping between an application and one of its subscriptions."""
    return sha1_hex(f"{application_uuid}:{subscription_uuid}")


def application_resource(
    app: CpApplication, mappings: Iterable[CpKeyMapping], organization: str, options: ConsumerOptions
) -> dict[str, Any]:
    """The ``Application`` with the consumer keys of those ``mappings`` that belong to it (by UUID,
    or by numeric id when a mapping has no UUID). Raises ``TranslationError`` for a UUID that cannot
    name an object and for a key type other than PRODUCTION or SANDBOX."""
    label = _application_label(app)
    name = _object_name(app.uuid, label)
    environments: dict[tuple[str, str, str], dict[str, str]] = {}
    for mapping in mappings:
        if not _belongs_to(mapping, app):
            continue
        if mapping.key_type not in KEY_TYPES:
            raise TranslationError(f"{label}: {_bad_key_type(mapping)}")
        entry = {"envId": options.environment, "appId": mapping.consumer_key, "keyType": mapping.key_type}
        environments[(entry["keyType"], entry["appId"], entry["envId"])] = entry
    spec: dict[str, Any] = {
        "name": app.name,
        "owner": app.owner,
        "organization": organization,
        "attributes": dict(sorted(app.attributes.items())),
    }
    if environments:
        spec["securitySchemes"] = {"oauth2": {"environments": [environments[k] for k in sorted(environments)]}}
    annotations = {CONSUMER_NAME_ANNOTATION: app.name} if app.name else {}
    return {
        "apiVersion": APPLICATION_VERSION,
        "kind": "Application",
        "metadata": _metadata(
            name, options.application_namespace, CONSUMER_APPLICATION, app.uuid, organization, annotations, options
        ),
        "spec": spec,
    }


def subscription_resources(
    sub: CpSubscription, api_name: str, api_version: str, organization: str, options: ConsumerOptions
) -> list[dict[str, Any]]:
    """The ``Subscription``, and its ``ApplicationMapping`` while the subscription is active
    (``CpSubscription.active``); an inactive one's mapping is absent, so the caller's prune removes it."""
    label = f"subscription {sub.uuid}"
    name = _object_name(sub.uuid, label)
    if not api_name.strip() or not api_version.strip():
        raise TranslationError(f"{label}: the name and version of its API {sub.api_uuid or '(no UUID)'} are unknown")
    tier = sub.policy.strip() or UNLIMITED
    api_annotations = {API_NAME_ANNOTATION: api_name, API_VERSION_ANNOTATION: api_version}
    resources: list[dict[str, Any]] = [
        {
            "apiVersion": SUBSCRIPTION_VERSION,
            "kind": "Subscription",
            "metadata": _metadata(
                name,
                options.application_namespace,
                CONSUMER_SUBSCRIPTION,
                sub.uuid,
                organization,
                api_annotations,
                options,
            ),
            "spec": {
                "organization": organization,
                "api": {"name": api_name, "version": api_version},
                "subscriptionStatus": sub.state,
                "ratelimitRef": {"name": tier_resource_name(tier, organization), "level": RATE_LIMIT_LEVEL},
            },
        }
    ]
    if sub.active:
        if not sub.application_uuid:
            raise TranslationError(f"{label} names no application (applicationUUID), so it cannot be mapped")
        resources.append(
            {
                "apiVersion": MAPPING_VERSION,
                "kind": "ApplicationMapping",
                "metadata": _metadata(
                    mapping_name(sub.application_uuid, sub.uuid),
                    options.application_namespace,
                    CONSUMER_APPLICATION_MAPPING,
                    sub.uuid,
                    organization,
                    api_annotations,
                    options,
                ),
                "spec": {"applicationRef": sub.application_uuid, "subscriptionRef": sub.uuid},
            }
        )
    return resources


def per_gateway_unit(
    count: int,
    unit_time: int,
    time_unit: str,
    what: str,
    *,
    noun: str = "requests",
    units: tuple[tuple[str, int], ...] = GATEWAY_UNITS,
) -> tuple[int, str]:
    """``count`` per ``unit_time`` ``time_unit`` as ``(count, unit)`` per one gateway unit, exactly.

    Exact means the window is one gateway unit: ``unit_time`` 1, or a window equal to one larger
    unit (60 sec = 1 Minute, 24 hours = 1 Day). Anything else raises ``TranslationError``: the
    gateway counts in fixed windows of one unit, so 100 per 5 minutes is neither 20 nor 100 per minute.
    """
    spelled = (time_unit or "").strip().lower()
    window = f"{time_unit}" if unit_time == 1 else f"{unit_time} {time_unit}"
    unit_names = ", ".join(name for name, _ in units[::-1][:-1]) + f" or {units[0][0]}"
    refusal = (
        f"{what} allows {count} {noun} per {window}; the gateway counts per {unit_names}, "
        "so this window cannot be expressed exactly"
    )
    if spelled in _CALENDAR_UNITS:
        raise TranslationError(refusal)
    seconds_per_unit = _UNIT_SECONDS.get(spelled)
    if seconds_per_unit is None:
        raise TranslationError(
            f"{what} counts per {time_unit!r}, which is not a unit of time this agent knows (sec, min, hour, day)"
        )
    if unit_time < 1:
        raise TranslationError(f"{what} counts per {unit_time} {time_unit}; a window is at least one unit long")
    seconds = unit_time * seconds_per_unit
    for unit, unit_seconds in units:
        if seconds == unit_seconds:
            return count, unit
    raise TranslationError(refusal)


def tier_resource(policy: CpSubscriptionPolicy, organization: str, options: ConsumerOptions) -> dict[str, Any] | None:
    """The tier's ``RateLimitPolicy`` (or ``AIRateLimitPolicy`` for an AI quota); None when it limits
    nothing (``Unlimited``, or a request count <= 0 or >= 2**31-1 without a burst limit).

    Raises ``TranslationError`` for a quota the gateway cannot count (bandwidth, events) and for a
    window no gateway unit equals (``per_gateway_unit``).
    """
    name = policy.name.strip()
    what = f"subscription tier {name!r}"
    if name.lower() == UNLIMITED.lower():
        return None
    metadata = _metadata(
        tier_resource_name(name, organization),
        options.tier_namespace,
        CONSUMER_TIER,
        name,
        organization,
        {CONSUMER_NAME_ANNOTATION: name},
        options,
    )
    quota = _quota_type(policy)
    if quota in ("bandwidth", "bandwidthvolume"):
        raise TranslationError(
            f"{what} has a bandwidth quota (data volume per time); the gateway limits request counts only"
        )
    if quota == "eventcount":
        raise TranslationError(
            f"{what} has an eventCount quota (events of streaming APIs); the gateway limits request counts only"
        )
    if quota == "aiapiquota":
        return _ai_tier(policy, organization, metadata, what)
    if quota != "requestcount":
        raise TranslationError(f"{what} has quota type {quota!r}, which the gateway cannot enforce")
    counted = policy.default_limit.request_count if policy.default_limit else None
    if counted is None:
        raise TranslationError(f"{what} is a requestCount quota without its limit (defaultLimit.requestCount)")
    burst = None
    if 0 < policy.rate_limit_count < MAX_COUNT and policy.rate_limit_time_unit.strip().lower() not in _NO_BURST_UNITS:
        burst = per_gateway_unit(policy.rate_limit_count, 1, policy.rate_limit_time_unit, f"{what}'s burst limit")
    if 0 < counted.request_count < MAX_COUNT:
        count, unit = per_gateway_unit(counted.request_count, counted.unit_time, counted.time_unit, what)
    elif burst is not None:
        # The gateway takes a tier only with a request count: the largest count, i.e. no quota.
        count, unit = MAX_COUNT, burst[1]
    else:
        return None
    subscription: dict[str, Any] = {"organization": organization, "stopOnQuotaReach": policy.stop_on_quota_reach}
    subscription["requestCount"] = {"requestsPerUnit": count, "unit": unit}
    if burst is not None:
        subscription["burstControl"] = {"requestsPerUnit": burst[0], "unit": burst[1]}
    return {
        "apiVersion": RATE_LIMIT_VERSION,
        "kind": "RateLimitPolicy",
        "metadata": metadata,
        "spec": {"override": {"subscription": subscription}, "targetRef": dict(TIER_TARGET)},
    }


def desired_consumer_resources(
    state: ConsumerState, apis: dict[str, tuple[str, str]], options: ConsumerOptions
) -> ConsumerTranslation:
    """Every consumer resource of ``state.organization``, in apply order: tiers, applications,
    subscriptions, mappings.

    ``apis`` maps an API UUID to its (name, version) for subscriptions whose item does not name its
    API; one named neither way is skipped. An entity that cannot be translated (and a key mapping of
    an application the control plane does not list) is a problem line naming it; the rest goes on.
    The output does not depend on the order of the input lists.
    """
    org = state.organization
    problems: list[str] = []
    skipped: list[str] = []
    tiers: list[dict[str, Any]] = []
    for policy in _unique(state.subscription_policies, lambda p: p.name):
        try:
            resource = tier_resource(policy, org, options)
        except TranslationError as exc:
            problems.append(exc.message)
            continue
        if resource is not None:
            tiers.append(resource)

    applications = _unique(state.applications, lambda a: a.uuid)
    by_uuid = {a.uuid: a for a in applications}
    by_id: dict[int, CpApplication] = {}
    for app in applications:
        if app.id is not None:
            by_id.setdefault(app.id, app)
    keys: dict[str, list[CpKeyMapping]] = {a.uuid: [] for a in applications}
    for mapping in _unique(state.key_mappings, _key_mapping_key):
        if mapping.application_uuid:
            owner = by_uuid.get(mapping.application_uuid)
        else:
            owner = by_id.get(mapping.application_id) if mapping.application_id is not None else None
        if owner is None:
            problems.append(
                f"key mapping {mapping.consumer_key!r} ({mapping.key_type}) names application "
                f"{mapping.application_uuid or mapping.application_id}, which the control plane does not list "
                f"for organization {org!r}"
            )
        elif mapping.key_type not in KEY_TYPES:
            problems.append(f"{_application_label(owner)}: {_bad_key_type(mapping)}")
        else:
            keys[owner.uuid].append(mapping)
    application_objects: list[dict[str, Any]] = []
    for app in applications:
        try:
            application_objects.append(application_resource(app, keys[app.uuid], org, options))
        except TranslationError as exc:
            problems.append(exc.message)

    subscription_objects: list[dict[str, Any]] = []
    mapping_objects: list[dict[str, Any]] = []
    for sub in _unique(state.subscriptions, lambda s: s.uuid):
        name, version = sub.api_name, sub.api_version
        if not (name and version) and sub.api_uuid in apis:
            name, version = apis[sub.api_uuid]
        if not (name and version):
            skipped.append(
                f"subscription {sub.uuid}: API {sub.api_uuid or sub.api_id} is not deployed on this gateway and "
                "the control plane did not name it"
            )
            continue
        if not sub.application_uuid and sub.application_id is not None and sub.application_id in by_id:
            sub = sub.model_copy(update={"application_uuid": by_id[sub.application_id].uuid})
        try:
            objects = subscription_resources(sub, name, version, org, options)
        except TranslationError as exc:
            problems.append(exc.message)
            continue
        subscription_objects.extend(o for o in objects if o["kind"] == "Subscription")
        mapping_objects.extend(o for o in objects if o["kind"] == "ApplicationMapping")

    tier_order = {"RateLimitPolicy": 0, "AIRateLimitPolicy": 1}
    tiers.sort(key=lambda r: (tier_order[r["kind"]], r["metadata"]["name"]))
    resources = [
        *tiers,
        *sorted(application_objects, key=_name),
        *sorted(subscription_objects, key=_name),
        *sorted(mapping_objects, key=_name),
    ]
    return ConsumerTranslation(resources=resources, problems=problems, skipped=skipped)


def _ai_tier(
    policy: CpSubscriptionPolicy, organization: str, metadata: dict[str, Any], what: str
) -> dict[str, Any] | None:
    quota = policy.default_limit.ai_api_quota if policy.default_limit else None
    if quota is None:
        raise TranslationError(f"{what} is an aiApiQuota without its limits (defaultLimit.aiApiQuota)")
    override: dict[str, Any] = {"organization": organization}
    if quota.request_count is not None and 0 < quota.request_count < MAX_COUNT:
        count, unit = per_gateway_unit(quota.request_count, quota.unit_time, quota.time_unit, what)
        override["requestCount"] = {"requestsPerUnit": count, "unit": unit}
    tokens = _token_limits(quota)
    if tokens is not None:
        _, unit = per_gateway_unit(
            tokens["totalTokenCount"],
            quota.unit_time,
            quota.time_unit,
            f"{what}'s token quota",
            noun="tokens",
            units=TOKEN_UNITS,
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


def _token_limits(quota: AiQuotaLimit) -> dict[str, int] | None:
    """The three token limits the gateway needs, or None when no token count is limited."""

    def limit(value: int | None) -> int | None:
        return value if value is not None and 0 < value < MAX_COUNT else None

    total = limit(quota.total_token_count)
    prompt = limit(quota.prompt_token_count)
    completion = limit(quota.completion_token_count)
    if total is None and prompt is None and completion is None:
        return None
    if total is None:
        total = min(prompt + completion, MAX_COUNT) if prompt is not None and completion is not None else MAX_COUNT
    return {
        "requestTokenCount": prompt if prompt is not None else total,
        "responseTokenCount": completion if completion is not None else total,
        "totalTokenCount": total,
    }


def _quota_type(policy: CpSubscriptionPolicy) -> str:
    """The tier's quota type, lowercased; from the limit's members when the control plane names none."""
    limit = policy.default_limit
    named = ((limit.quota_type if limit else "") or policy.quota_type).strip()
    if named:
        return re.sub(r"[^a-z]", "", named.lower())
    if limit is not None:
        for member, quota in (
            (limit.ai_api_quota, "aiapiquota"),
            (limit.bandwidth, "bandwidth"),
            (limit.event_count, "eventcount"),
        ):
            if member is not None:
                return quota
    return "requestcount"


def _metadata(
    name: str,
    namespace: str,
    kind: str,
    key: str,
    organization: str,
    annotations: dict[str, str],
    options: ConsumerOptions,
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": consumer_labels(kind, key, organization, options.gateway_id),
        "annotations": {ORGANIZATION_ANNOTATION: organization, **annotations},
    }


def _object_name(value: str, label: str) -> str:
    if len(value) > 253 or not _RFC1123.match(value):
        raise TranslationError(
            f"{label}: {value!r} cannot name a Kubernetes object (lowercase letters, digits, '-' and '.' only)"
        )
    return value


def _belongs_to(mapping: CpKeyMapping, app: CpApplication) -> bool:
    if mapping.application_uuid:
        return mapping.application_uuid == app.uuid
    return app.id is not None and mapping.application_id == app.id


def _application_label(app: CpApplication) -> str:
    return f"application {app.uuid}" + (f" ({app.name!r})" if app.name else "")


def _bad_key_type(mapping: CpKeyMapping) -> str:
    return (
        f"key mapping {mapping.consumer_key!r} has key type {mapping.key_type!r}; "
        f"the gateway knows {' and '.join(KEY_TYPES)}"
    )


def _unique(items: Iterable[Any], key: Any) -> list[Any]:
    """One item per key, sorted by key; of items listed twice, the first by content (any input order)."""
    ordered = sorted(items, key=lambda item: (key(item), item.model_dump_json()))
    seen: set[Any] = set()
    result = []
    for item in ordered:
        if key(item) not in seen:
            seen.add(key(item))
            result.append(item)
    return result


def _key_mapping_key(mapping: CpKeyMapping) -> tuple[str, int, str, str]:
    return (mapping.application_uuid, mapping.application_id or 0, mapping.key_type, mapping.consumer_key)


def _name(resource: dict[str, Any]) -> str:
    return resource["metadata"]["name"]
