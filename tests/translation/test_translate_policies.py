"""Scopes, rate limits, CORS, operation policies, certificates and endpoint overrides.

Each feature: what is generated, that it validates against the CRDs, and each refusal's message.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import pytest
from cryptography import x509

from models.naming import api_labels
from translation.crd_schemas import default_crd_dir, load_crd_schemas, validate_resources
from translation.translate import TranslationError, TranslationOptions, translate_api

from . import (
    API_UUID,
    CERTIFICATE,
    OTHER_CERTIFICATE,
    PASSWORD,
    SDL,
    SECRET_NAME_KEY,
    SWAGGER,
    api_data,
    deployed_api,
    graphql_data,
)

OPTIONS = TranslationOptions(namespace="apk-agent", gateway_labels=["Default"], secret_name_key=SECRET_NAME_KEY)
ADD_HEADER = {"policyName": "addHeader", "policyVersion": "v1", "parameters": {"headerName": "X-Tenant", "headerValue": "pizza"}}
REMOVE_HEADER = {"policyName": "removeHeader", "policyVersion": "v1", "parameters": {"headerName": "Server"}}
# Framing only: no certificate file may carry a key, whatever the key is.
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
INTERCEPTOR = {
    "policyName": "callInterceptorService",
    "policyVersion": "v1",
    "parameters": {"interceptorServiceURL": "https://fraud.risk:9081/check", "includes": "request_headers,request_body"},
}


def translate(data: dict[str, Any], options: TranslationOptions = OPTIONS, **kwargs: Any) -> list[dict[str, Any]]:
    resources = translate_api(deployed_api(data, **kwargs), options)
    if default_crd_dir().is_dir():
        assert validate_resources(resources, load_crd_schemas()) == []
    return resources


def refuses(data: dict[str, Any], *fragments: str, options: TranslationOptions = OPTIONS, **kwargs: Any) -> str:
    with pytest.raises(TranslationError) as caught:
        translate_api(deployed_api(data, **kwargs), options)
    for fragment in fragments:
        assert fragment in caught.value.message, caught.value.message
    return caught.value.message


def of_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def by_name(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources}


def rules(resources: list[dict[str, Any]], kind: str = "HTTPRoute") -> list[dict[str, Any]]:
    return [rule for route in of_kind(resources, kind) for rule in route["spec"]["rules"]]


def refs(rule: dict[str, Any], kind: str) -> list[str]:
    return [f["extensionRef"]["name"] for f in rule.get("filters", []) if f.get("extensionRef", {}).get("kind") == kind]


def operation(target: str = "/menu", verb: str = "GET", **fields: Any) -> dict[str, Any]:
    return {"target": target, "verb": verb, "authType": "Application & Application User", **fields}


class TestScopes:
    def test_one_scope_object_per_scope_name_referenced_from_each_rule(self) -> None:
        operations = [
            operation("/menu", scopes=["menu:read"]),
            operation("/order", "POST", scopes=["order:write", "admin"]),
            operation("/order/{id}", scopes=["order:write"]),
            operation("/health"),
        ]
        resources = translate(api_data(operations=operations))
        scopes = by_name(of_kind(resources, "Scope"))
        assert sorted(s["spec"]["names"][0] for s in scopes.values()) == ["admin", "menu:read", "order:write"]
        assert all(s["apiVersion"] == "dp.wso2.com/v1alpha1" and len(s["spec"]["names"]) == 1 for s in scopes.values())
        names = {
            (rule["matches"][0]["method"], rule["matches"][0]["path"]["value"]): [
                scopes[n]["spec"]["names"][0] for n in refs(rule, "Scope")
            ]
            for rule in rules(resources)
        }
        assert names == {
            ("GET", "/menu"): ["menu:read"],
            ("POST", "/order"): ["order:write", "admin"],
            ("GET", "/order/([^/]+)"): ["order:write"],
            ("GET", "/health"): [],
        }

    def test_scope_names_that_slug_alike_get_distinct_objects(self) -> None:
        resources = translate(api_data(operations=[operation(scopes=["order:write", "order-write"])]))
        assert len(of_kind(resources, "Scope")) == 2

    def test_scope_names_are_stable_and_labelled(self) -> None:
        first = translate(api_data(operations=[operation(scopes=["a"]), operation("/x", scopes=["b"])]))
        second = translate(api_data(operations=[operation("/x", scopes=["b"])]))
        b_first = next(s for s in of_kind(first, "Scope") if s["spec"]["names"] == ["b"])
        assert [s["metadata"]["name"] for s in of_kind(second, "Scope")] == [b_first["metadata"]["name"]]
        assert b_first["metadata"]["labels"] == api_labels("carbon.super", API_UUID, "PizzaShackAPI", "1.0.0", "1")


class TestRateLimits:
    @pytest.mark.parametrize(
        ("tier", "limit"),
        [
            ("10KPerMin", {"requestsPerUnit": 10000, "unit": "Minute"}),
            ("20KPerMin", {"requestsPerUnit": 20000, "unit": "Minute"}),
            ("50KPerMin", {"requestsPerUnit": 50000, "unit": "Minute"}),
            ("50kpermin", {"requestsPerUnit": 50000, "unit": "Minute"}),
            ("Unlimited", None),
            ("", None),
            (None, None),
        ],
    )
    def test_api_level_tier(self, tier: str | None, limit: dict[str, Any] | None) -> None:
        resources = translate(api_data(apiThrottlingPolicy=tier))
        policies = of_kind(resources, "RateLimitPolicy")
        if limit is None:
            assert policies == []
            return
        (policy,) = policies
        api = of_kind(resources, "API")[0]
        assert policy["apiVersion"] == "dp.wso2.com/v1alpha3"
        assert policy["spec"] == {
            "default": {"api": limit},
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "API", "name": api["metadata"]["name"]},
        }
        assert all(refs(rule, "RateLimitPolicy") == [] for rule in rules(resources))

    def test_operation_level_tiers_attach_to_their_rules(self) -> None:
        operations = [
            operation("/menu", throttlingPolicy="10KPerMin"),
            operation("/order", "POST", throttlingPolicy="Unlimited"),
            operation("/order/{id}", throttlingPolicy="50KPerMin"),
        ]
        resources = translate(api_data(operations=operations))
        policies = by_name(of_kind(resources, "RateLimitPolicy"))
        attached = [[policies[n]["spec"]["default"]["api"]["requestsPerUnit"] for n in refs(r, "RateLimitPolicy")] for r in rules(resources)]
        assert attached == [[10000], [], [50000]]
        for policy in policies.values():
            assert policy["spec"]["targetRef"] == {"group": "dp.wso2.com", "kind": "Resource", "name": of_kind(resources, "API")[0]["metadata"]["name"]}

    def test_an_api_level_tier_replaces_the_operation_tiers(self) -> None:
        operations = [operation(throttlingPolicy="10KPerMin"), operation("/x", throttlingPolicy="MyCustomTier")]
        resources = translate(api_data(apiThrottlingPolicy="50KPerMin", operations=operations))
        assert [p["spec"]["default"]["api"]["requestsPerUnit"] for p in of_kind(resources, "RateLimitPolicy")] == [50000]

    def test_configured_custom_tier(self) -> None:
        options = TranslationOptions(
            namespace="apk-agent", gateway_labels=["Default"], rate_limit_tiers={"Gold": (5000, "Hour")}
        )
        resources = translate(api_data(operations=[operation(throttlingPolicy="Gold")]), options)
        assert of_kind(resources, "RateLimitPolicy")[0]["spec"]["default"]["api"] == {"requestsPerUnit": 5000, "unit": "Hour"}

    @pytest.mark.parametrize("tiers", [{"Fast": (10, "Second")}, {"Zero": (0, "Minute")}])
    def test_tiers_the_gateway_cannot_count_are_rejected_in_the_options(self, tiers: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="requests per Minute, Hour, Day"):
            TranslationOptions(namespace="apk-agent", rate_limit_tiers=tiers)

    @pytest.mark.parametrize(
        ("overrides", "fragments"),
        [
            (
                {"apiThrottlingPolicy": "Gold5K"},
                ("API-level rate-limiting policy 'Gold5K' is a custom policy", "the agent knows 10KPerMin, 20KPerMin, 50KPerMin, Unlimited"),
            ),
            (
                {"operations": [operation("/menu", throttlingPolicy="Bronze")]},
                ("operation GET /menu rate-limiting policy 'Bronze'", "configure 'Bronze' in the agent's rate-limit tiers"),
            ),
            (
                {"maxTps": {"production": 100, "sandbox": 10}},
                ("sets maxTps (production 100, sandbox 10 requests per second", "counts per Minute, Hour, Day only"),
            ),
            ({"maxTps": {"sandbox": 5}}, ("sets maxTps (sandbox 5",)),
        ],
    )
    def test_limits_the_gateway_cannot_express(self, overrides: dict[str, Any], fragments: tuple[str, ...]) -> None:
        message = refuses(api_data(**overrides), *fragments)
        assert message.startswith("API 'PizzaShackAPI' 1.0.0")

    def test_empty_max_tps_is_fine(self) -> None:
        translate(api_data(maxTps={"production": None, "sandbox": None}))


class TestCors:
    def test_enabled_cors_becomes_an_api_policy(self) -> None:
        cors = {
            "corsConfigurationEnabled": True,
            "accessControlAllowOrigins": ["https://a.example"],
            "accessControlAllowCredentials": True,
            "accessControlAllowHeaders": ["authorization", "Content-Type"],
            "accessControlAllowMethods": ["GET", "POST"],
        }
        resources = translate(api_data(corsConfiguration=cors))
        (policy,) = of_kind(resources, "APIPolicy")
        assert policy["apiVersion"] == "dp.wso2.com/v1alpha4"
        assert policy["spec"] == {
            "default": {
                "subscriptionValidation": True,
                "cORSPolicy": {
                    "enabled": True,
                    "accessControlAllowCredentials": True,
                    "accessControlAllowHeaders": ["authorization", "Content-Type"],
                    "accessControlAllowMethods": ["GET", "POST"],
                    "accessControlAllowOrigins": ["https://a.example"],
                }
            },
            "targetRef": {"group": "dp.wso2.com", "kind": "API", "name": of_kind(resources, "API")[0]["metadata"]["name"]},
        }

    def test_disabled_cors_adds_nothing_but_subscription_validation(self) -> None:
        cors = {"corsConfigurationEnabled": False, "accessControlAllowOrigins": ["*"]}
        (policy,) = of_kind(translate(api_data(corsConfiguration=cors)), "APIPolicy")
        assert policy["spec"]["default"] == {"subscriptionValidation": True}


class TestSubscriptionValidation:
    @pytest.mark.parametrize("data", [api_data(), graphql_data()], ids=["rest", "graphql"])
    def test_every_api_lets_only_subscribed_applications_pass(self, data: dict[str, Any]) -> None:
        resources = translate(data, definition=SDL if data["type"] == "GRAPHQL" else SWAGGER)
        (api,) = of_kind(resources, "API")
        [policy] = [p for p in of_kind(resources, "APIPolicy") if p["spec"]["targetRef"]["kind"] == "API"]
        assert policy["spec"]["default"]["subscriptionValidation"] is True
        assert policy["spec"]["targetRef"]["name"] == api["metadata"]["name"]
        # The key mappings' envId (Default) is the API's environment: the API sets none.
        assert api["spec"].get("environment", "Default") == "Default"


class TestOperationPolicies:
    def test_header_policies_become_header_modifier_filters(self) -> None:
        policies = {"request": [ADD_HEADER, REMOVE_HEADER | {"parameters": {"headerName": "X-Debug"}}], "response": [REMOVE_HEADER]}
        resources = translate(api_data(operations=[operation(operationPolicies=policies), operation("/x")]))
        first, second = rules(resources)
        assert first["filters"][1:] == [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "X-Tenant", "value": "pizza"}], "remove": ["X-Debug"]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["Server"]}},
        ]
        assert [f["type"] for f in second["filters"]] == ["URLRewrite"]

    def test_the_last_policy_on_a_header_wins(self) -> None:
        policies = {"request": [ADD_HEADER, REMOVE_HEADER | {"parameters": {"headerName": "x-tenant"}}]}
        rule = rules(translate(api_data(operations=[operation(operationPolicies=policies)])))[0]
        assert rule["filters"][1] == {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["x-tenant"]}}

    def test_api_level_policies_apply_to_every_operation(self) -> None:
        resources = translate(api_data(apiPolicies={"request": [ADD_HEADER]}, operations=[operation(), operation("/x")]))
        assert all(rule["filters"][1]["type"] == "RequestHeaderModifier" for rule in rules(resources))

    @pytest.mark.parametrize(
        "policy",
        [
            INTERCEPTOR,
            {
                "policyName": "Interceptor",
                "policyVersion": "v1",
                "parameters": {"backendUrl": "https://fraud.risk:9081/check", "headersEnabled": True, "bodyEnabled": True},
            },
        ],
    )
    def test_interceptor_service(self, policy: dict[str, Any]) -> None:
        resources = translate(api_data(operations=[operation(operationPolicies={"request": [policy], "response": [policy]})]))
        services = by_name(of_kind(resources, "InterceptorService"))
        backends = by_name(of_kind(resources, "Backend"))
        (api_policy,) = [p for p in of_kind(resources, "APIPolicy") if p["spec"]["targetRef"]["kind"] == "Resource"]
        default = api_policy["spec"]["default"]
        request = services[default["requestInterceptors"][0]["name"]]
        response = services[default["responseInterceptors"][0]["name"]]
        assert request["spec"]["includes"] == ["request_headers", "request_body"]
        assert response["spec"]["includes"] == ["response_headers", "response_body"]
        interceptor_backend = backends[request["spec"]["backendRef"]["name"]]
        assert interceptor_backend["spec"] == {"services": [{"host": "fraud.risk", "port": 9081}], "protocol": "https", "basePath": "/check"}
        assert api_policy["spec"]["targetRef"]["kind"] == "Resource"
        assert refs(rules(resources)[0], "APIPolicy") == [api_policy["metadata"]["name"]]

    @pytest.mark.parametrize(
        ("policies", "fragments"),
        [
            (
                {"response": [{"policyName": "xmlToJson", "policyVersion": "v1"}]},
                ("API 'PizzaShackAPI' 1.0.0: operation GET /menu: policy 'xmlToJson' v1 has no equivalent in the gateway",),
            ),
            ({"fault": [{"policyName": "jsonFault", "policyVersion": "v2"}]}, ("operation GET /menu: fault policy 'jsonFault' v2",)),
            ({"request": [{"policyName": "addHeader", "parameters": {"headerValue": "x"}}]}, ("has no headerName parameter",)),
            (
                {"request": [{"policyName": "addHeader", "parameters": {"headerName": "Bad Header", "headerValue": "x"}}]},
                ("names header 'Bad Header', which is not a valid HTTP header name",),
            ),
            ({"request": [INTERCEPTOR, INTERCEPTOR]}, ("calls 2 request interceptor services; the gateway calls one per flow",)),
            (
                {"request": [INTERCEPTOR | {"parameters": {"interceptorServiceURL": "http://i", "includes": "request_cookies"}}]},
                ("includes request_cookies in the request flow",),
            ),
            (
                {"request": [INTERCEPTOR | {"parameters": {"interceptorServiceURL": "ftp://i"}}]},
                ("interceptor service 'ftp://i'; endpoint URLs must start with http:// or https://",),
            ),
        ],
    )
    def test_policies_the_gateway_cannot_express(self, policies: dict[str, Any], fragments: tuple[str, ...]) -> None:
        refuses(api_data(operations=[operation(operationPolicies=policies)]), *fragments)

    def test_api_level_unknown_policy_names_the_operation(self) -> None:
        refuses(api_data(apiPolicies={"request": [{"policyName": "jsonToXml"}]}), "operation GET /menu: policy 'jsonToXml'")


class TestGraphQL:
    def test_per_field_scopes_throttling_and_auth(self) -> None:
        operations = [
            {"target": "hero", "verb": "QUERY", "scopes": ["hero:read"], "throttlingPolicy": "10KPerMin"},
            {"target": "allHeroes", "verb": "QUERY", "authType": "None"},
            {"target": "addHero", "verb": "MUTATION", "throttlingPolicy": "Unlimited"},
        ]
        resources = translate(graphql_data(operations=operations), definition=SDL)
        hero, all_heroes, add_hero = rules(resources, "GQLRoute")
        assert [list(f) for f in hero["filters"]] == [["extensionRef"], ["extensionRef"]]
        assert [f["extensionRef"]["kind"] for f in hero["filters"]] == ["Scope", "RateLimitPolicy"]
        assert [f["extensionRef"]["kind"] for f in all_heroes["filters"]] == ["Authentication"]
        assert "filters" not in add_hero

    def test_header_policies_on_a_field_are_refused(self) -> None:
        operations = [{"target": "hero", "verb": "QUERY", "operationPolicies": {"request": [ADD_HEADER]}}]
        refuses(graphql_data(operations=operations), "operation QUERY hero: header policies cannot be applied to a GraphQL field", definition=SDL)

    def test_subscriptions_are_still_refused(self) -> None:
        refuses(graphql_data(operations=[{"target": "heroAdded", "verb": "SUBSCRIPTION"}]), "SUBSCRIPTION operations (heroAdded)", definition=SDL)


class TestMutualTls:
    @pytest.mark.parametrize(
        ("schemes", "oauth2_required", "mtls_required"),
        [
            (["mutualssl", "mutualssl_mandatory", "oauth2", "oauth_basic_auth_api_key_mandatory"], "mandatory", "mandatory"),
            (["mutualssl", "mutualssl_mandatory", "oauth2"], "optional", "mandatory"),
            (["mutualssl", "oauth2", "oauth_basic_auth_api_key_mandatory"], "mandatory", "optional"),
            (["mutualssl", "oauth2"], "optional", "optional"),
            (["mutualssl"], None, "mandatory"),
        ],
    )
    def test_client_certificates_are_trusted_from_a_config_map(
        self, schemes: list[str], oauth2_required: str | None, mtls_required: str
    ) -> None:
        certificates = {"acme-tpp.crt": CERTIFICATE, "partner one.crt": CERTIFICATE}
        resources = translate(api_data(securityScheme=schemes), client_certificates=certificates)
        auth = next(a for a in of_kind(resources, "Authentication") if "authTypes" in a["spec"]["default"])
        auth_types = auth["spec"]["default"]["authTypes"]
        config_map = by_name(of_kind(resources, "ConfigMap"))[auth_types["mtls"]["configMapRefs"][0]["name"]]
        assert auth_types["mtls"] == {
            "required": mtls_required,
            "configMapRefs": [
                {"name": config_map["metadata"]["name"], "key": "acme-tpp.crt"},
                {"name": config_map["metadata"]["name"], "key": "partner-one.crt"},
            ],
        }
        assert config_map["data"] == {"acme-tpp.crt": CERTIFICATE, "partner-one.crt": CERTIFICATE}
        assert auth_types["oauth2"].get("required") == oauth2_required
        if oauth2_required is None:
            assert auth_types["oauth2"] == {"disabled": True}

    @pytest.mark.parametrize(
        ("kwargs", "fragment"),
        [
            ({}, "enables mutual TLS but carries no client certificate"),
            ({"client_certificates": {"a.crt": "not a certificate"}}, "client certificate 'a.crt' is not a PEM certificate"),
            (
                {"client_certificates": {"a.crt": CERTIFICATE}, "client_bindings": [{"alias": "a", "certificate": "a.crt", "tierName": "Gold"}]},
                "limits callers of client certificate 'a' to tier 'Gold'",
            ),
            (
                {
                    "client_certificates": {"a.crt": CERTIFICATE},
                    "client_bindings": [{"alias": "a", "certificate": "a.crt", "keyType": "SANDBOX"}],
                },
                "limits client certificate 'a' to sandbox keys, but the gateway would trust it on the API's production routes",
            ),
        ],
    )
    def test_mutual_tls_the_gateway_cannot_express(self, kwargs: dict[str, Any], fragment: str) -> None:
        refuses(api_data(securityScheme=["mutualssl", "mutualssl_mandatory", "oauth2"]), fragment, **kwargs)

    def test_key_type_matching_the_only_endpoint_type_is_fine(self) -> None:
        translate(
            api_data(securityScheme=["mutualssl", "oauth2"]),
            client_certificates={"a.crt": CERTIFICATE},
            client_bindings=[{"alias": "a", "certificate": "a.crt", "keyType": "PRODUCTION", "tierName": "Unlimited"}],
        )


class TestEndpointTls:
    BINDINGS = [{"alias": "backend", "endpoint": "https://PIZZA.backend.example:8443/v1/", "certificate": "backend.crt"}]

    def test_https_backend_trusts_its_certificate(self) -> None:
        config = {
            "endpoint_type": "http",
            "production_endpoints": {"url": "https://pizza.backend.example:8443/v1"},
            "sandbox_endpoints": {"url": "https://sandbox.backend.example/v1"},
        }
        resources = translate(
            api_data(endpointConfig=config),
            endpoint_certificates={"backend.crt": CERTIFICATE, "unused.crt": CERTIFICATE},
            endpoint_bindings=[*self.BINDINGS, {"alias": "u", "endpoint": "https://elsewhere", "certificate": "unused.crt"}],
        )
        backends = by_name(of_kind(resources, "Backend"))
        production = next(b for n, b in backends.items() if n.endswith("-production"))
        sandbox = next(b for n, b in backends.items() if n.endswith("-sandbox"))
        reference = production["spec"]["tls"]["configMapRef"]
        assert reference["key"] == "backend.crt"
        assert by_name(of_kind(resources, "ConfigMap"))[reference["name"]]["data"] == {"backend.crt": CERTIFICATE}
        assert "tls" not in sandbox["spec"]

    def test_plain_http_backend_gets_no_tls(self) -> None:
        config = {"endpoint_type": "http", "production_endpoints": {"url": "http://pizza.backend.example:8443/v1"}}
        bindings = [{"alias": "b", "endpoint": "http://pizza.backend.example:8443/v1", "certificate": "b.crt"}]
        resources = translate(api_data(endpointConfig=config), endpoint_certificates={"b.crt": CERTIFICATE}, endpoint_bindings=bindings)
        assert "tls" not in of_kind(resources, "Backend")[0]["spec"]
        assert [re.search(r"-definition-[0-9a-f]{10}$", c["metadata"]["name"]) is not None for c in of_kind(resources, "ConfigMap")] == [True]

    @pytest.mark.parametrize(
        ("kwargs", "fragment"),
        [
            ({"endpoint_certificates": {"b.crt": CERTIFICATE}}, "without Endpoint-certificates/endpoint_certificates.json"),
            ({"endpoint_certificates": {}, "endpoint_bindings": BINDINGS}, "names 'backend.crt', which is not in Endpoint-certificates/"),
            (
                {"endpoint_certificates": {"backend.crt": CERTIFICATE[:-30]}, "endpoint_bindings": BINDINGS},
                "endpoint certificate 'backend.crt' has a -----BEGIN CERTIFICATE----- without its -----END CERTIFICATE----- line",
            ),
            (
                {"endpoint_certificates": {"backend.crt": CERTIFICATE + CERTIFICATE.replace("MIIB", "MIIC")}, "endpoint_bindings": BINDINGS},
                "endpoint certificate certificate 2 of 'backend.crt' is not a valid X.509 certificate",
            ),
            (
                {"endpoint_certificates": {"backend.crt": CERTIFICATE.replace("MIIB", "MI*B")}, "endpoint_bindings": BINDINGS},
                "endpoint certificate 'backend.crt' is not a valid X.509 certificate",
            ),
            (
                {"endpoint_certificates": {"backend.crt": CERTIFICATE + PRIVATE_KEY}, "endpoint_bindings": BINDINGS},
                "endpoint certificate 'backend.crt' contains a private key",
            ),
        ],
    )
    def test_endpoint_certificates_that_cannot_be_used(self, kwargs: dict[str, Any], fragment: str) -> None:
        message = refuses(api_data(), fragment, **kwargs)
        assert "MIGHAgEA" not in message

    def backend_trust(self, certificates: dict[str, str], bindings: list[dict[str, str]]) -> tuple[str, str]:
        resources = translate(api_data(), endpoint_certificates=certificates, endpoint_bindings=bindings)
        (backend,) = of_kind(resources, "Backend")
        reference = backend["spec"]["tls"]["configMapRef"]
        data = by_name(of_kind(resources, "ConfigMap"))[reference["name"]]["data"]
        assert list(data) == [reference["key"]]
        return reference["key"], data[reference["key"]]

    def test_several_certificates_for_one_endpoint_become_a_bundle(self) -> None:
        bindings = [{**self.BINDINGS[0], "alias": "new", "certificate": "rotated.crt"}, *self.BINDINGS]
        key, bundle = self.backend_trust({"backend.crt": CERTIFICATE, "rotated.crt": OTHER_CERTIFICATE}, bindings)
        assert key == "backend.crt-rotated.crt"
        assert bundle == CERTIFICATE + OTHER_CERTIFICATE  # by file name, not by the bindings' order
        assert [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(bundle.encode())] == [
            "CN=test-one.example",
            "CN=test-two.example",
        ]

    def test_the_same_certificate_twice_is_trusted_once(self) -> None:
        crlf = CERTIFICATE.replace("\n", "\r\n")
        bindings = [*self.BINDINGS, {**self.BINDINGS[0], "alias": "copy", "certificate": "copy.crt"}]
        assert self.backend_trust({"backend.crt": CERTIFICATE, "copy.crt": crlf}, bindings) == ("backend.crt", CERTIFICATE)

    def test_a_chain_and_one_of_its_certificates_share_the_bundle_without_repeats(self) -> None:
        bindings = [*self.BINDINGS, {**self.BINDINGS[0], "alias": "chain", "certificate": "chain.pem"}]
        lines = CERTIFICATE.splitlines()
        rewrapped = "\n".join(["# the provider's chain", lines[0], *textwrap.wrap("".join(lines[1:-1]), 76), lines[-1], ""])
        key, bundle = self.backend_trust({"backend.crt": OTHER_CERTIFICATE, "chain.pem": rewrapped + OTHER_CERTIFICATE}, bindings)
        assert (key, bundle) == ("backend.crt-chain.pem", OTHER_CERTIFICATE + CERTIFICATE)

    def test_files_whose_keys_collide_keep_both_certificates(self) -> None:
        resources = translate(
            api_data(securityScheme=["mutualssl", "oauth2"]),
            client_certificates={"partner a.crt": CERTIFICATE, "partner-a.crt": OTHER_CERTIFICATE},
        )
        (config_map,) = (c for c in of_kind(resources, "ConfigMap") if "client-certificates" in c["metadata"]["name"])
        assert sorted(config_map["data"].values()) == sorted([CERTIFICATE, OTHER_CERTIFICATE])
        (authentication,) = (a for a in of_kind(resources, "Authentication") if "mtls" in a["spec"]["default"]["authTypes"])
        assert sorted(r["key"] for r in authentication["spec"]["default"]["authTypes"]["mtls"]["configMapRefs"]) == sorted(config_map["data"])


class TestEnvironmentOverrides:
    OPTIONS = TranslationOptions(namespace="apk-agent", gateway_labels=["Default", "Edge"], secret_name_key=SECRET_NAME_KEY)
    ENVIRONMENTS = [("Default", "gw.example.com"), ("Edge", "edge.example.com"), ("Other", "other.example.com")]

    @pytest.mark.parametrize(
        "env_properties",
        [
            {"Default": {"productionEndpoint": "https://override.example/v2"}, "Edge": {"productionEndpoint": "https://override.example/v2"}},
            {"data": {API_UUID: {"Default": {"productionEndpoint": {"url": "https://override.example/v2"}}, "Edge": {"productionEndpoint": "https://override.example/v2"}}}},
        ],
    )
    def test_override_of_the_agents_environments_replaces_the_endpoint(self, env_properties: dict[str, Any]) -> None:
        resources = translate(api_data(), self.OPTIONS, environments=self.ENVIRONMENTS, env_properties=env_properties)
        (backend,) = of_kind(resources, "Backend")
        assert backend["spec"] == {"services": [{"host": "override.example", "port": 443}], "protocol": "https", "basePath": "/v2"}

    def test_sandbox_override_adds_a_sandbox_route(self) -> None:
        both = {"sandboxEndpoint": "http://sandbox.override"}
        resources = translate(api_data(), self.OPTIONS, environments=self.ENVIRONMENTS, env_properties={"Default": both, "Edge": both})
        assert len(of_kind(resources, "HTTPRoute")) == 2

    def test_overrides_of_other_environments_are_not_ours(self) -> None:
        env_properties = {"Other": {"productionEndpoint": "https://other.example"}}
        resources = translate(api_data(), self.OPTIONS, environments=self.ENVIRONMENTS, env_properties=env_properties)
        assert of_kind(resources, "Backend")[0]["spec"]["services"][0]["host"] == "pizza.backend.example"

    def test_environments_that_disagree_are_refused(self) -> None:
        env_properties = {"Default": {"productionEndpoint": "https://user:pw@a.example"}}
        message = refuses(
            api_data(),
            "has different production endpoints per environment in env_properties.json (Default: https://***@a.example, Edge: the API endpoint)",
            options=self.OPTIONS,
            environments=self.ENVIRONMENTS,
            env_properties=env_properties,
        )
        assert "pw" not in message


class TestEverythingTogether:
    def data(self) -> dict[str, Any]:
        return api_data(
            apiThrottlingPolicy="10KPerMin",
            corsConfiguration={"corsConfigurationEnabled": True, "accessControlAllowOrigins": ["*"]},
            endpointConfig={
                "endpoint_type": "http",
                "production_endpoints": {"url": "https://pizza.backend.example:8443/v1"},
                "endpoint_security": {"production": {"enabled": True, "type": "BASIC", "username": "u", "password": PASSWORD}},
            },
            operations=[
                operation(scopes=["menu:read"], operationPolicies={"request": [ADD_HEADER, INTERCEPTOR]}),
                operation("/order", "POST", authType="None", scopes=["order:write"]),
            ],
        )

    def test_byte_for_byte_deterministic(self) -> None:
        first = json.dumps(translate(self.data()))
        assert first == json.dumps(translate(json.loads(json.dumps(self.data()))))

    def test_credentials_only_in_the_secret(self) -> None:
        resources = translate(self.data())
        assert PASSWORD not in json.dumps([r for r in resources if r["kind"] != "Secret"])

    def test_apply_order_puts_dependencies_first(self) -> None:
        kinds = [r["kind"] for r in translate(self.data())]
        for dependency, dependent in (("Backend", "InterceptorService"), ("InterceptorService", "APIPolicy"), ("Scope", "HTTPRoute"), ("RateLimitPolicy", "API")):
            assert max(i for i, k in enumerate(kinds) if k == dependency) < min(i for i, k in enumerate(kinds) if k == dependent)
        assert kinds[-1] == "API"
