"""Deterministic resource names and labels shared by the translator and the cluster activities.

Names must be stable across revisions of one API (so a new revision updates in place),
unique across APIs, and valid RFC 1123; the control plane's names are free text, so a
short hash of the organization and API UUID makes them unique and the rest is a readable slug.

ConfigMaps and Secrets are the exception: their names end in a digest of their content
(``content_addressed_name``), so that a new content is a new name, and so a change of the spec
that references it, which is what the gateway watches (their own content carries no generation).
"""

from __future__ import annotations

import hashlib
import re

LABEL_PREFIX = "gateway-agent.wso2.com"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "gateway-agent"
# Which agent owns a resource: its gateway id (GATEWAY_AGENT_GATEWAY_ID, else its first gateway
# label). Every listing and every apply is scoped by it, so two agents in one namespace never
# list, prune or take over each other's resources.
GATEWAY_ID_LABEL = "gateway-agent.wso2.com/gateway-id"
DEFAULT_GATEWAY_ID = "Default"
MAX_FIELD_MANAGER = 128  # the API server's limit
API_KEY_LABEL = f"{LABEL_PREFIX}/api"  # selects every resource of one API
API_UUID_LABEL = f"{LABEL_PREFIX}/api-uuid"
REVISION_LABEL = f"{LABEL_PREFIX}/revision"
# APK's own translator labels resources with sha1 hex of these values.
APK_API_NAME_LABEL = "api-name"
APK_API_VERSION_LABEL = "api-version"
APK_ORGANIZATION_LABEL = "organization"
API_NAME_ANNOTATION = f"{LABEL_PREFIX}/api-name"
API_VERSION_ANNOTATION = f"{LABEL_PREFIX}/api-version"
ORGANIZATION_ANNOTATION = f"{LABEL_PREFIX}/organization"
CONFIG_HASH_ANNOTATION = f"{LABEL_PREFIX}/config-hash"

MAX_NAME = 253
_SLUG_BUDGET = 40
CONTENT_HASH_LENGTH = 10  # hex digits of the content suffix of ConfigMap and Secret names
_HEX = re.compile(r"^[0-9a-f]+$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def sha1_hex(value: str) -> str:
    return hashlib.sha1(value.encode("utf-8")).hexdigest()


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:length]


def slug(value: str, budget: int = _SLUG_BUDGET) -> str:
    """Lowercase RFC 1123 fragment of free text; may be empty."""
    text = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return text[:budget].strip("-")


def api_key(organization: str, api_uuid: str) -> str:
    """The label value that selects every resource of one API (org + UUID)."""
    return short_hash(organization, api_uuid, length=40)


def api_base_name(organization: str, api_uuid: str, name: str, version: str) -> str:
    """Stable base name for an API's resources: ``<name>-<version>-<hash>``."""
    readable = "-".join(p for p in (slug(name, 30), slug(version, 15)) if p)
    suffix = short_hash(organization, api_uuid, length=10)
    return f"{readable}-{suffix}" if readable else f"api-{suffix}"


def child_name(base: str, *parts: str) -> str:
    """``<base>-<part>...``, kept within Kubernetes' name limit."""
    name = "-".join([base, *(slug(p, 60) or short_hash(p) for p in parts)])
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9].rstrip('-')}-{short_hash(name)}"
    return name


def content_addressed_name(name: str, digest: str) -> str:
    """``<name>-<digest[:10]>``: the name of an object whose name follows its content.

    ``digest`` is hex of a hash of the content (``translation.content_names``); a name too long for
    the suffix is shortened as ``child_name`` does, so distinct long names stay distinct.
    """
    suffix = digest[:CONTENT_HASH_LENGTH]
    if len(suffix) != CONTENT_HASH_LENGTH or not _HEX.match(suffix):
        raise ValueError(f"a content digest is {CONTENT_HASH_LENGTH} or more lowercase hex digits, not {digest!r}")
    if len(name) + 1 + len(suffix) > MAX_NAME:
        name = f"{name[: MAX_NAME - 1 - len(suffix) - 9].rstrip('-')}-{short_hash(name)}"
    return f"{name}-{suffix}"


def label_value(value: str) -> str:
    """``value`` if it is a valid label value, else its sha1 hex (40 chars)."""
    if len(value) <= 63 and _LABEL_VALUE.match(value):
        return value
    return sha1_hex(value)


def owner_labels(gateway_id: str) -> dict[str, str]:
    """The labels of every resource the agent of ``gateway_id`` owns."""
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, GATEWAY_ID_LABEL: label_value(gateway_id)}


