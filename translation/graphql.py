"""GraphQL operations as ``GQLRoute`` (dp.wso2.com/v1alpha2) rules.

An operation's target is a root field name and its verb the operation type. APK 1.3's
GQLRoute CRD accepts match types ``QUERY`` and ``MUTATION`` only, so an API with subscriptions
cannot be served and is refused rather than deployed without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.artifact import Operation
from translation.errors import TranslationError

GQL_MATCH_TYPES = ("QUERY", "MUTATION")


def gql_route_rules(
    operations: Sequence[Operation],
    *,
    api_label: str,
    no_auth_filter: dict[str, Any] | None,
    extension_refs: Sequence[Sequence[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """One rule per operation, in artifact order; unsecured operations get ``no_auth_filter``.

    ``extension_refs`` (one list per operation) are the field's Scope, RateLimitPolicy and APIPolicy
    references; a GQLRoute filter is an ``extensionRef`` and nothing else.
    """
    subscriptions = sorted({o.target for o in operations if o.verb.strip().upper() == "SUBSCRIPTION"})
    if subscriptions:
        raise TranslationError(
            f"{api_label} has SUBSCRIPTION operations ({', '.join(subscriptions)}); the gateway's GQLRoute "
            f"(dp.wso2.com/v1alpha2) matches {' and '.join(GQL_MATCH_TYPES)} only. Remove the subscriptions "
            "from the API or deploy it to another gateway"
        )
    rules: list[dict[str, Any]] = []
    extras = list(extension_refs) if extension_refs is not None else [[] for _ in operations]
    for operation, extra in zip(operations, extras, strict=True):
        match_type = operation.verb.strip().upper()
        field = operation.target.strip()
        if match_type not in GQL_MATCH_TYPES:
            raise TranslationError(
                f"{api_label} has GraphQL operation {operation.verb} {operation.target}; "
                f"operation types are {', '.join(GQL_MATCH_TYPES)}"
            )
        if not field:
            raise TranslationError(f"{api_label} has a {match_type} operation without a field name")
        rule: dict[str, Any] = {"matches": [{"type": match_type, "path": field}]}
        filters = [{"extensionRef": dict(no_auth_filter)}] if operation.is_unsecured and no_auth_filter else []
        filters.extend({"extensionRef": dict(ref)} for ref in extra)
        if filters:
            rule["filters"] = filters
        rules.append(rule)
    return rules
