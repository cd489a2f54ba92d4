"""The Kubernetes kinds the agent writes, in the order they are applied."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ResourceKind(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_version: str
    kind: str

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""


# Dependencies first: what a route references exists before the route, and the API
# (the anchor the gateway reconciles from) comes last. Deletion goes the other way.
MANAGED_KINDS: tuple[ResourceKind, ...] = tuple(
    ResourceKind(api_version=v, kind=k)
    for v, k in (
        ("v1", "Secret"),
        ("v1", "ConfigMap"),
        ("dp.wso2.com/v1alpha2", "Backend"),
        ("dp.wso2.com/v1alpha1", "Scope"),
        ("dp.wso2.com/v1alpha3", "RateLimitPolicy"),
        ("dp.wso2.com/v1alpha1", "InterceptorService"),
        ("dp.wso2.com/v1alpha4", "APIPolicy"),
        ("dp.wso2.com/v1alpha2", "Authentication"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("dp.wso2.com/v1alpha2", "GQLRoute"),
        ("dp.wso2.com/v1alpha3", "API"),
    )
)
_ORDER = {k.kind: i for i, k in enumerate(MANAGED_KINDS)}

# The consumer resources, in apply order: tiers, applications, subscriptions, their mappings
# (a mapping is reconciled once both ends exist). Tiers are RateLimitPolicies (above) or:
CONSUMER_KINDS: tuple[ResourceKind, ...] = tuple(
    ResourceKind(api_version=v, kind=k)
    for v, k in (
        ("dp.wso2.com/v1alpha3", "RateLimitPolicy"),
        ("dp.wso2.com/v1alpha3", "AIRateLimitPolicy"),
        ("cp.wso2.com/v1alpha2", "Application"),
        ("cp.wso2.com/v1alpha3", "Subscription"),
        ("cp.wso2.com/v1alpha2", "ApplicationMapping"),
    )
)
_CONSUMER_ORDER = {k.kind: i for i, k in enumerate(CONSUMER_KINDS)}
TIER_KINDS = frozenset({"RateLimitPolicy", "AIRateLimitPolicy"})


def known_kind(kind: str) -> ResourceKind:
    """The API version the agent writes ``kind`` in (API or consumer resources)."""
    for spec in (*MANAGED_KINDS, *CONSUMER_KINDS):
        if spec.kind == kind:
            return spec
    raise ValueError(f"the agent does not manage kind {kind!r}")


def sort_consumers(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consumer resources in apply order (reverse it to delete)."""
    return sorted(resources, key=lambda r: (_CONSUMER_ORDER[r["kind"]], r["metadata"]["name"]))


def apply_rank(resource: dict[str, Any]) -> int:
    """Position of a resource's kind in apply order; unknown kinds are a programming error."""
    try:
        return _ORDER[resource["kind"]]
    except KeyError as exc:
        raise ValueError(f"the agent does not manage kind {resource.get('kind')!r}") from exc


def sort_for_apply(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(resources, key=lambda r: (apply_rank(r), r["metadata"]["name"]))


def resource_id(resource: dict[str, Any]) -> str:
    """``Kind/name``: identity of a resource within the agent's namespace."""
    return f"{resource['kind']}/{resource['metadata']['name']}"
