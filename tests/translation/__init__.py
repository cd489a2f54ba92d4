"""Tests of artifact parsing and translation, with small builders for API projects.

The builders produce what the control plane exports (api.json ``data`` in camelCase,
``endpointConfig`` in APIM's snake_case) so the tests exercise the real wire names.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from collections.abc import Mapping
from typing import Any

from models.artifact import ApiData, ApiProject, CertificateBinding, DeployedApi, DeploymentEnvironment
from translation import secret_name_key

API_UUID = "8f1c2a4e-5b6d-4e7f-9a0b-1c2d3e4f5a6b"
OTHER_UUID = "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f7a"
PASSWORD = "pizza-backend-s3cret!"
API_KEY_VALUE = "backend-api-key-9f8e7d"
# The tests' sealing key (Fernet form: urlsafe base64 of b"translation-tests-sealing-key-01"). The goldens'
# Secret names follow from the key derived from it; `gateway-agent translate` run with
# GATEWAY_AGENT_SEALING_KEY set to it prints the goldens byte for byte.
SEALING_KEY = "dHJhbnNsYXRpb24tdGVzdHMtc2VhbGluZy1rZXktMDE="
SECRET_NAME_KEY = secret_name_key(SEALING_KEY)

SWAGGER = json.dumps(
    {
        "openapi": "3.0.1",
        "info": {"title": "PizzaShackAPI", "version": "1.0.0"},
        "paths": {"/menu": {"get": {"responses": {"200": {"description": "OK"}}}}},
    }
)
# Two real self-signed certificates (the translator parses every certificate it ships).
CERTIFICATE = """\
-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUFyeROtypHXrJXxLEUiEHhVLdQPYwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQdGVzdC1vbmUuZXhhbXBsZTAgFw0yNjEyMDMwMDE2MTVaGA8y
MTI2MTEwOTAwMTYxNVowGzEZMBcGA1UEAwwQdGVzdC1vbmUuZXhhbXBsZTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABEjekJVesKBE/srPpxbJ9kxDvQpeG/VJWpT7
Q5H1FV6aIVYeQRtLaOOH+Cawy1svsqeUVWsnJ/1JoX9JOAN4f+6jUzBRMB0GA1Ud
DgQWBBQFwyegfXdEto3HuJM5vpYjwJzV1DAfBgNVHSMEGDAWgBQFwyegfXdEto3H
uJM5vpYjwJzV1DAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQCs
tgv8YNLDH9cabgtIxvt6GFjVw8BAg9jj+Rv8gZiCzgIgFSgzfECimNA0M3jgxEcn
aY1kTeLfBjx6n3sLLWTeZaE=
-----END CERTIFICATE-----
"""
OTHER_CERTIFICATE = """\
-----BEGIN CERTIFICATE-----
MIIBjjCCATOgAwIBAgIUM0sKvEQ4JdXsX0Zt+kA2gyC6SjIwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQdGVzdC10d28uZXhhbXBsZTAgFw0yNjEyMDMwMDE2MTVaGA8y
MTI2MTEwOTAwMTYxNVowGzEZMBcGA1UEAwwQdGVzdC10d28uZXhhbXBsZTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABIyObEZ7Q3B0LHWp/VGsZkH/BfFDcF/oMeA/
WrsfxBDbXcINPVGGFuhaRkidachMKhCf2ir9R8qjbKNWcyfwi1KjUzBRMB0GA1Ud
DgQWBBTmJ6zDD4tELw/zLVpZ/V45IdoueTAfBgNVHSMEGDAWgBTmJ6zDD4tELw/z
LVpZ/V45IdoueTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQCw
NKg3wmjdFDhrD/LOzwzW8pF3w9Hazpx1GIqys6eruwIhAJgRS00FInfWcrOVcoLP
msq42dHqUsIcyK6hYzPyc+uF
-----END CERTIFICATE-----
"""
SDL = "type Query { hero(id: ID!): String\n  allHeroes: [String] }\ntype Mutation { addHero(name: String!): String }\n"


def api_data(**overrides: Any) -> dict[str, Any]:
    """The ``data`` of a REST api.json as APIM exports it; keyword arguments replace fields."""
    data: dict[str, Any] = {
        "id": API_UUID,
        "name": "PizzaShackAPI",
        "version": "1.0.0",
        "context": "/pizzashack",
        "provider": "admin",
        "type": "HTTP",
        "isDefaultVersion": False,
        "lifeCycleStatus": "PUBLISHED",
        "organizationId": "carbon.super",
        "revisionId": "1",
        "initiatedFromGateway": False,
        "authorizationHeader": "Authorization",
        "apiKeyHeader": "ApiKey",
        "securityScheme": ["oauth2", "oauth_basic_auth_api_key_mandatory"],
        "corsConfiguration": {"corsConfigurationEnabled": False},
        "endpointConfig": {
            "endpoint_type": "http",
            "production_endpoints": {"url": "https://pizza.backend.example:8443/v1"},
        },
        "operations": [
            {"target": "/menu", "verb": "GET", "authType": "Application & Application User", "scopes": []},
            {"target": "/order", "verb": "POST", "authType": "Application & Application User", "scopes": []},
            {"target": "/order/{orderId}", "verb": "GET", "authType": "Application & Application User", "scopes": []},
        ],
        "scopes": [],
        "additionalProperties": [],
        "keyManagers": ["all"],
        "transport": ["http", "https"],
    }
    data.update(copy.deepcopy(overrides))
    return data


def graphql_data(**overrides: Any) -> dict[str, Any]:
    base = api_data(
        name="StarWarsAPI",
        context="/swapi",
        type="GRAPHQL",
        endpointConfig={"endpoint_type": "http", "production_endpoints": {"url": "http://swapi.backend:8080/graphql"}},
        operations=[
            {"target": "hero", "verb": "QUERY", "authType": "Application & Application User"},
            {"target": "allHeroes", "verb": "QUERY", "authType": "None"},
            {"target": "addHero", "verb": "MUTATION", "authType": "Application & Application User"},
        ],
    )
    base.update(copy.deepcopy(overrides))
    return base


def deployed_api(
    data: dict[str, Any] | None = None,
    *,
    definition: str | None = SWAGGER,
    revision: str = "1",
    organization: str = "carbon.super",
    environments: list[tuple[str, str]] | None = None,
    client_certificates: Mapping[str, str] | None = None,
    client_bindings: list[dict[str, Any]] | None = None,
    endpoint_certificates: Mapping[str, str] | None = None,
    endpoint_bindings: list[dict[str, Any]] | None = None,
    env_properties: Mapping[str, Any] | None = None,
) -> DeployedApi:
    """A ``DeployedApi`` as the parser would produce it, built directly from wire-format data.

    Certificates are file name -> PEM; bindings are the ``data`` entries of
    ``client_certificates.json`` / ``endpoint_certificates.json``.
    """
    envs = environments if environments is not None else [("Default", "gw.example.com")]
    return DeployedApi(
        project=ApiProject(
            data=ApiData.model_validate(data if data is not None else api_data()),
            definition=definition,
            definition_file="Definitions/swagger.json" if definition else None,
            client_certificates=dict(client_certificates or {}),
            client_certificate_bindings=[CertificateBinding.model_validate(b) for b in client_bindings or []],
            endpoint_certificates=dict(endpoint_certificates or {}),
            endpoint_certificate_bindings=[CertificateBinding.model_validate(b) for b in endpoint_bindings or []],
        ),
        api_file=f"{(data or {}).get('id', API_UUID)}-{revision}.zip",
        revision_id=revision,
        organization=organization,
        environments=[DeploymentEnvironment(name=n, vhost=v, deployed_timestamp=1764236400123) for n, v in envs],
        env_properties=dict(env_properties or {}),
    )


def zip_bytes(files: Mapping[str, bytes | str], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def project_files(
    data: dict[str, Any],
    *,
    root: str = "PizzaShackAPI-1.0.0",
    definition: tuple[str, str] | None = ("swagger.json", SWAGGER),
) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {f"{root}/api.json": json.dumps({"type": "api", "version": "v4.3.0", "data": data})}
    if definition is not None:
        files[f"{root}/Definitions/{definition[0]}"] = definition[1]
    return files


def deployments_json(*entries: tuple[str, str, list[tuple[str, str]]]) -> str:
    """``deployments.json`` for (apiFile, organizationId, [(environment, vhost)]) entries."""
    return json.dumps(
        {
            "type": "deployments",
            "version": "v4.3.0",
            "data": {
                "deployments": [
                    {
                        "apiFile": api_file,
                        "organizationId": organization,
                        "environments": [
                            {"name": n, "vhost": v, "deployedTimeStamp": 1764236400123, "deploymentType": "hybrid"}
                            for n, v in envs
                        ],
                    }
                    for api_file, organization, envs in entries
                ]
            },
        }
    )


# Reference fields of the specs the translator emits; a field ending in Ref/Refs that is not here fails
# ``references`` so that a new kind of reference cannot escape the dangling-reference checks.
_TYPED_REFERENCE_FIELDS = ("backendRefs", "extensionRef", "targetRef", "parentRefs")
_ROUTE_KINDS = {"REST": "HTTPRoute", "GraphQL": "GQLRoute"}
_EXTERNAL_KINDS = ("Gateway",)  # the Gateway the routes attach to is not the translator's


def references(resources: list[dict[str, Any]]) -> list[tuple[str, str, str, str | None]]:
    """Every reference an emitted spec makes to an object by name: (source, kind, name, key or None).

    ``Resource`` targets (APK's "the API's resources") count as references to the API.
    """
    found: list[tuple[str, str, str, str | None]] = []
    for resource in resources:
        if resource.get("spec") is not None:
            source = f"{resource['kind']}/{resource['metadata']['name']}"
            _visit(resource["spec"], resource["spec"], source, found)
    return found


def _visit(node: Any, spec: dict[str, Any], source: str, found: list[tuple[str, str, str, str | None]]) -> None:
    if isinstance(node, list):
        for item in node:
            _visit(item, spec, source, found)
        return
    if not isinstance(node, dict):
        return

    def add(kind: str, name: str, key: str | None = None) -> None:
        found.append((source, kind, name, key))

    for field_name, value in node.items():
        if field_name == "definitionFileRef":
            add("ConfigMap", value, "definition")
        elif field_name == "routeRefs":
            for name in value:
                add(_ROUTE_KINDS[spec["apiType"]], name)
        elif field_name in _TYPED_REFERENCE_FIELDS:
            for ref in value if isinstance(value, list) else [value]:
                if ref["kind"] not in _EXTERNAL_KINDS:
                    add("API" if ref["kind"] == "Resource" else ref["kind"], ref["name"])
        elif field_name == "backendRef":  # InterceptorService
            add("Backend", value["name"])
        elif field_name == "configMapRef":
            add("ConfigMap", value["name"], value["key"])
        elif field_name == "configMapRefs":
            for ref in value:
                add("ConfigMap", ref["name"], ref["key"])
        elif field_name == "secretRef":
            add("Secret", value["name"], value["usernameKey"])
            add("Secret", value["name"], value["passwordKey"])
        elif field_name == "valueFrom":
            add("Secret", value["name"], value["valueKey"])
        elif field_name in ("requestInterceptors", "responseInterceptors"):
            for ref in value:
                add("InterceptorService", ref["name"])
        elif field_name.endswith(("Ref", "Refs")):
            raise AssertionError(f"{source}: unknown reference field {field_name!r}; teach references() it")
        else:
            _visit(value, spec, source, found)


def dangling_references(resources: list[dict[str, Any]]) -> list[str]:
    """References to an object (or a ConfigMap/Secret key) the output does not hold."""
    emitted = {(r["kind"], r["metadata"]["name"]): r for r in resources}
    problems: list[str] = []
    for source, kind, name, key in references(resources):
        target = emitted.get((kind, name))
        if target is None:
            problems.append(f"{source} -> {kind}/{name}: not emitted")
        elif key is not None and key not in {**target.get("data", {}), **target.get("binaryData", {})}:
            problems.append(f"{source} -> {kind}/{name}: has no key {key!r}")
    return problems
