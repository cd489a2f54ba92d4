"""Pure translation of one deployed API revision into the gateway's Kubernetes resources.

No I/O, no clock, no randomness: the same input gives byte-for-byte the same output, so an
apply of unchanged input changes nothing in the cluster. The shapes follow APK's own
translator (``APIClient.bal``) and are validated against the APK 1.3 and Gateway API CRDs.

Choices that differ from APK, and why:

- Hostnames are the vhosts the control plane lists for the agent's environments (``<vhost>``,
  ``sandbox.<vhost>`` for sandbox routes), not APK's ``<organization>[-<env>].<vhost>``: the
  vhost is the host the control plane shows to API consumers, organization included or not.
- Names are derived from the organization and API UUID (``models.naming``), not random, so a
  new revision updates the same objects in place.
- ConfigMaps and Secrets that specs reference are named by their content
  (``translation.content_names``): APK redeploys an API only when the generation of the API or
  of an object it references moves, and a ConfigMap's or Secret's content has no generation.
  A new definition, certificate or endpoint password is thus a new name and a change of the
  referencing spec (``definitionFileRef``, ``Backend.spec.tls``/``security``, mTLS
  ``configMapRefs``). Secret names use a keyed hash (``TranslationOptions.secret_name_key``),
  never a bare hash of a password, which would let it be guessed offline.
- The ``API`` carries a config hash of everything else. Secret values are left out of it (it
  is readable by anyone who can read APIs); a rotation still changes it through the Secret's name.
- What the gateway cannot express fails the deployment with a ``TranslationError`` naming the
  setting, where APK's agent drops it: failover endpoints (a Backend has one service and no
  failover), ``maxTps``, fault-flow and unknown operation policies, ``basic_auth``, custom
  rate-limit tiers the agent does not know, mutual TLS without client certificates.
- ``env_properties.json`` endpoint overrides of the agent's environments replace the artifact's
  endpoints (what the control plane means by them); APK's agent ignores them. All of the agent's
  environments share one set of routes, so their overrides must agree.
- Application security is ``optional`` only beside mutual TLS without
  ``oauth_basic_auth_api_key_mandatory`` (and mTLS only beside application security without
  ``mutualssl_mandatory``), as in APIM; the API key's ``required`` follows OAuth2's, as in APK's agent.

Scopes, rate limits, CORS and operation policies: see ``translation.policies``; certificates:
``translation.certificates``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.artifact import ApiData, ApiProject, DeployedApi, EndpointSecurity
from models.naming import (
    API_NAME_ANNOTATION,
    API_VERSION_ANNOTATION,
    CONFIG_HASH_ANNOTATION,
    DEFAULT_GATEWAY_ID,
    ORGANIZATION_ANNOTATION,
    api_base_name,
    api_labels,
    child_name,
)
from models.resources import sort_for_apply
from translation.certificates import EndpointCertificates, client_certificates
from translation.content_names import MIN_SECRET_NAME_KEY_BYTES, config_map_name, secret_name, secret_name_key
from translation.definitions import check_definition
from translation.endpoints import backend_spec, redacted_url
from translation.errors import TranslationError
from translation.graphql import gql_route_rules
from translation.policies import (
    DEFAULT_RATE_LIMIT_TIERS,
    RATE_LIMIT_UNITS,
    OperationFilters,
    PolicyTranslator,
    check_custom_policies,
)
from translation.rest import http_route_rules

__all__ = [
    "Translation",
    "TranslationError",
    "TranslationOptions",
    "config_hash",
    "full_base_path",
    "secret_name_key",
    "translate",
    "translate_api",
]

DP_GROUP = "dp.wso2.com"
GATEWAY_GROUP = "gateway.networking.k8s.io"
API_VERSION_API = "dp.wso2.com/v1alpha3"
BACKEND_VERSION = "dp.wso2.com/v1alpha2"
AUTHENTICATION_VERSION = "dp.wso2.com/v1alpha2"
HTTPROUTE_VERSION = "gateway.networking.k8s.io/v1"
GQLROUTE_VERSION = "dp.wso2.com/v1alpha2"
DEFINITION_KEY = "definition"  # the ConfigMap key APK reads
DEFINITION_PATH = "/api-definition"  # the CRD's default, written out so the object is complete
SECRET_TYPE = "Opaque"
ENDPOINT_TYPES = ("production", "sandbox")
SUPPORTED_ENDPOINT_TYPES = ("http", "address", "load_balance", "failover")
# Endpoint types the gateway cannot serve, by what a user calls them.
NAMED_ENDPOINT_TYPES = {
    "awslambda": "an AWS Lambda endpoint (the gateway calls HTTP backends only; put an HTTP endpoint, "
    "such as a Lambda function URL or an API in front of the function, in its place)",
    "default": "a dynamic endpoint (the backend is chosen per request; the gateway routes to fixed backends)",
}
TRANSPORTS = ("http", "https")
ALL_KEY_MANAGERS = "all"
# The API types APIM builds on REST that the gateway cannot serve as plain REST, by subtype.
API_SUBTYPES = {
    "AIAPI": "an AI API",
    "EXISTING_API": "an MCP server (from an existing API)",
    "DIRECT_ENDPOINT": "an MCP server (direct endpoint)",
    "SERVER_PROXY": "an MCP server proxy",
}
PROTOTYPE_IMPLEMENTATIONS = {
    "INLINE": "an inline-script prototype",
    "MOCKED_OAS": "a mocked (OpenAPI example) prototype",
}
SECURITY_SCHEMES = (
    "oauth2",
    "api_key",
    "basic_auth",
    "mutualssl",
    "mutualssl_mandatory",
    "oauth_basic_auth_api_key_mandatory",
)
# APK splits an API's operations into routes of 8 rules (the CRD allows 16 rules per route).
RULES_PER_ROUTE = 8
MAX_HOSTNAMES = 16
MAX_CONFIGMAP_BYTES = 1_000_000  # Kubernetes caps a ConfigMap at 1 MiB, metadata included

_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_API_NAME_FORBIDDEN = "~!@#;:%^*()+={}|\\<>\"',&$[]/"
_API_VERSION_FORBIDDEN = "~!@#;:%^*()+={}|\\<>\"',&/$[]"
# The API CRD's patterns for spec.apiName and spec.apiVersion.
_API_NAME = re.compile(r"^[^~!@#;:%^*()+={}|\\<>\"',&$\[\]/]*$")
_API_VERSION = re.compile(r"^[^~!@#;:%^*()+={}|\\<>\"',&/$\[\]\s+]+$")
_BASE_PATH = re.compile(r"^/[a-zA-Z0-9~/_.-]*$")


class TranslationOptions(BaseModel):
    """Where the agent's resources go and which gateway serves them."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    gateway_name: str = "wso2-apk-default"
    gateway_namespace: str = ""  # empty means ``namespace``
    gateway_listener: str = "httpslistener"
    # The Gateway's plain-HTTP listener, for APIs whose transports include http; empty: none.
    gateway_http_listener: str = ""
    gateway_labels: list[str] = Field(default_factory=list)  # the agent's environments
    # The agent whose resources these are (``owner_labels``); empty: the first gateway label, as
    # the agent's own (``Settings.effective_gateway_id``).
    gateway_id: str = ""
    # Key managers whose tokens the gateway accepts (its token issuers). An API limited to some key
    # managers deploys only if it allows all of these: the gateway cannot narrow them per API.
    key_managers: list[str] = Field(default_factory=lambda: ["Resident Key Manager"])
    environment: str | None = None
    # Keys the digest in Secret names (translation.content_names); derive it from the agent's sealing
    # key with ``secret_name_key(sealing_key)`` so every worker names Secrets alike. Required (at least
    # 16 bytes) when the API has endpoint credentials; kept out of the options' repr.
    secret_name_key: bytes = Field(default=b"", repr=False)
    # Rate-limit tier name -> (requests, unit); APIM's default API-level tiers unless configured.
    rate_limit_tiers: dict[str, tuple[int, str]] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMIT_TIERS))

    @field_validator("rate_limit_tiers")
    @classmethod
    def _tiers_the_gateway_can_count(cls, value: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
        for name, (count, unit) in value.items():
            if unit not in RATE_LIMIT_UNITS or not 0 < count < 2**31:
                raise ValueError(
                    f"rate-limit tier {name!r}: needs 1 to {2**31 - 1} requests per {', '.join(RATE_LIMIT_UNITS)}"
                )
        return value

    @field_validator("secret_name_key")
    @classmethod
    def _key_long_enough(cls, value: bytes) -> bytes:
        if value and len(value) < MIN_SECRET_NAME_KEY_BYTES:
            raise ValueError(
                f"secret_name_key must be empty or at least {MIN_SECRET_NAME_KEY_BYTES} bytes; "
                "derive it with translation.secret_name_key(sealing_key)"
            )
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_is_dns_label(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL.match(value):
            raise ValueError(f"namespace {value!r} is not a valid Kubernetes namespace name")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_gateway_namespace_and_id(cls, values: Any) -> Any:
        if isinstance(values, dict) and not values.get("gateway_namespace"):
            values = {**values, "gateway_namespace": values.get("namespace")}
        if isinstance(values, dict) and not values.get("gateway_id"):
            labels = values.get("gateway_labels") or [DEFAULT_GATEWAY_ID]
            values = {**values, "gateway_id": labels[0]}
        return values


@dataclass(frozen=True)
class Translation:
    """The objects that serve an API, in apply order, and what the gateway will not do of what
    the project asks (each warning names the setting and the API)."""

    resources: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


def translate_api(api: DeployedApi, options: TranslationOptions) -> list[dict[str, Any]]:
    """``translate(api, options).resources``: the objects alone, for callers that show no warnings."""
    return translate(api, options).resources


def translate(api: DeployedApi, options: TranslationOptions) -> Translation:
    """The Kubernetes objects that serve ``api`` on the gateway, sorted in apply order.

    Raises ``TranslationError`` for an API the gateway cannot serve as configured (type, subtype,
    prototypes, GraphQL subscriptions, endpoints, transports, key managers, security, rate limits,
    operation policies): a setting is translated, or the deployment fails naming it, or, where the
    gateway serves the API safely without it, the result carries a warning naming it; never dropped
    without a word. Raises ``ValueError`` when the API has endpoint credentials and
    ``options.secret_name_key`` is empty (the agent's configuration).
    """
    data = api.project.data
    label = f"API '{data.name}' {data.version}"
    warnings: list[str] = []
    api_type = _api_type(data, label)
    _check_name_and_version(data, label)
    _check_subtype(data, label)
    _check_prototype(data, label)
    if not data.operations:
        raise TranslationError(f"{label} has no operations; add at least one resource to the API")
    listeners = _listeners(data, options, label, warnings)
    _check_key_managers(data, options, label, warnings)
    check_custom_policies(data, api.project.custom_policies, label)
    if api_type == "GraphQL" and api.project.graphql_complexity:
        fields = len(api.project.graphql_complexity)
        warnings.append(
            f"{label}: the query-complexity values of {fields} GraphQL field(s) (Definitions/graphql-complexity.json) "
            "are not enforced: APK 1.3 analyses neither the complexity nor the depth of GraphQL queries"
        )
    organization = api.organization
    base = api_base_name(organization, data.id, data.name, data.version)
    labels = api_labels(organization, data.id, data.name, data.version, api.revision_id, options.gateway_id)
    annotations = {
        API_NAME_ANNOTATION: data.name,
        API_VERSION_ANNOTATION: data.version,
        ORGANIZATION_ANNOTATION: organization,
    }

    def metadata(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": options.namespace, "labels": dict(labels), "annotations": dict(annotations)}

    base_path = full_base_path(data.context, data.version, label)
    production_hosts = _hostnames(api, options, label)
    hostnames = {"production": production_hosts, "sandbox": [f"sandbox.{h}" for h in production_hosts]}
    resources: list[dict[str, Any]] = []
    certificates = EndpointCertificates(api.project, base, label)
    overrides = _endpoint_overrides(api, options, label)

    backend_refs: dict[str, list[dict[str, Any]]] = {}
    for endpoint_type in ENDPOINT_TYPES:
        objects = _backends(
            data,
            endpoint_type,
            base,
            label,
            metadata,
            overrides.get(endpoint_type),
            certificates,
            options.secret_name_key,
        )
        if objects:
            resources.extend(objects)
            backend_refs[endpoint_type] = [
                {"group": DP_GROUP, "kind": "Backend", "name": o["metadata"]["name"]}
                for o in objects
                if o["kind"] == "Backend"
            ]
    if not backend_refs:
        raise TranslationError(f"{label} has no production and no sandbox endpoint; add an endpoint URL to the API")

    definition_ref = None
    definition = _definition_config_map(api, api_type, base, label, metadata, warnings)
    if definition is not None:
        resources.append(definition)
        definition_ref = definition["metadata"]["name"]

    auth_objects, no_auth_filter = _authentication(api.project, base, label, metadata, set(backend_refs))
    resources.extend(auth_objects)

    policies = PolicyTranslator(
        data,
        base=base,
        label=label,
        api_type=api_type,
        metadata=metadata,
        rate_limit_tiers=options.rate_limit_tiers,
        endpoint_certificates=certificates,
    )
    policies.api_level()
    operation_filters = [policies.for_operation(o) for o in data.operations]
    taken = {(r["kind"], r["metadata"]["name"]) for r in resources}
    resources.extend(r for key, r in sorted(policies.objects.items()) if key not in taken)
    certificate_map = certificates.config_map(metadata)
    if certificate_map is not None:
        resources.append(certificate_map)

    route_refs: dict[str, list[str]] = {}
    for endpoint_type, refs in backend_refs.items():
        routes = _routes(
            data,
            api_type=api_type,
            endpoint_type=endpoint_type,
            base=base,
            label=label,
            metadata=metadata,
            options=options,
            hostnames=hostnames[endpoint_type],
            listeners=listeners,
            backend_refs=refs,
            no_auth_filter=no_auth_filter,
            operation_filters=operation_filters,
        )
        resources.extend(routes)
        route_refs[endpoint_type] = [r["metadata"]["name"] for r in routes]

    spec: dict[str, Any] = {
        "apiName": data.name,
        "apiVersion": data.version,
        "basePath": base_path,
        "organization": organization,
        "isDefaultVersion": data.is_default_version,
        "apiType": api_type,
        "definitionPath": DEFINITION_PATH,
    }
    if definition_ref is not None:
        spec["definitionFileRef"] = definition_ref
    for endpoint_type in ENDPOINT_TYPES:
        if endpoint_type in route_refs:
            spec[endpoint_type] = [{"routeRefs": route_refs[endpoint_type]}]
    if data.additional_properties:
        spec["apiProperties"] = [{"name": p.name, "value": p.value} for p in data.additional_properties]
    if options.environment:
        spec["environment"] = options.environment

    api_metadata = metadata(base)
    api_metadata["annotations"][CONFIG_HASH_ANNOTATION] = config_hash(resources)
    api_object = {"apiVersion": API_VERSION_API, "kind": "API", "metadata": api_metadata, "spec": spec}
    resources.append(api_object)
    return Translation(resources=sort_for_apply(resources), warnings=warnings)


def full_base_path(context: str, version: str, api_label: str = "the API") -> str:
    """The API's context with ``/<version>`` appended unless it already ends with it."""
    path = context.strip().replace("{version}", version)
    path = "/" + path.strip("/") if path.strip("/") else ""
    if not (path == f"/{version}" or path.endswith(f"/{version}")):
        path = f"{path}/{version}"
    if not _BASE_PATH.match(path):
        raise TranslationError(
            f"{api_label} has context {context!r}; the gateway accepts base paths of letters, digits and ~/_.- only"
        )
    return path


def config_hash(resources: list[dict[str, Any]]) -> str:
    """First 16 hex digits of sha256 over the canonical JSON of ``resources`` (Secret values left out)."""
    redacted = [_without_secret_values(r) for r in sort_for_apply(resources)]
    canonical = json.dumps(redacted, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _without_secret_values(resource: dict[str, Any]) -> dict[str, Any]:
    if resource["kind"] != "Secret":
        return resource
    return {**resource, "data": {key: "" for key in resource.get("data", {})}}


def _api_type(data: ApiData, label: str) -> str:
    kind = data.type.strip().upper()
    if kind == "HTTP":
        return "REST"
    if kind == "GRAPHQL":
        return "GraphQL"
    raise TranslationError(f"{label} has type {data.type}; this agent deploys REST (HTTP) and GraphQL APIs only")


def _check_subtype(data: ApiData, label: str) -> None:
    subtype = (data.subtype_configuration.subtype if data.subtype_configuration else "").strip()
    if subtype.upper() in ("", "DEFAULT"):
        return
    what = API_SUBTYPES.get(subtype.upper(), f"of subtype {subtype}")
    provider = ""
    if data.subtype_configuration is not None:
        settings = data.subtype_configuration.settings()
        name = settings.get("llmProviderName") or settings.get("llmProviderId")
        version = settings.get("llmProviderApiVersion")
        if name:
            provider = f" (LLM provider {name!r}" + (f" {version}" if version else "") + ")"
    if subtype.upper() == "AIAPI":
        raise TranslationError(
            f"{label} is an AI API{provider}; this agent does not deploy AI APIs: APK's AIProvider and "
            "AIRateLimitPolicy need the provider's model and token-count locations, which the API project does "
            "not carry, and deploying it as plain REST would drop its token-based limits"
        )
    raise TranslationError(f"{label} is {what}; this agent deploys REST and GraphQL APIs only")


def _check_prototype(data: ApiData, label: str) -> None:
    implementation = (data.endpoint_implementation_type or "").strip().upper()
    status = (data.endpoint_config.implementation_status or "").strip().lower() if data.endpoint_config else ""
    if implementation in PROTOTYPE_IMPLEMENTATIONS or status == "prototyped":
        what = PROTOTYPE_IMPLEMENTATIONS.get(implementation, "a prototype (prototyped implementation)")
        raise TranslationError(
            f"{label} is {what}: its responses are produced by the API Manager gateway, which this gateway cannot "
            "do; give the API a production or sandbox endpoint (endpointImplementationType ENDPOINT) to deploy it"
        )


def _listeners(data: ApiData, options: TranslationOptions, label: str, warnings: list[str]) -> list[str]:
    """The Gateway listeners the API's routes attach to, from its transports (none listed: HTTPS)."""
    transports = {t.strip().lower() for t in data.transport if t.strip()} or {"https"}
    unknown = sorted(transports - set(TRANSPORTS))
    if unknown:
        raise TranslationError(
            f"{label} has transport {', '.join(unknown)}; the gateway serves {' and '.join(TRANSPORTS)}"
        )
    listeners = [options.gateway_listener] if "https" in transports else []
    if "http" in transports:
        if options.gateway_http_listener:
            listeners.append(options.gateway_http_listener)
        elif listeners:
            warnings.append(
                f"{label} allows plain HTTP, but no HTTP listener is configured (GATEWAY_HTTP_LISTENER): "
                f"it is served over HTTPS only ({options.gateway_listener})"
            )
        else:
            raise TranslationError(
                f"{label} allows HTTP only, and no HTTP listener is configured (GATEWAY_HTTP_LISTENER); "
                "set it to the Gateway's plain-HTTP listener, or allow HTTPS on the API"
            )
    return list(dict.fromkeys(listeners))


def _check_key_managers(data: ApiData, options: TranslationOptions, label: str, warnings: list[str]) -> None:
    """An API limited to some key managers: the gateway accepts tokens of all of its token issuers
    for every API, so the limit holds only if the API allows every one of them."""
    schemes = ["oauth2"] if data.security_scheme is None else [s.strip().lower() for s in data.security_scheme]
    allowed = [k.strip() for k in data.key_managers if k.strip()]
    if "oauth2" not in schemes or not allowed or any(k.lower() == ALL_KEY_MANAGERS for k in allowed):
        return
    missing = [k for k in options.key_managers if k not in allowed]
    if missing:
        raise TranslationError(
            f"{label} accepts tokens of key manager(s) {', '.join(map(repr, allowed))} only, but the gateway "
            f"accepts tokens of {', '.join(map(repr, missing))} too (GATEWAY_KEY_MANAGERS) and cannot narrow that "
            "per API; allow those key managers on the API (or All), or configure the agent with the gateway's "
            "token issuers"
        )
    unknown = [k for k in allowed if k not in options.key_managers]
    if unknown:
        warnings.append(
            f"{label} allows key manager(s) {', '.join(map(repr, unknown))}, which the gateway has no token issuer "
            "for (GATEWAY_KEY_MANAGERS): their tokens are refused"
        )


def _check_name_and_version(data: ApiData, label: str) -> None:
    if not data.name or len(data.name) > 60 or not _API_NAME.match(data.name):
        raise TranslationError(
            f"{label}: the gateway accepts API names of 1 to 60 characters without any of {_API_NAME_FORBIDDEN}"
        )
    if len(data.version) > 30 or not _API_VERSION.match(data.version):
        raise TranslationError(
            f"{label}: the gateway accepts versions of 1 to 30 characters "
            f"without spaces or any of {_API_VERSION_FORBIDDEN}"
        )


def _hostnames(api: DeployedApi, options: TranslationOptions, label: str) -> list[str]:
    ours = [e for e in api.environments if e.name in options.gateway_labels]
    if not ours:
        listed = ", ".join(sorted({e.name for e in api.environments})) or "none"
        raise TranslationError(
            f"{label} is not deployed to any of this agent's environments "
            f"({', '.join(options.gateway_labels) or 'none configured'}); its deployments name: {listed}"
        )
    hosts: set[str] = set()
    for environment in ours:
        vhost = (environment.vhost or "").strip().lower().rstrip(".")
        if not vhost:
            raise TranslationError(f"{label}: environment {environment.name!r} has no vhost in deployments.json")
        if len(vhost) > 253 - len("sandbox.") or not _HOSTNAME.match(vhost):
            raise TranslationError(
                f"{label}: environment {environment.name!r} has vhost {vhost!r}, which is not a valid hostname"
            )
        hosts.add(vhost)
    if len(hosts) > MAX_HOSTNAMES:
        raise TranslationError(f"{label} is deployed to {len(hosts)} vhosts; a route accepts at most {MAX_HOSTNAMES}")
    return sorted(hosts)


def _endpoint_overrides(api: DeployedApi, options: TranslationOptions, label: str) -> dict[str, str]:
    """Endpoint URLs that ``env_properties.json`` sets for the agent's environments, by endpoint type.

    The file maps environment names to ``{productionEndpoint, sandboxEndpoint}``; the control plane
    may wrap it in ``{data: ...}`` and key it by API UUID first. Environments are matched by name.
    """
    properties: Any = api.env_properties
    if isinstance(properties.get("data"), dict):
        properties = properties["data"]
    if isinstance(properties.get(api.project.data.id), dict):
        properties = properties[api.project.data.id]
    ours = sorted({e.name for e in api.environments if e.name in options.gateway_labels})
    overrides: dict[str, str] = {}
    for endpoint_type, key in (("production", "productionEndpoint"), ("sandbox", "sandboxEndpoint")):
        per_environment: dict[str, str | None] = {}
        for environment in ours:
            entry = properties.get(environment)
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, dict):
                value = value.get("url")
            per_environment[environment] = value.strip() if isinstance(value, str) and value.strip() else None
        values = set(per_environment.values())
        if values == {None}:
            continue
        if len(values) > 1:
            shown = ", ".join(
                f"{env}: {redacted_url(url) if url else 'the API endpoint'}" for env, url in per_environment.items()
            )
            raise TranslationError(
                f"{label} has different {endpoint_type} endpoints per environment in env_properties.json ({shown}); "
                "this agent serves all its environments from one set of routes, so their endpoints must agree"
            )
        overrides[endpoint_type] = str(values.pop())
    return overrides


def _backends(
    data: ApiData,
    endpoint_type: str,
    base: str,
    label: str,
    metadata: Callable[[str], dict[str, Any]],
    override: str | None,
    certificates: EndpointCertificates,
    secret_key: bytes,
) -> list[dict[str, Any]]:
    """Backends (one per load-balanced URL) and the Secret with their credentials, if any."""
    config = data.endpoint_config
    if config is None and override is None:
        return []
    kind = config.endpoint_type.strip().lower() if config is not None else "http"
    if kind in NAMED_ENDPOINT_TYPES:
        raise TranslationError(f"{label} has {NAMED_ENDPOINT_TYPES[kind]}")
    if kind not in SUPPORTED_ENDPOINT_TYPES:
        raise TranslationError(
            f"{label} has endpoint type {config.endpoint_type!r}; the gateway supports HTTP endpoints "
            "(single or load-balanced) only"
        )
    if override is not None:
        urls = [override]
    else:
        assert config is not None
        urls = [e.url or "" for e in config.endpoints(endpoint_type)]
        failovers = config.failovers(endpoint_type) if kind == "failover" else []
        if failovers:
            raise TranslationError(
                f"{label} has failover {endpoint_type} endpoints "
                f"({', '.join(redacted_url(e.url or '') for e in failovers)}); failover endpoints cannot be "
                "expressed by APK 1.3 (a Backend has one service and no failover), and serving the primary "
                "alone would drop them. Use a single or load-balanced endpoint"
            )
    if not urls:
        return []
    specs: list[dict[str, Any]] = []
    for url in urls:
        spec = backend_spec(url, f"{label} has {endpoint_type} endpoint {redacted_url(url)!r}")
        tls = certificates.tls_for(url, spec["protocol"])
        if tls is not None:
            spec["tls"] = tls
        specs.append(spec)
    if len({(s["protocol"], s.get("basePath", "")) for s in specs}) > 1:
        raise TranslationError(
            f"{label} load-balances its {endpoint_type} endpoints over different protocols or base paths; "
            "the gateway rewrites every request to a single base path"
        )
    objects: list[dict[str, Any]] = []
    security = _backend_security(
        config.security(endpoint_type) if config is not None else None,
        endpoint_type,
        base,
        label,
        metadata,
        secret_key,
    )
    if security is not None:
        secret, reference = security
        objects.append(secret)
        for spec in specs:
            spec["security"] = reference
    for index, spec in enumerate(specs, start=1):
        name = child_name(base, endpoint_type) if index == 1 else child_name(base, endpoint_type, str(index))
        objects.append({"apiVersion": BACKEND_VERSION, "kind": "Backend", "metadata": metadata(name), "spec": spec})
    return objects


def _backend_security(
    security: EndpointSecurity | None,
    endpoint_type: str,
    base: str,
    label: str,
    metadata: Callable[[str], dict[str, Any]],
    secret_key: bytes,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The Secret holding the credentials and the Backend's reference to it, named by a keyed digest."""
    if security is None or not security.enabled:
        return None
    kind = (security.type or "").strip().upper()
    values: dict[str, str]
    reference: Callable[[str], dict[str, Any]]  # the Backend's reference to the Secret of that name
    if kind == "BASIC":
        if not security.username:
            raise TranslationError(f"{label} has BASIC {endpoint_type} endpoint security without a username")
        password = security.password.get_secret_value() if security.password is not None else ""
        values = {"password": password, "username": security.username}

        def reference(name: str) -> dict[str, Any]:
            return {"basic": {"secretRef": {"name": name, "usernameKey": "username", "passwordKey": "password"}}}

    elif kind == "APIKEY":
        identifier = security.api_key_identifier
        if not identifier or security.api_key_value is None:
            raise TranslationError(f"{label} has API key {endpoint_type} endpoint security without a key name or value")
        placement = "Query" if (security.api_key_identifier_type or "").upper().startswith("QUERY") else "Header"
        values = {"apiKey": security.api_key_value.get_secret_value()}

        def reference(name: str) -> dict[str, Any]:
            return {"apiKey": {"in": placement, "name": identifier, "valueFrom": {"name": name, "valueKey": "apiKey"}}}

    else:
        raise TranslationError(
            f"{label} has {security.type or 'untyped'} {endpoint_type} endpoint security; "
            "the gateway's backends support BASIC and API key credentials only"
        )
    encoded = {key: base64.b64encode(value.encode("utf-8")).decode("ascii") for key, value in sorted(values.items())}
    name = secret_name(child_name(base, endpoint_type, "credentials"), secret_key, encoded, SECRET_TYPE)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata(name), "type": SECRET_TYPE, "data": encoded}
    return secret, reference(name)


def _definition_config_map(
    api: DeployedApi,
    api_type: str,
    base: str,
    label: str,
    metadata: Callable[[str], dict[str, Any]],
    warnings: list[str],
) -> dict[str, Any] | None:
    definition = api.project.definition
    if not definition or not definition.strip():
        if api_type == "GraphQL":
            raise TranslationError(f"{label} is a GraphQL API without a schema (Definitions/schema.graphql)")
        return None
    warnings += check_definition(
        api_type,
        definition,
        api.project.definition_file or "the definition",
        api.project.data.operations,
        label,
    )
    # mtime=0 keeps the gzip header, and so the whole output, identical for identical input.
    packed = base64.b64encode(gzip.compress(definition.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")
    if len(packed) > MAX_CONFIGMAP_BYTES:
        raise TranslationError(
            f"{label} has a definition of {len(definition)} characters, which does not fit a ConfigMap even compressed"
        )
    binary_data = {DEFINITION_KEY: packed}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(config_map_name(child_name(base, "definition"), binary_data=binary_data)),
        "binaryData": binary_data,
    }


def _authentication(
    project: ApiProject,
    base: str,
    label: str,
    metadata: Callable[[str], dict[str, Any]],
    endpoint_types: set[str],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The API-level Authentication (and mTLS certificates), and the reference unsecured operations attach to."""
    data = project.data
    target = {"group": GATEWAY_GROUP, "kind": "API", "name": base}  # as APK's translator writes it
    schemes = ["oauth2"] if data.security_scheme is None else [s.strip().lower() for s in data.security_scheme]
    api_auth = {
        "apiVersion": AUTHENTICATION_VERSION,
        "kind": "Authentication",
        "metadata": metadata(child_name(base, "authentication")),
    }
    objects: list[dict[str, Any]] = [api_auth]
    if not schemes:
        api_auth["spec"] = {"default": {"disabled": True}, "targetRef": target}
        return objects, None
    unknown = sorted(set(schemes) - set(SECURITY_SCHEMES))
    if unknown:
        raise TranslationError(
            f"{label} has security scheme {', '.join(unknown)}, which this agent does not know "
            f"(known: {', '.join(SECURITY_SCHEMES)})"
        )
    if "basic_auth" in schemes:
        raise TranslationError(
            f"{label} accepts basic_auth; the gateway enforces OAuth2, API keys and mutual TLS only. "
            "Remove Basic authentication from the API's application-level security"
        )
    oauth2 = "oauth2" in schemes
    api_key = "api_key" in schemes
    mtls = "mutualssl" in schemes or "mutualssl_mandatory" in schemes
    application = oauth2 or api_key
    if not application and not mtls:
        raise TranslationError(
            f"{label} is secured by {', '.join(schemes)} only; enable OAuth2, API keys or mutual TLS"
        )
    app_required = "mandatory" if not mtls or "oauth_basic_auth_api_key_mandatory" in schemes else "optional"
    auth_types: dict[str, Any] = {
        "oauth2": {
            "header": data.authorization_header or "Authorization",
            "sendTokenToUpstream": False,
            "required": app_required,
        }
        if oauth2
        else {"disabled": True}
    }
    if api_key:
        header = data.api_key_header or "ApiKey"
        auth_types["apiKey"] = {
            "keys": [
                {"in": "Header", "name": header, "sendTokenToUpstream": False},
                {"in": "Query", "name": header, "sendTokenToUpstream": False},
            ],
            "required": app_required,
        }
    if mtls:
        config_map, references = client_certificates(project, base, label, metadata, endpoint_types)
        objects.insert(0, config_map)
        auth_types["mtls"] = {
            "required": "mandatory" if not application or "mutualssl_mandatory" in schemes else "optional",
            "configMapRefs": references,
        }
    api_auth["spec"] = {"default": {"disabled": False, "authTypes": auth_types}, "targetRef": target}
    if not any(o.is_unsecured for o in data.operations):
        return objects, None
    no_auth_name = child_name(base, "no-authentication")
    objects.append(
        {
            "apiVersion": AUTHENTICATION_VERSION,
            "kind": "Authentication",
            "metadata": metadata(no_auth_name),
            "spec": {"default": {"disabled": True}, "targetRef": {"group": "", "kind": "Resource", "name": base}},
        }
    )
    return objects, {"group": DP_GROUP, "kind": "Authentication", "name": no_auth_name}


def _routes(
    data: ApiData,
    *,
    api_type: str,
    endpoint_type: str,
    base: str,
    label: str,
    metadata: Callable[[str], dict[str, Any]],
    options: TranslationOptions,
    hostnames: list[str],
    listeners: list[str],
    backend_refs: list[dict[str, Any]],
    no_auth_filter: dict[str, Any] | None,
    operation_filters: list[OperationFilters],
) -> list[dict[str, Any]]:
    """The routes of one endpoint type: ``RULES_PER_ROUTE`` operations each, named stably by position."""
    parent_refs = [
        {
            "group": GATEWAY_GROUP,
            "kind": "Gateway",
            "name": options.gateway_name,
            "namespace": options.gateway_namespace,
            "sectionName": listener,
        }
        for listener in listeners
    ]
    if api_type == "GraphQL":
        rules = gql_route_rules(
            data.operations,
            api_label=label,
            no_auth_filter=no_auth_filter,
            extension_refs=[f.extension_refs for f in operation_filters],
        )
    else:
        rules = http_route_rules(
            data.operations,
            api_label=label,
            backend_refs=backend_refs,
            no_auth_filter=no_auth_filter,
            operation_filters=[f.filters for f in operation_filters],
        )
    routes: list[dict[str, Any]] = []
    api_version, kind = (GQLROUTE_VERSION, "GQLRoute") if api_type == "GraphQL" else (HTTPROUTE_VERSION, "HTTPRoute")
    for index, start in enumerate(range(0, len(rules), RULES_PER_ROUTE), start=1):
        name = child_name(base, endpoint_type) if index == 1 else child_name(base, endpoint_type, str(index))
        spec: dict[str, Any] = {"parentRefs": [dict(p) for p in parent_refs], "hostnames": list(hostnames)}
        if api_type == "GraphQL":
            # GQLRoute routes to its backends as a whole; its rules only select operations.
            spec["backendRefs"] = [dict(r) for r in backend_refs]
        spec["rules"] = rules[start : start + RULES_PER_ROUTE]
        routes.append({"apiVersion": api_version, "kind": kind, "metadata": metadata(name), "spec": spec})
    return routes