def owner_selector(gateway_id: str) -> str:
    """Selects every resource the agent of ``gateway_id`` owns (and nothing of another agent)."""
    return ",".join(f"{k}={v}" for k, v in owner_labels(gateway_id).items())


def field_manager(gateway_id: str) -> str:
    """The server-side-apply field manager of the agent of ``gateway_id``: ``gateway-agent/<id>``."""
    return f"{MANAGED_BY_VALUE}/{label_value(gateway_id)}"[:MAX_FIELD_MANAGER]


def api_labels(
    organization: str, api_uuid: str, name: str, version: str, revision: str, gateway_id: str = DEFAULT_GATEWAY_ID
) -> dict[str, str]:
    """Labels that tie a resource to its agent, API, organization and revision."""
    return {
        **owner_labels(gateway_id),
        API_KEY_LABEL: api_key(organization, api_uuid),
        API_UUID_LABEL: label_value(api_uuid),
        REVISION_LABEL: label_value(revision or "0"),
        APK_API_NAME_LABEL: sha1_hex(name),
        APK_API_VERSION_LABEL: sha1_hex(version),
        APK_ORGANIZATION_LABEL: sha1_hex(organization),
    }


def api_selector(organization: str, api_uuid: str, gateway_id: str = DEFAULT_GATEWAY_ID) -> str:
    return f"{owner_selector(gateway_id)},{API_KEY_LABEL}={api_key(organization, api_uuid)}"


def keyed_child_name(base: str, kind: str, key: str) -> str:
    """``<base>-<kind>-<slug>-<hash>`` for one object per distinct free-text ``key`` (a scope, an operation).

    The hash keeps keys that slug alike apart (``order:write`` and ``order-write``); the name is stable
    for as long as the key exists, so a new revision updates the object in place.
    """
    readable = slug(key, 40)
    digest = short_hash(key)
    return child_name(base, kind, f"{readable}-{digest}" if readable else digest)


def operation_key(verb: str, target: str) -> str:
    """The text that identifies one operation of an API: ``GET /orders/{id}``."""
    return f"{verb.strip().upper()} {target.strip()}"


# Consumer resources (applications, subscriptions, their mappings, subscription tiers): what they are,
# which entity they stand for, and for which organization. A subscription's Subscription and its
# ApplicationMapping share the subscription UUID as key, so one selector finds both.
CONSUMER_LABEL = f"{LABEL_PREFIX}/consumer"
CONSUMER_KEY_LABEL = f"{LABEL_PREFIX}/consumer-key"  # label_value(UUID), or of a tier's name
CONSUMER_ORGANIZATION_LABEL = f"{LABEL_PREFIX}/organization-hash"  # sha1 hex of the organization
CONSUMER_NAME_ANNOTATION = f"{LABEL_PREFIX}/consumer-name"  # the readable application or tier name
CONSUMER_APPLICATION = "application"
CONSUMER_SUBSCRIPTION = "subscription"
CONSUMER_APPLICATION_MAPPING = "application-mapping"
CONSUMER_TIER = "tier"
CONSUMER_KIND_VALUES = (CONSUMER_APPLICATION, CONSUMER_SUBSCRIPTION, CONSUMER_APPLICATION_MAPPING, CONSUMER_TIER)


def consumer_labels(kind: str, key: str, organization: str, gateway_id: str = DEFAULT_GATEWAY_ID) -> dict[str, str]:
    """Labels of one consumer resource: its agent, ``kind`` (``CONSUMER_KIND_VALUES``), its entity
    ``key``, its organization."""
    if kind not in CONSUMER_KIND_VALUES:
        raise ValueError(f"consumer kind is one of {', '.join(CONSUMER_KIND_VALUES)}, not {kind!r}")
    return {
        **owner_labels(gateway_id),
        CONSUMER_LABEL: kind,
        CONSUMER_KEY_LABEL: label_value(key),
        CONSUMER_ORGANIZATION_LABEL: sha1_hex(organization),
    }


def consumer_selector(
    kind: str | None = None,
    key: str | None = None,
    *,
    organization: str | None = None,
    gateway_id: str = DEFAULT_GATEWAY_ID,
) -> str:
    """Selects the agent's consumer resources: all, those of one kind, of one entity key, of one
    organization, or any combination (never an API's resources: they carry no consumer label)."""
    parts = [owner_selector(gateway_id)]
    parts.append(f"{CONSUMER_LABEL}={kind}" if kind else CONSUMER_LABEL)
    if key is not None:
        parts.append(f"{CONSUMER_KEY_LABEL}={label_value(key)}")
    if organization is not None:
        parts.append(f"{CONSUMER_ORGANIZATION_LABEL}={sha1_hex(organization)}")
    return ",".join(parts)
