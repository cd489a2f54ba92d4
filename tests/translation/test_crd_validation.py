"""Every generated object validates against the CRD schema of the exact version it names.

The CRDs are read from ``$GATEWAY_AGENT_CRD_DIR`` (default ``<repo>/../shared/apk-crds``);
without them these tests are skipped, saying where they looked.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from translation.artifacts import parse_runtime_artifacts
from translation.crd_schemas import CrdSchemas, validate_resources
from translation.translate import TranslationOptions, translate_api

from . import (
    API_KEY_VALUE,
    API_UUID,
    CERTIFICATE,
    PASSWORD,
    SDL,
    SECRET_NAME_KEY,
    api_data,
    dangling_references,
    deployed_api,
    deployments_json,
    graphql_data,
    project_files,
    zip_bytes,
)

OPTIONS = TranslationOptions(
    namespace="apk-agent", gateway_labels=["Default", "Edge"], environment="prod", secret_name_key=SECRET_NAME_KEY
)
ENVIRONMENTS = [("Default", "gw.example.com"), ("Edge", "edge.example.com")]


def _everything() -> dict[str, Any]:
    return api_data(
        isDefaultVersion=True,
        securityScheme=["oauth2", "api_key", "mutualssl"],
        additionalProperties=[{"name": "team", "value": "pizza"}],
        apiThrottlingPolicy="20KPerMin",
        corsConfiguration={"corsConfigurationEnabled": True, "accessControlAllowOrigins": ["https://a.example"]},
        endpointConfig={
            "endpoint_type": "load_balance",
            "production_endpoints": [{"url": "https://a.backend:8443/v1"}, {"url": "https://b.backend:8443/v1"}],
            "sandbox_endpoints": {"url": "http://sandbox.backend/v1"},
            "endpoint_security": {
                "production": {"enabled": True, "type": "BASIC", "username": "u", "password": PASSWORD},
                "sandbox": {
                    "enabled": True,
                    "type": "apikey",
                    "apiKeyIdentifier": "X-Key",
                    "apiKeyValue": API_KEY_VALUE,
                },
            },
        },
        operations=[
            {"target": "/menu", "verb": "GET", "authType": "None", "scopes": ["menu:read"]},
            {
                "target": "/order/{orderId}",
                "verb": "PUT",
                "scopes": ["order:write", "admin"],
                "operationPolicies": {
                    "request": [
                        {"policyName": "addHeader", "parameters": {"headerName": "X-Tenant", "headerValue": "pizza"}},
                        {
                            "policyName": "callInterceptorService",
                            "parameters": {
                                "interceptorServiceURL": "https://interceptor.backend:9081",
                                "includes": "request_headers,request_body",
                            },
                        },
                    ],
                    "response": [{"policyName": "removeHeader", "parameters": {"headerName": "Server"}}],
                },
            },
            {"target": "/files/*", "verb": "GET"},
            {"target": "/*", "verb": "OPTIONS"},
            *({"target": f"/items/{i}/{{id}}.json", "verb": "DELETE"} for i in range(12)),
        ],
    )


ENDPOINT_BINDINGS = [{"alias": "a", "endpoint": "https://a.backend:8443/v1", "certificate": "a.crt"}]
APIS = {
    "rest-everything": lambda: deployed_api(
        _everything(),
        environments=ENVIRONMENTS,
        client_certificates={"tpp.crt": CERTIFICATE},
        endpoint_certificates={"a.crt": CERTIFICATE},
        endpoint_bindings=ENDPOINT_BINDINGS,
    ),
    "rest-minimal-no-definition": lambda: deployed_api(api_data(), definition=None),
    "rest-sandbox-only-api-key": lambda: deployed_api(
        api_data(
            securityScheme=["api_key"],
            endpointConfig={"endpoint_type": "http", "sandbox_endpoints": {"url": "http://sandbox.backend"}},
        )
    ),
    "rest-unsecured": lambda: deployed_api(api_data(securityScheme=[])),
    "graphql": lambda: deployed_api(graphql_data(), definition=SDL, environments=ENVIRONMENTS),
    "graphql-scopes-and-throttling": lambda: deployed_api(
        graphql_data(
            operations=[
                {"target": "hero", "verb": "QUERY", "scopes": ["hero:read"], "throttlingPolicy": "10KPerMin"},
                {"target": "addHero", "verb": "MUTATION", "authType": "None", "throttlingPolicy": "50KPerMin"},
            ]
        ),
        definition=SDL,
    ),
}


@pytest.mark.parametrize("name", sorted(APIS))
def test_generated_objects_validate(crds: CrdSchemas, name: str) -> None:
    resources = translate_api(APIS[name](), OPTIONS)
    assert validate_resources(resources, crds) == []


@pytest.mark.parametrize("name", sorted(APIS))
def test_no_reference_dangles(name: str) -> None:
    assert dangling_references(translate_api(APIS[name](), OPTIONS)) == []


def test_from_apis_zip_to_valid_resources(crds: CrdSchemas) -> None:
    inner = f"{API_UUID}-4.zip"
    files = project_files(_everything())
    files["PizzaShackAPI-1.0.0/Client-certificates/tpp.crt"] = CERTIFICATE
    files["PizzaShackAPI-1.0.0/Endpoint-certificates/a.crt"] = CERTIFICATE
    files["PizzaShackAPI-1.0.0/Endpoint-certificates/endpoint_certificates.json"] = json.dumps(
        {"type": "endpoint_certificates", "version": "v4.3.0", "data": ENDPOINT_BINDINGS}
    )
    archive = zip_bytes(
        {
            "deployments.json": deployments_json((inner, "carbon.super", ENVIRONMENTS)),
            inner: zip_bytes(files),
        }
    )
    (deployed,) = parse_runtime_artifacts(archive).apis
    resources = translate_api(deployed, OPTIONS)
    assert validate_resources(resources, crds) == []
    assert {r["metadata"]["labels"]["gateway-agent.wso2.com/revision"] for r in resources} == {"1"}
    assert resources == translate_api(APIS["rest-everything"](), OPTIONS)


def test_every_generated_kind_is_checked_against_a_served_version(crds: CrdSchemas) -> None:
    resources = translate_api(APIS["rest-everything"](), OPTIONS) + translate_api(APIS["graphql"](), OPTIONS)
    custom = {(r["apiVersion"], r["kind"]) for r in resources if r["apiVersion"] != "v1"}
    assert custom == {
        ("dp.wso2.com/v1alpha3", "API"),
        ("dp.wso2.com/v1alpha2", "Backend"),
        ("dp.wso2.com/v1alpha2", "Authentication"),
        ("dp.wso2.com/v1alpha2", "GQLRoute"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("dp.wso2.com/v1alpha1", "Scope"),
        ("dp.wso2.com/v1alpha3", "RateLimitPolicy"),
        ("dp.wso2.com/v1alpha4", "APIPolicy"),
        ("dp.wso2.com/v1alpha1", "InterceptorService"),
    }
    assert custom <= set(crds.kinds())
    assert {r["kind"] for r in resources if r["apiVersion"] == "v1"} == {"ConfigMap", "Secret"}


def test_gqlroute_has_no_subscription_match(crds: CrdSchemas) -> None:
    # Why SUBSCRIPTION operations are refused: the served GQLRoute cannot express them.
    schema = crds.schema("dp.wso2.com/v1alpha2", "GQLRoute")
    assert schema is not None
    match = schema["properties"]["spec"]["properties"]["rules"]["items"]["properties"]["matches"]["items"]
    assert match["properties"]["type"]["enum"] == ["QUERY", "MUTATION"]


class TestTheValidatorCatchesMistakes:
    """The checks above are only worth something if a wrong object fails them."""

    @pytest.fixture
    def resources(self) -> list[dict[str, Any]]:
        return translate_api(APIS["rest-everything"](), OPTIONS)

    @staticmethod
    def first(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        return next(r for r in resources if r["kind"] == kind)

    def test_unknown_field(self, crds: CrdSchemas, resources: list[dict[str, Any]]) -> None:
        backend = copy.deepcopy(self.first(resources, "Backend"))
        backend["spec"]["basepath"] = "/typo"
        assert any("'basepath' was unexpected" in p for p in crds.validate(backend))

    def test_wrong_enum(self, crds: CrdSchemas, resources: list[dict[str, Any]]) -> None:
        api = copy.deepcopy(self.first(resources, "API"))
        api["spec"]["apiType"] = "HTTP"
        assert any(p.startswith(f"API/{api['metadata']['name']}: spec.apiType:") for p in crds.validate(api))

    def test_prefix_rewrite_on_a_regex_match(self, crds: CrdSchemas, resources: list[dict[str, Any]]) -> None:
        route = copy.deepcopy(self.first(resources, "HTTPRoute"))
        route["spec"]["rules"][0]["filters"][0]["urlRewrite"]["path"] = {
            "type": "ReplacePrefixMatch",
            "replacePrefixMatch": "/v1",
        }
        assert any("ReplacePrefixMatch needs exactly one PathPrefix match" in p for p in crds.validate(route))

    def test_too_many_rules(self, crds: CrdSchemas, resources: list[dict[str, Any]]) -> None:
        route = copy.deepcopy(self.first(resources, "HTTPRoute"))
        route["spec"]["rules"] = route["spec"]["rules"] * 3
        assert any("spec.rules" in p for p in crds.validate(route))

    def test_unserved_version(self, crds: CrdSchemas, resources: list[dict[str, Any]]) -> None:
        api = copy.deepcopy(self.first(resources, "API"))
        api["apiVersion"] = "dp.wso2.com/v1beta9"
        assert crds.validate(api) == [
            f"API/{api['metadata']['name']}: dp.wso2.com/v1beta9 API is not served by the CRDs "
            "(served versions of API: dp.wso2.com/v1alpha1, dp.wso2.com/v1alpha2, dp.wso2.com/v1alpha3)"
        ]

    def test_secret_shape(self, crds: CrdSchemas, resources: list[dict[str, Any]]) -> None:
        secret = copy.deepcopy(self.first(resources, "Secret"))
        secret["data"]["password"] = "not base64!"
        secret["metadata"]["name"] = "Not_A_Name"
        problems = crds.validate(secret)
        assert any("data.password is not valid base64" in p for p in problems)
        assert any("metadata.name 'Not_A_Name'" in p for p in problems)

    def test_repeated_header_modifier(self, crds: CrdSchemas, resources: list[dict[str, Any]]) -> None:
        route = copy.deepcopy(self.first(resources, "HTTPRoute"))
        modifier = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["X-A"]}}
        route["spec"]["rules"][0]["filters"] += [modifier, modifier]
        assert any("RequestHeaderModifier filter cannot be repeated" in p for p in crds.validate(route))

    def test_rate_limit_per_second(self, crds: CrdSchemas, resources: list[dict[str, Any]]) -> None:
        policy = copy.deepcopy(self.first(resources, "RateLimitPolicy"))
        policy["spec"]["default"]["api"]["unit"] = "Second"
        assert any("spec.default.api.unit" in p for p in crds.validate(policy))

    def test_label_value_too_long(self, crds: CrdSchemas, resources: list[dict[str, Any]]) -> None:
        config_map = copy.deepcopy(self.first(resources, "ConfigMap"))
        config_map["metadata"]["labels"]["api-name"] = "x" * 64
        assert any("label 'api-name' has invalid value" in p for p in crds.validate(config_map))
