"""Scopes, rate limits, CORS and operation policies as the gateway's policy resources.

What each control-plane setting becomes, after APK's own translator (``APIClient.bal``) and the
APIM-to-APK agent (``apim-apk-agent/pkg/transformer``):

- An operation's ``scopes``: one ``Scope`` (dp.wso2.com/v1alpha1) per scope name, shared by the
  operations that use it, each referenced from the rule by an ``ExtensionRef`` filter (any one of
  the scopes grants access, as in APIM).
- ``apiThrottlingPolicy``: a ``RateLimitPolicy`` (dp.wso2.com/v1alpha3) targeting the API. Without
  it, each operation's ``throttlingPolicy`` becomes a ``RateLimitPolicy`` targeting the API's
  resources, referenced from the operation's rule. An API-level policy replaces the operations'
  ones (APIM's "API level" mode; APK refuses both at once). ``Unlimited`` means no policy.
- an API-level ``APIPolicy`` (dp.wso2.com/v1alpha4) with ``subscriptionValidation: true`` (only subscribed
  applications pass), and ``corsConfiguration`` (when enabled) as its ``cORSPolicy``
  targeting the API.
- Operation policies: ``addHeader``/``removeHeader`` become the rule's ``RequestHeaderModifier`` /
  ``ResponseHeaderModifier`` filters; ``callInterceptorService`` (or the apk-conf ``Interceptor``
  form) becomes an ``InterceptorService``
  (dp.wso2.com/v1alpha1) with its own ``Backend``, named from an ``APIPolicy`` the rule references.

Choices that differ from APK, and why:

- Tier limits are not looked up on the control plane (the translator does no I/O): APIM's
  default API-level tiers are known here, other tiers come from ``TranslationOptions`` or the
  deployment fails naming the tier, rather than deploying without the limit.
- Names derive from the scope name or the operation (verb and target), not from counters or
  random UUIDs, so objects stay put across revisions.
- API-level operation policies (``apiPolicies``) are applied to every operation, before the
  operation's own; APK's agent sends them as an API-level APIPolicy, which carries no headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.artifact import ApiData, Operation, OperationPolicy, PolicySpecification
from models.naming import child_name, keyed_child_name, operation_key
from translation.certificates import EndpointCertificates
from translation.endpoints import backend_spec, redacted_url
from translation.errors import TranslationError

DP_GROUP = "dp.wso2.com"
GATEWAY_GROUP = "gateway.networking.k8s.io"
SCOPE_VERSION = "dp.wso2.com/v1alpha1"
RATE_LIMIT_VERSION = "dp.wso2.com/v1alpha3"
API_POLICY_VERSION = "dp.wso2.com/v1alpha4"
INTERCEPTOR_VERSION = "dp.wso2.com/v1alpha1"
BACKEND_VERSION = "dp.wso2.com/v1alpha2"
UNLIMITED = "Unlimited"
RATE_LIMIT_UNITS = ("Minute", "Hour", "Day")  # the RateLimitPolicy CRD's enum: no Second
# APIM's default API-level ("advanced") throttling tiers.
DEFAULT_RATE_LIMIT_TIERS: Mapping[str, tuple[int, str]] = {
    "10KPerMin": (10_000, "Minute"),
    "20KPerMin": (20_000, "Minute"),
    "50KPerMin": (50_000, "Minute"),
}
MAX_FILTERS_PER_RULE = 16
HEADER_POLICIES = ("addHeader", "removeHeader")
# APIM's policy (interceptorServiceURL, includes) and the apk-conf form APK's agent writes
# (backendUrl, headersEnabled, bodyEnabled, trailersEnabled, contextEnabled).
INTERCEPTOR_POLICIES = ("callInterceptorService", "Interceptor")
_INCLUDE_FLAGS = (("headersEnabled", "headers"), ("bodyEnabled", "body"), ("trailersEnabled", "trailers"))
_INTERCEPTOR_INCLUDES = {
    "request": ("request_headers", "request_body", "request_trailers", "invocation_context"),
    "response": ("response_headers", "response_body", "response_trailers", "invocation_context"),
}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}$")
_MAX_HEADER_VALUE = 4096


@dataclass
class OperationFilters:
    """What one operation adds to its route rule, in HTTPRoute filter form."""

    filters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def extension_refs(self) -> list[dict[str, Any]]:
        return [f["extensionRef"] for f in self.filters if f["type"] == "ExtensionRef"]

    @property
    def route_filters(self) -> list[dict[str, Any]]:
        return [f for f in self.filters if f["type"] != "ExtensionRef"]


class PolicyTranslator:
    """Builds the policy objects of one API; ``objects`` holds every object built so far, by name."""

    def __init__(
        self,
        data: ApiData,
        *,
        base: str,
        label: str,
        api_type: str,
        metadata: Callable[[str], dict[str, Any]],
        rate_limit_tiers: Mapping[str, tuple[int, str]],
        endpoint_certificates: EndpointCertificates,
    ) -> None:
        self._data = data
        self._base = base
        self._label = label
        self._api_type = api_type
        self._metadata = metadata
        self._tiers = rate_limit_tiers
        self._certificates = endpoint_certificates
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def api_level(self) -> None:
        """The API-level rate limit (if any) and APIPolicy: subscription validation, and CORS if enabled."""
        data = self._data
        if data.max_tps is not None and (data.max_tps.production is not None or data.max_tps.sandbox is not None):
            pairs = (("production", data.max_tps.production), ("sandbox", data.max_tps.sandbox))
            limits = ", ".join(f"{kind} {value}" for kind, value in pairs if value is not None)
            raise TranslationError(
                f"{self._label} sets maxTps ({limits} requests per second to the backend); the gateway's "
                f"RateLimitPolicy ({RATE_LIMIT_VERSION}) counts per {', '.join(RATE_LIMIT_UNITS)} only and has no "
                "backend-level limit, so the limit cannot be enforced. Remove the backend throughput limit"
            )
        limit = self._rate_limit(data.api_throttling_policy, "API-level")
        if limit is not None:
            self._add(
                {
                    "apiVersion": RATE_LIMIT_VERSION,
                    "kind": "RateLimitPolicy",
                    "metadata": self._metadata(child_name(self._base, "ratelimit")),
                    "spec": {
                        "default": {"api": limit},
                        "targetRef": {"group": GATEWAY_GROUP, "kind": "API", "name": self._base},
                    },
                }
            )
        # Only subscribed applications pass: without this, any valid token does (APK's default).
        default: dict[str, Any] = {"subscriptionValidation": True}
        cors = data.cors_configuration
        if cors is not None and cors.cors_configuration_enabled:
            policy: dict[str, Any] = {
                "enabled": True,
                "accessControlAllowCredentials": cors.access_control_allow_credentials,
            }
            for key, values in (
                ("accessControlAllowHeaders", cors.access_control_allow_headers),
                ("accessControlAllowMethods", cors.access_control_allow_methods),
                ("accessControlAllowOrigins", cors.access_control_allow_origins),
            ):
                if values:
                    policy[key] = list(values)
            default["cORSPolicy"] = policy
        self._add(
            {
                "apiVersion": API_POLICY_VERSION,
                "kind": "APIPolicy",
                "metadata": self._metadata(child_name(self._base, "api-policy")),
                "spec": {
                    "default": default,
                    "targetRef": {"group": DP_GROUP, "kind": "API", "name": self._base},
                },
            }
        )

    def for_operation(self, operation: Operation) -> OperationFilters:
        """The filters ``operation``'s rule needs (and the objects they reference, into ``objects``)."""
        key = operation_key(operation.verb, operation.target)
        where = f"{self._label}: operation {key}"
        result = OperationFilters()
        self._header_filters(operation, where, result)
        for scope in dict.fromkeys(s.strip() for s in operation.scopes if s and s.strip()):
            name = keyed_child_name(self._base, "scope", scope)
            self._add(
                {
                    "apiVersion": SCOPE_VERSION,
                    "kind": "Scope",
                    "metadata": self._metadata(name),
                    "spec": {"names": [scope]},
                }
            )
            result.filters.append(_extension_ref("Scope", name))
        if not (self._data.api_throttling_policy or "").strip():
            limit = self._rate_limit(operation.throttling_policy, f"operation {key}")
            if limit is not None:
                name = keyed_child_name(self._base, "ratelimit", key)
                self._add(
                    {
                        "apiVersion": RATE_LIMIT_VERSION,
                        "kind": "RateLimitPolicy",
                        "metadata": self._metadata(name),
                        "spec": {
                            "default": {"api": limit},
                            "targetRef": {"group": DP_GROUP, "kind": "Resource", "name": self._base},
                        },
                    }
                )
                result.filters.append(_extension_ref("RateLimitPolicy", name))
        interceptors = self._interceptors(operation, key, where)
        if interceptors:
            name = keyed_child_name(self._base, "policy", key)
            self._add(
                {
                    "apiVersion": API_POLICY_VERSION,
                    "kind": "APIPolicy",
                    "metadata": self._metadata(name),
                    "spec": {
                        "default": interceptors,
                        "targetRef": {"group": DP_GROUP, "kind": "Resource", "name": self._base},
                    },
                }
            )
            result.filters.append(_extension_ref("APIPolicy", name))
        if self._api_type == "GraphQL" and result.route_filters:
            raise TranslationError(
                f"{where}: header policies cannot be applied to a GraphQL field by the gateway "
                "(GQLRoute rules accept extension references only); remove them from the operation"
            )
        if len(result.filters) + 2 > MAX_FILTERS_PER_RULE:  # room for the rewrite and the no-auth reference
            raise TranslationError(
                f"{where} needs {len(result.filters) + 2} route filters (scopes, policies); "
                f"a gateway route rule takes at most {MAX_FILTERS_PER_RULE}"
            )
        return result

    def _policies(self, operation: Operation, flow: str) -> list[OperationPolicy]:
        api_level = getattr(self._data.api_policies, flow, []) if self._data.api_policies else []
        own = getattr(operation.operation_policies, flow, []) if operation.operation_policies else []
        return [*api_level, *own]

    def _header_filters(self, operation: Operation, where: str, result: OperationFilters) -> None:
        fault = self._policies(operation, "fault")
        if fault:
            raise TranslationError(
                f"{where}: fault policy {_policy_label(fault[0])} has no equivalent in the gateway "
                "(it runs no policies on the fault flow); remove it"
            )
        for flow, filter_type, field_name in (
            ("request", "RequestHeaderModifier", "requestHeaderModifier"),
            ("response", "ResponseHeaderModifier", "responseHeaderModifier"),
        ):
            set_headers: dict[str, dict[str, str]] = {}
            removed: dict[str, str] = {}
            for policy in self._policies(operation, flow):
                name = policy.policy_name.strip()
                if name in INTERCEPTOR_POLICIES:
                    continue
                if name not in HEADER_POLICIES:
                    raise TranslationError(f"{where}: policy {_policy_label(policy)} has no equivalent in the gateway")
                header = _parameter(policy, "headerName", where)
                if not _HEADER_NAME.match(header):
                    raise TranslationError(
                        f"{where}: policy {_policy_label(policy)} names header {header!r}, "
                        "which is not a valid HTTP header name"
                    )
                folded = header.lower()
                if name == "addHeader":
                    value = _parameter(policy, "headerValue", where, allow_empty=True)
                    if len(value) > _MAX_HEADER_VALUE:
                        raise TranslationError(
                            f"{where}: policy {_policy_label(policy)} sets a header value longer than "
                            f"{_MAX_HEADER_VALUE} characters"
                        )
                    removed.pop(folded, None)
                    set_headers[folded] = {"name": header, "value": value}
                else:
                    set_headers.pop(folded, None)
                    removed[folded] = header
            if not set_headers and not removed:
                continue
            modifier: dict[str, Any] = {}
            if set_headers:
                modifier["set"] = list(set_headers.values())
            if removed:
                modifier["remove"] = list(removed.values())
            if any(len(v) > 16 for v in modifier.values()):
                raise TranslationError(f"{where} modifies more than 16 {flow} headers; the gateway takes at most 16")
            result.filters.append({"type": filter_type, field_name: modifier})

    def _interceptors(self, operation: Operation, key: str, where: str) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        for flow in ("request", "response"):
            calls = [p for p in self._policies(operation, flow) if p.policy_name.strip() in INTERCEPTOR_POLICIES]
            if len(calls) > 1:
                raise TranslationError(
                    f"{where} calls {len(calls)} {flow} interceptor services; the gateway calls one per flow"
                )
            if not calls:
                continue
            policy = calls[0]
            if policy.policy_name.strip() == "Interceptor":
                url = _parameter(policy, "backendUrl", where)
                includes = [f"{flow}_{part}" for flag, part in _INCLUDE_FLAGS if policy.parameters.get(flag) is True]
                if policy.parameters.get("contextEnabled") is True:
                    includes.append("invocation_context")
            else:
                url = _parameter(policy, "interceptorServiceURL", where)
                includes = policy.parameters.get("includes") or []
                if isinstance(includes, str):
                    includes = [i.strip() for i in includes.split(",") if i.strip()]
                # As APK's agent reads it: the part (headers, body, trailers) counts, whatever the flow prefix.
                includes = [
                    f"{flow}_{i.split('_', 1)[1]}" if str(i).startswith(("request_", "response_")) else i
                    for i in includes
                ]
            allowed = _INTERCEPTOR_INCLUDES[flow]
            unknown = [i for i in includes if i not in allowed]
            if unknown:
                raise TranslationError(
                    f"{where}: policy {_policy_label(policy)} includes {', '.join(map(str, unknown))} "
                    f"in the {flow} flow; the gateway sends {', '.join(allowed)}"
                )
            backend_name = keyed_child_name(self._base, "interceptor", url)
            backend = backend_spec(url, f"{where}: interceptor service {redacted_url(url)!r}")
            tls = self._certificates.tls_for(url, backend["protocol"])
            if tls is not None:
                backend["tls"] = tls
            self._add(
                {
                    "apiVersion": BACKEND_VERSION,
                    "kind": "Backend",
                    "metadata": self._metadata(backend_name),
                    "spec": backend,
                }
            )
            ordered = [i for i in allowed if i in includes]
            service_name = keyed_child_name(self._base, f"{flow}-interceptor", f"{url} {','.join(ordered)}")
            self._add(
                {
                    "apiVersion": INTERCEPTOR_VERSION,
                    "kind": "InterceptorService",
                    "metadata": self._metadata(service_name),
                    "spec": {"backendRef": {"name": backend_name}, "includes": ordered},
                }
            )
            spec[f"{flow}Interceptors"] = [{"name": service_name}]
        return spec

    def _rate_limit(self, tier: str | None, where: str) -> dict[str, Any] | None:
        name = (tier or "").strip()
        if not name or name.lower() == UNLIMITED.lower():
            return None
        found = self._tiers.get(name)
        if found is None:
            found = next((v for k, v in self._tiers.items() if k.lower() == name.lower()), None)
        if found is None:
            known = ", ".join([*sorted(self._tiers), UNLIMITED])
            raise TranslationError(
                f"{self._label}: {where} rate-limiting policy {name!r} is a custom policy whose limits the "
                f"artifact does not carry; the agent knows {known}. Use one of those, or configure {name!r} "
                "in the agent's rate-limit tiers"
            )
        count, unit = found
        return {"requestsPerUnit": count, "unit": unit}

    def _add(self, resource: dict[str, Any]) -> None:
        self.objects[(resource["kind"], resource["metadata"]["name"])] = resource


def check_custom_policies(data: ApiData, custom: Mapping[str, PolicySpecification], label: str) -> None:
    """Refuse an operation policy that is one the project ships in ``Policies/``: it is code for
    API Manager's gateways (Synapse templates), which this gateway cannot run, even where its name
    is that of a policy the gateway has (``addHeader``)."""
    shipped = {(spec.name.strip(), (spec.version or "").strip()): file for file, spec in custom.items()}
    names = {name: file for (name, _), file in shipped.items()}
    flows = ("request", "response", "fault")
    api_policies = data.api_policies
    api_level = [(p, "API-level") for flow in flows for p in getattr(api_policies, flow)] if api_policies else []
    per_operation = [
        (p, f"operation {operation_key(o.verb, o.target)}")
        for o in data.operations
        if o.operation_policies is not None
        for flow in flows
        for p in getattr(o.operation_policies, flow)
    ]
    for policy, where in [*api_level, *per_operation]:
        name, version = policy.policy_name.strip(), (policy.policy_version or "").strip()
        file = shipped.get((name, version)) or (names.get(name) if not version else None)
        if file is not None:
            raise TranslationError(
                f"{label}: {where} policy {_policy_label(policy)} is a custom policy of the project "
                f"(Policies/{file}); the gateway runs none of API Manager's policy templates. Replace it with "
                "a policy the gateway has (addHeader, removeHeader, callInterceptorService) or an interceptor service"
            )


def _extension_ref(kind: str, name: str) -> dict[str, Any]:
    return {"type": "ExtensionRef", "extensionRef": {"group": DP_GROUP, "kind": kind, "name": name}}


def _policy_label(policy: OperationPolicy) -> str:
    version = (policy.policy_version or "").strip()
    return f"{policy.policy_name!r}" + (f" {version}" if version else "")


def _parameter(policy: OperationPolicy, name: str, where: str, *, allow_empty: bool = False) -> str:
    value = policy.parameters.get(name)
    missing = not allow_empty and not str(value).strip()
    if isinstance(value, bool) or not isinstance(value, str | int | float) or missing:
        raise TranslationError(f"{where}: policy {_policy_label(policy)} has no {name} parameter")
    return str(value).strip() if not allow_empty else str(value)

