"""Translation of deployed APIs into gateway resources: what a user of the gateway would notice."""

from __future__ import annotations

import base64
import gzip
import json
import re
import string
from typing import Any
from urllib.parse import quote

import pytest
import re2
from hypothesis import assume, given
from hypothesis import strategies as st

from models.naming import (
    API_NAME_ANNOTATION,
    API_VERSION_ANNOTATION,
    CONFIG_HASH_ANNOTATION,
    ORGANIZATION_ANNOTATION,
    REVISION_LABEL,
    api_labels,
)
from models.resources import apply_rank
from translation.rest import path_match_regex, rewrite_full_path
from translation.translate import TranslationError, TranslationOptions, full_base_path, translate_api

from . import (
    API_KEY_VALUE,
    API_UUID,
    OTHER_UUID,
    PASSWORD,
    SDL,
    SECRET_NAME_KEY,
    api_data,
    deployed_api,
    graphql_data,
)

OPTIONS = TranslationOptions(namespace="apk-agent", gateway_labels=["Default"], secret_name_key=SECRET_NAME_KEY)
LITERAL_CHARACTERS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Z"))
PCHAR = set(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@")  # RFC 3986
CREDENTIALS = {
    "production": {"enabled": True, "type": "BASIC", "username": "backend-user", "password": PASSWORD},
    "sandbox": {
        "enabled": True,
        "type": "apikey",
        "apiKeyIdentifier": "X-Backend-Key",
        "apiKeyIdentifierType": "HEADER",
        "apiKeyValue": API_KEY_VALUE,
    },
}


def translate(
    data: dict[str, Any] | None = None, options: TranslationOptions = OPTIONS, **kwargs: Any
) -> list[dict[str, Any]]:
    return translate_api(deployed_api(data, **kwargs), options)


def of_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(resources, kind)
    assert len(found) == 1, [r["metadata"]["name"] for r in found]
    return found[0]


def rules_of(resources: list[dict[str, Any]], route_kind: str = "HTTPRoute") -> list[dict[str, Any]]:
    return [rule for route in of_kind(resources, route_kind) for rule in route["spec"]["rules"]]


def refuses(data: dict[str, Any] | None, *fragments: str, options: TranslationOptions = OPTIONS, **kwargs: Any) -> str:
    with pytest.raises(TranslationError) as caught:
        translate(data, options, **kwargs)
    for fragment in fragments:
        assert fragment in caught.value.message, caught.value.message
    return caught.value.message


class TestApi:
    @pytest.mark.parametrize(
        ("context", "version", "base_path"),
        [
            ("/pizzashack", "1.0.0", "/pizzashack/1.0.0"),
            ("/pizzashack/1.0.0", "1.0.0", "/pizzashack/1.0.0"),
            ("/pizzashack/{version}", "1.0.0", "/pizzashack/1.0.0"),
            ("pizzashack/", "v2", "/pizzashack/v2"),
            ("/t/wso2.com/pizzashack", "v1", "/t/wso2.com/pizzashack/v1"),
            ("/api/v11", "1", "/api/v11/1"),  # ends with "1" but not with "/1"
            ("/", "2.0", "/2.0"),
        ],
    )
    def test_base_path(self, context: str, version: str, base_path: str) -> None:
        assert full_base_path(context, version) == base_path
        api = one(translate(api_data(context=context, version=version)), "API")
        assert api["spec"]["basePath"] == base_path

    def test_context_the_gateway_cannot_route(self) -> None:
        refuses(api_data(context="/pizza shack"), "API 'PizzaShackAPI' 1.0.0 has context '/pizza shack'")

    def test_api_spec(self) -> None:
        data = api_data(
            isDefaultVersion=True,
            additionalProperties=[{"name": "team", "value": "pizza", "display": True}, {"name": "tier", "value": 3}],
        )
        resources = translate(
            data, TranslationOptions(namespace="apk-agent", gateway_labels=["Default"], environment="prod")
        )
        api = one(resources, "API")
        definition = one(resources, "ConfigMap")
        route = one(resources, "HTTPRoute")
        assert api["apiVersion"] == "dp.wso2.com/v1alpha3"
        assert api["spec"] == {
            "apiName": "PizzaShackAPI",
            "apiVersion": "1.0.0",
            "basePath": "/pizzashack/1.0.0",
            "organization": "carbon.super",
            "isDefaultVersion": True,
            "apiType": "REST",
            "definitionPath": "/api-definition",
            "definitionFileRef": definition["metadata"]["name"],
            "production": [{"routeRefs": [route["metadata"]["name"]]}],
            "apiProperties": [{"name": "team", "value": "pizza"}, {"name": "tier", "value": "3"}],
            "environment": "prod",
        }

    @pytest.mark.parametrize(
        ("api_type", "message"),
        [
            ("WS", "API 'PizzaShackAPI' 1.0.0 has type WS; this agent deploys REST (HTTP) and GraphQL APIs only"),
            ("SOAP", "has type SOAP"),
            ("WEBSUB", "has type WEBSUB"),
        ],
    )
    def test_unsupported_api_types(self, api_type: str, message: str) -> None:
        refuses(api_data(type=api_type), message)

    @pytest.mark.parametrize(
        ("field", "value"),
        [("name", "Pizza/Shack"), ("name", "x" * 61), ("version", "1.0 beta"), ("version", "v/1")],
    )
    def test_names_and_versions_the_crd_refuses(self, field: str, value: str) -> None:
        refuses(api_data(**{field: value}), "the gateway accepts")

    def test_no_operations(self) -> None:
        refuses(api_data(operations=[]), "has no operations")

    def test_metadata_on_every_object(self) -> None:
        resources = translate(api_data(endpointConfig=_endpoints(sandbox=True, security=CREDENTIALS)))
        labels = api_labels("carbon.super", API_UUID, "PizzaShackAPI", "1.0.0", "1")
        for resource in resources:
            metadata = resource["metadata"]
            assert metadata["namespace"] == "apk-agent"
            assert metadata["labels"] == labels
            assert metadata["annotations"][API_NAME_ANNOTATION] == "PizzaShackAPI"
            assert metadata["annotations"][API_VERSION_ANNOTATION] == "1.0.0"
            assert metadata["annotations"][ORGANIZATION_ANNOTATION] == "carbon.super"
        hashes = [r for r in resources if CONFIG_HASH_ANNOTATION in r["metadata"]["annotations"]]
        assert [r["kind"] for r in hashes] == ["API"]
        assert re.fullmatch(r"[0-9a-f]{16}", hashes[0]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION])

    def test_sorted_in_apply_order_with_the_api_last(self) -> None:
        resources = translate(api_data(endpointConfig=_endpoints(sandbox=True, security=CREDENTIALS)))
        ranks = [apply_rank(r) for r in resources]
        assert ranks == sorted(ranks)
        assert resources[-1]["kind"] == "API"

    def test_apis_with_scopes_throttling_and_cors_get_their_policies(self) -> None:
        data = api_data(
            scopes=[{"scope": {"name": "order:write", "displayName": "Order", "bindings": ["admin"]}, "shared": False}],
            apiThrottlingPolicy="10KPerMin",
            corsConfiguration={"corsConfigurationEnabled": True, "accessControlAllowOrigins": ["*"]},
            operations=[
                {
                    "target": "/order",
                    "verb": "POST",
                    "throttlingPolicy": "Unlimited",
                    "scopes": ["order:write"],
                    "operationPolicies": {
                        "request": [{"policyName": "addHeader", "parameters": {"headerName": "x", "headerValue": "1"}}]
                    },
                }
            ],
        )
        kinds = {r["kind"] for r in translate(data)}
        assert kinds == {
            "ConfigMap",
            "Backend",
            "Authentication",
            "HTTPRoute",
            "API",
            "Scope",
            "RateLimitPolicy",
            "APIPolicy",
        }


class TestRoutes:
    @pytest.mark.parametrize(
        ("target", "regex", "rewrite"),
        [
            ("/menu", "/menu", "/menu"),
            ("/order/{orderId}", "/order/([^/]+)", "/order/\\1"),
            ("/a/{x}/b/{y}", "/a/([^/]+)/b/([^/]+)", "/a/\\1/b/\\2"),
            ("/files/{name}.{ext}", "/files/([^/]+)\\.([^/]+)", "/files/\\1.\\2"),
            ("/files/*", "/files((?:/.*)?)", "/files\\1"),
            ("/users/{id}/*", "/users/([^/]+)((?:/.*)?)", "/users/\\1\\2"),
            ("/*", "((?:/.*)?)", "\\1"),
            ("/", "/", "/"),
            ("/menu.json", "/menu\\.json", "/menu.json"),
            ("/search?q={query}", "/search", "/search"),
            ("/orders/", "/orders", "/orders"),
            ("/menü/{id}", "/men(?:ü|(?i:%C3%BC))/([^/]+)", "/men%C3%BC/\\1"),
            ("/caf%c3%a9", "/caf(?:é|(?i:%C3%A9))", "/caf%C3%A9"),  # written encoded, lower-case
            ("/商品/*", "/(?:商品|(?i:%E5%95%86%E5%93%81))((?:/.*)?)", "/%E5%95%86%E5%93%81\\1"),
            ("/price list", "/price%20list", "/price%20list"),  # no request carries a raw space
            ("/a%2Fb/{x}", "/a(?i:%2F)b/([^/]+)", "/a%2Fb/\\1"),  # an encoded / is not a separator
            ("/100%", "/100%25", "/100%25"),
        ],
    )
    def test_path_regex_and_rewrite(self, target: str, regex: str, rewrite: str) -> None:
        assert path_match_regex(target) == regex
        assert rewrite_full_path(target) == rewrite
        rule = rules_of(translate(api_data(operations=[{"target": target, "verb": "GET"}])))[0]
        assert rule["matches"] == [{"path": {"type": "RegularExpression", "value": regex}, "method": "GET"}]
        assert rule["filters"][0] == {
            "type": "URLRewrite",
            "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": rewrite}},
        }

    @given(
        st.lists(
            st.one_of(
                st.from_regex(r"[a-z0-9._~-]{1,8}", fullmatch=True),
                st.from_regex(r"\{[a-zA-Z]{1,6}\}", fullmatch=True),
                st.from_regex(r"[a-z]{1,4}\{[a-z]{1,4}\}[.-][a-z]{1,3}", fullmatch=True),
            ),
            min_size=1,
            max_size=5,
        ),
        st.booleans(),
        st.lists(st.from_regex(r"[A-Za-z0-9._~%-]{1,12}", fullmatch=True), min_size=12, max_size=12),
    )
    def test_a_request_path_is_rewritten_to_itself(
        self, segments: list[str], wildcard: bool, values: list[str]
    ) -> None:
        # The gateway matches the request path (after the base path) with the regex and
        # substitutes the groups into the rewrite; for any concrete path the target
        # describes, the backend must receive that same path.
        target = "/" + "/".join(segments) + ("/*" if wildcard else "")
        fill = iter(values)
        concrete = "/" + "/".join(re.sub(r"\{[^}]*\}", lambda _: next(fill), s) for s in segments)
        if wildcard:
            concrete += "/" + next(fill) + "/" + next(fill)
        found = re.fullmatch(path_match_regex(target), concrete)
        assert found is not None, (target, concrete)
        assert found.expand(rewrite_full_path(target)) == concrete

    @pytest.mark.parametrize(
        "request_path",
        ["/menü/4/größe", "/men%C3%BC/4/gr%C3%B6%C3%9Fe", "/men%c3%bc/4/gr%c3%b6%c3%9fe", "/men%C3%bc/4/größe"],
    )
    def test_a_non_ascii_path_matches_raw_and_encoded_requests(self, request_path: str) -> None:
        target = "/menü/{item}/größe"
        regex = path_match_regex(target)
        assert re2.fullmatch(regex, request_path) is not None  # the gateway's regex engine
        found = re.fullmatch(regex, request_path)
        assert found is not None
        assert found.expand(rewrite_full_path(target)) == "/men%C3%BC/4/gr%C3%B6%C3%9Fe"
        assert re2.fullmatch(regex, "/menu/4/grosse") is None

    @given(
        st.lists(
            st.one_of(
                st.text(LITERAL_CHARACTERS, min_size=1, max_size=6).filter(lambda s: not set(s) & set("/{}?%")),
                st.from_regex(r"\{[a-zA-Z]{1,6}\}", fullmatch=True),
            ),
            min_size=1,
            max_size=4,
        ),
        st.sampled_from(["raw", "upper", "lower"]),
    )
    def test_any_literal_matches_however_the_client_encodes_it(self, segments: list[str], form: str) -> None:
        # A client sends the path raw (non-ASCII only: an ASCII character outside pchar is never
        # raw in a request line) or percent-encoded in either hex case; the backend always gets
        # the one encoded form.
        target = "/" + "/".join(segments)
        concrete = [re.sub(r"\{[^}]*\}", "v", s) for s in segments]
        encoded = "/" + "/".join(quote(s, safe="!$&'()*+,;=:@") for s in concrete)
        if form == "raw":
            assume(all(c in PCHAR or not c.isascii() for c in "".join(concrete)))
        sent = {
            "raw": "/" + "/".join(concrete),
            "upper": encoded,
            "lower": re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded),
        }[form]
        regex = path_match_regex(target)
        assert re2.fullmatch(regex, sent) is not None, (regex, sent)
        found = re.fullmatch(regex, sent)
        assert found is not None
        assert found.expand(rewrite_full_path(target)) == encoded

    @pytest.mark.parametrize(
        ("target", "other", "path"),
        [
            ("/{id}", "/{id}/salary", "/42/salary"),  # a parameter is one segment
            ("/menu/*", "/menus", "/menus"),  # a wildcard keeps the / boundary
            ("/*", "/orders", "/orders"),
        ],
    )
    def test_an_operation_never_matches_another_operations_path(self, target: str, other: str, path: str) -> None:
        assert re.fullmatch(path_match_regex(target), path) is None or re.fullmatch(path_match_regex(other), path)
        rules = rules_of(translate(api_data(operations=[{"target": t, "verb": "GET"} for t in (target, other)])))
        first = next(r for r in rules if re.fullmatch(r["matches"][0]["path"]["value"], path))
        assert first["matches"][0]["path"]["value"] == path_match_regex(other)

    def test_rules_go_most_specific_first(self) -> None:
        targets = ["/*", "/orders/{id}", "/orders/*", "/orders/pending", "/orders/{id}/items"]
        rules = rules_of(translate(api_data(operations=[{"target": t, "verb": "GET"} for t in targets])))
        assert [r["filters"][0]["urlRewrite"]["path"]["replaceFullPath"] for r in rules] == [
            "/orders/pending", "/orders/\\1", "/orders/\\1/items", "/orders\\1", "\\1",
        ]  # fmt: skip

    @pytest.mark.parametrize("verb", ["GET", "post", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    def test_verbs(self, verb: str) -> None:
        rule = rules_of(translate(api_data(operations=[{"target": "/menu", "verb": verb}])))[0]
        assert rule["matches"][0]["method"] == verb.upper()

    def test_unknown_verb(self) -> None:
        refuses(api_data(operations=[{"target": "/menu", "verb": "FETCH"}]), "has operation FETCH /menu")

    def test_route_shape(self) -> None:
        options = TranslationOptions(
            namespace="apk-agent",
            gateway_name="gw",
            gateway_namespace="apk-system",
            gateway_listener="https",
            gateway_labels=["Default", "Edge"],
        )
        resources = translate(
            None, options, environments=[("Default", "GW.Example.com"), ("Edge", "edge.example.com"), ("Other", "x.io")]
        )
        route = one(resources, "HTTPRoute")
        backend = one(resources, "Backend")
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert route["spec"]["parentRefs"] == [
            {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "gw",
                "namespace": "apk-system",
                "sectionName": "https",
            }
        ]
        assert route["spec"]["hostnames"] == ["edge.example.com", "gw.example.com"]
        for rule in route["spec"]["rules"]:
            assert rule["backendRefs"] == [
                {"group": "dp.wso2.com", "kind": "Backend", "name": backend["metadata"]["name"]}
            ]

    def test_gateway_namespace_defaults_to_the_namespace(self) -> None:
        route = one(translate(), "HTTPRoute")
        assert route["spec"]["parentRefs"][0]["namespace"] == "apk-agent"
        assert route["spec"]["parentRefs"][0]["name"] == "wso2-apk-default"
        assert route["spec"]["parentRefs"][0]["sectionName"] == "httpslistener"

    @pytest.mark.parametrize(
        ("sandbox", "routes"),
        [(False, {"production"}), (True, {"production", "sandbox"})],
    )
    def test_sandbox_route_only_with_a_sandbox_endpoint(self, sandbox: bool, routes: set[str]) -> None:
        resources = translate(api_data(endpointConfig=_endpoints(sandbox=sandbox)))
        api = one(resources, "API")
        assert {k for k in ("production", "sandbox") if k in api["spec"]} == routes
        route_names = {r["metadata"]["name"] for r in of_kind(resources, "HTTPRoute")}
        assert route_names == {ref for k in routes for ref in api["spec"][k][0]["routeRefs"]}
        hostnames = {h for r in of_kind(resources, "HTTPRoute") for h in r["spec"]["hostnames"]}
        assert hostnames == ({"gw.example.com", "sandbox.gw.example.com"} if sandbox else {"gw.example.com"})

    def test_sandbox_only(self) -> None:
        config = {"endpoint_type": "http", "sandbox_endpoints": {"url": "http://sandbox.backend/v1"}}
        resources = translate(api_data(endpointConfig=config))
        api = one(resources, "API")
        assert "production" not in api["spec"]
        assert one(resources, "HTTPRoute")["spec"]["hostnames"] == ["sandbox.gw.example.com"]

    def test_many_operations_split_into_routes_of_eight_rules(self) -> None:
        operations = [{"target": f"/items/{i}", "verb": "GET"} for i in range(19)]
        resources = translate(api_data(operations=operations))
        routes = of_kind(resources, "HTTPRoute")
        assert [len(r["spec"]["rules"]) for r in routes] == [8, 8, 3]
        assert one(resources, "API")["spec"]["production"] == [{"routeRefs": [r["metadata"]["name"] for r in routes]}]
        assert [m["path"]["value"] for rule in rules_of(resources) for m in rule["matches"]] == [
            f"/items/{i}" for i in range(19)
        ]

    def test_not_deployed_to_the_agents_environments(self) -> None:
        refuses(
            None,
            "is not deployed to any of this agent's environments (Default); its deployments name: Edge",
            environments=[("Edge", "e.example.com")],
        )

    def test_invalid_vhost(self) -> None:
        refuses(
            None,
            "has vhost 'gw_example.com', which is not a valid hostname",
            environments=[("Default", "gw_example.com")],
        )


class TestBackends:
    def test_backend_from_endpoint_url(self) -> None:
        resources = translate(api_data(endpointConfig=_endpoints(sandbox=True)))
        production, sandbox = sorted(of_kind(resources, "Backend"), key=lambda b: b["metadata"]["name"])
        assert production["apiVersion"] == "dp.wso2.com/v1alpha2"
        assert production["spec"] == {
            "services": [{"host": "pizza.backend.example", "port": 8443}],
            "protocol": "https",
            "basePath": "/v1",
        }
        assert sandbox["spec"] == {"services": [{"host": "sandbox.backend", "port": 80}], "protocol": "http"}

    @pytest.mark.parametrize(
        "url",
        [
            "ftp://files.example/x",
            "http://",
            "http://host:99999/x",
            "not a url",
            "http://{uri.var.host}/v1",
            "https://backend.example/v1?token=abc",
        ],
    )
    def test_unparseable_endpoint_urls(self, url: str) -> None:
        config = {"endpoint_type": "http", "production_endpoints": {"url": url}}
        message = refuses(api_data(endpointConfig=config), "API 'PizzaShackAPI' 1.0.0 has production endpoint")
        assert "token=abc" not in message  # a query string may carry a secret

    def test_url_with_credentials_is_refused_without_echoing_them(self) -> None:
        config = {
            "endpoint_type": "http",
            "production_endpoints": {"url": f"https://admin:{PASSWORD}@backend.example/v1"},
        }
        message = refuses(api_data(endpointConfig=config), "credentials in the URL")
        assert PASSWORD not in message

    def test_no_endpoints(self) -> None:
        for config in (None, {"endpoint_type": "http"}, {"endpoint_type": "http", "production_endpoints": {"url": ""}}):
            refuses(
                api_data(endpointConfig=config), "API 'PizzaShackAPI' 1.0.0 has no production and no sandbox endpoint"
            )

    def test_unsupported_endpoint_type(self) -> None:
        refuses(api_data(endpointConfig={"endpoint_type": "wsdl"}), "has endpoint type 'wsdl'")

    def test_aws_lambda_and_dynamic_endpoints_are_refused_by_name(self) -> None:
        lambda_config = {"endpoint_type": "awslambda", "amznRegion": "us-east-1", "access_method": "role-supplied"}
        refuses(api_data(endpointConfig=lambda_config), "has an AWS Lambda endpoint", "Lambda function URL")
        refuses(api_data(endpointConfig={"endpoint_type": "default"}), "has a dynamic endpoint")

    def test_load_balanced_endpoints(self) -> None:
        config = {
            "endpoint_type": "load_balance",
            "production_endpoints": [{"url": "http://a.backend/v1"}, {"url": "http://b.backend/v1"}],
        }
        resources = translate(api_data(endpointConfig=config))
        backends = of_kind(resources, "Backend")
        assert sorted(b["spec"]["services"][0]["host"] for b in backends) == ["a.backend", "b.backend"]
        for rule in rules_of(resources):
            assert sorted(ref["name"] for ref in rule["backendRefs"]) == sorted(b["metadata"]["name"] for b in backends)

    def test_load_balancing_over_different_base_paths(self) -> None:
        config = {
            "endpoint_type": "load_balance",
            "production_endpoints": [{"url": "http://a/v1"}, {"url": "http://b/v2"}],
        }
        refuses(api_data(endpointConfig=config), "different protocols or base paths")

    def test_failover_endpoints_are_refused(self) -> None:
        config = {
            "endpoint_type": "failover",
            "production_endpoints": {"url": "http://primary.backend"},
            "production_failovers": [{"url": "http://secondary.backend"}],
        }
        refuses(
            api_data(endpointConfig=config),
            "has failover production endpoints (http://secondary.backend)",
            "cannot be expressed by APK 1.3",
        )

    def test_failover_type_without_failover_endpoints_serves_the_primary(self) -> None:
        config = {"endpoint_type": "failover", "production_endpoints": {"url": "http://primary.backend"}}
        backend = one(translate(api_data(endpointConfig=config)), "Backend")
        assert backend["spec"]["services"] == [{"host": "primary.backend", "port": 80}]


class TestEndpointCredentials:
    def test_credentials_go_into_secrets_referenced_by_the_backends(self) -> None:
        resources = translate(api_data(endpointConfig=_endpoints(sandbox=True, security=CREDENTIALS)))
        secrets = {s["metadata"]["name"]: s for s in of_kind(resources, "Secret")}
        backends = {b["metadata"]["name"]: b for b in of_kind(resources, "Backend")}
        production = next(b for n, b in backends.items() if n.endswith("-production"))
        sandbox = next(b for n, b in backends.items() if n.endswith("-sandbox"))

        basic = production["spec"]["security"]["basic"]["secretRef"]
        secret = secrets[basic["name"]]
        assert secret["type"] == "Opaque"
        assert "stringData" not in secret
        assert _decoded(secret["data"]) == {"username": "backend-user", "password": PASSWORD}
        assert (basic["usernameKey"], basic["passwordKey"]) == ("username", "password")

        api_key = sandbox["spec"]["security"]["apiKey"]
        assert (api_key["in"], api_key["name"]) == ("Header", "X-Backend-Key")
        assert _decoded(secrets[api_key["valueFrom"]["name"]]["data"]) == {
            api_key["valueFrom"]["valueKey"]: API_KEY_VALUE
        }

    def test_no_credential_anywhere_outside_the_secrets(self) -> None:
        resources = translate(api_data(endpointConfig=_endpoints(sandbox=True, security=CREDENTIALS)))
        others = json.dumps([r for r in resources if r["kind"] != "Secret"])
        for value in (PASSWORD, API_KEY_VALUE):
            assert value not in others
            assert base64.b64encode(value.encode()).decode() not in others

    def test_query_placed_api_key(self) -> None:
        security = {"production": {**CREDENTIALS["sandbox"], "apiKeyIdentifierType": "QUERY_PARAMETER"}}
        backend = one(translate(api_data(endpointConfig=_endpoints(security=security))), "Backend")
        assert backend["spec"]["security"]["apiKey"]["in"] == "Query"

    def test_disabled_security_adds_nothing(self) -> None:
        security = {"production": {**CREDENTIALS["production"], "enabled": False}}
        resources = translate(api_data(endpointConfig=_endpoints(security=security)))
        assert not of_kind(resources, "Secret")
        assert "security" not in one(resources, "Backend")["spec"]

    @pytest.mark.parametrize("kind", ["OAUTH", "DIGEST"])
    def test_unsupported_endpoint_security(self, kind: str) -> None:
        security = {"production": {"enabled": True, "type": kind, "username": "u", "password": PASSWORD}}
        message = refuses(
            api_data(endpointConfig=_endpoints(security=security)), f"has {kind} production endpoint security"
        )
        assert PASSWORD not in message

    def test_rotated_password_is_a_new_secret_the_backend_references(self) -> None:
        # The gateway sees no change of a Secret's content; it sees the Backend's spec change.
        first = translate(api_data(endpointConfig=_endpoints(security=CREDENTIALS)))
        rotated = {"production": {**CREDENTIALS["production"], "password": "rotated"}}
        second = translate(api_data(endpointConfig=_endpoints(security=rotated)))
        before, after = one(first, "Secret"), one(second, "Secret")
        assert before["data"] != after["data"]
        assert before["metadata"]["name"] != after["metadata"]["name"]
        assert after["metadata"]["name"].startswith(before["metadata"]["name"][:-10])
        reference = one(second, "Backend")["spec"]["security"]["basic"]["secretRef"]["name"]
        assert reference == after["metadata"]["name"]


class TestAuthentication:
    @pytest.mark.parametrize(
        ("overrides", "auth_types"),
        [
            ({}, {"oauth2": {"header": "Authorization", "sendTokenToUpstream": False, "required": "mandatory"}}),
            (
                {"securityScheme": None, "authorizationHeader": "X-Token"},
                {"oauth2": {"header": "X-Token", "sendTokenToUpstream": False, "required": "mandatory"}},
            ),
            (
                {"securityScheme": ["api_key", "oauth_basic_auth_api_key_mandatory"], "apiKeyHeader": "X-API-Key"},
                {
                    "oauth2": {"disabled": True},
                    "apiKey": {
                        "keys": [
                            {"in": "Header", "name": "X-API-Key", "sendTokenToUpstream": False},
                            {"in": "Query", "name": "X-API-Key", "sendTokenToUpstream": False},
                        ],
                        "required": "mandatory",
                    },
                },
            ),
            (
                {
                    "securityScheme": ["oauth2", "api_key"],
                    "authorizationHeader": None,
                    "apiKeyHeader": None,
                },
                {
                    "oauth2": {"header": "Authorization", "sendTokenToUpstream": False, "required": "mandatory"},
                    "apiKey": {
                        "keys": [
                            {"in": "Header", "name": "ApiKey", "sendTokenToUpstream": False},
                            {"in": "Query", "name": "ApiKey", "sendTokenToUpstream": False},
                        ],
                        "required": "mandatory",
                    },
                },
            ),
        ],
    )
    def test_api_level_authentication(self, overrides: dict[str, Any], auth_types: dict[str, Any]) -> None:
        resources = translate(api_data(**overrides))
        auth = one(resources, "Authentication")
        assert auth["apiVersion"] == "dp.wso2.com/v1alpha2"
        assert auth["spec"] == {
            "default": {"disabled": False, "authTypes": auth_types},
            "targetRef": {
                "group": "gateway.networking.k8s.io",
                "kind": "API",
                "name": one(resources, "API")["metadata"]["name"],
            },
        }

    def test_no_security_scheme_disables_authentication(self) -> None:
        resources = translate(
            api_data(securityScheme=[], operations=[{"target": "/menu", "verb": "GET", "authType": "None"}])
        )
        auth = one(resources, "Authentication")
        assert auth["spec"]["default"] == {"disabled": True}
        assert [f["type"] for f in rules_of(resources)[0]["filters"]] == ["URLRewrite"]

    @pytest.mark.parametrize(
        ("schemes", "message"),
        [
            (["mutualssl", "mutualssl_mandatory"], "enables mutual TLS but carries no client certificate"),
            (["oauth2", "mutualssl"], "enables mutual TLS but carries no client certificate"),
            (["basic_auth", "oauth_basic_auth_api_key_mandatory"], "accepts basic_auth"),
            (["oauth2", "basic_auth", "oauth_basic_auth_api_key_mandatory"], "accepts basic_auth"),
            (["oauth_basic_auth_api_key_mandatory"], "is secured by oauth_basic_auth_api_key_mandatory only"),
            (["oauth2", "digest"], "has security scheme digest, which this agent does not know"),
        ],
    )
    def test_security_the_gateway_cannot_enforce(self, schemes: list[str], message: str) -> None:
        refuses(api_data(securityScheme=schemes), message)

    def test_unsecured_operations_get_a_disabled_authentication(self) -> None:
        operations = [
            {"target": "/menu", "verb": "GET", "authType": "None"},
            {"target": "/order", "verb": "POST", "authType": "Application & Application User"},
            {"target": "/health", "verb": "GET", "authType": "none"},
        ]
        resources = translate(api_data(operations=operations, endpointConfig=_endpoints(sandbox=True)))
        no_auth = next(a for a in of_kind(resources, "Authentication") if a["spec"]["default"] == {"disabled": True})
        assert no_auth["spec"]["targetRef"]["kind"] == "Resource"
        reference = {
            "type": "ExtensionRef",
            "extensionRef": {"group": "dp.wso2.com", "kind": "Authentication", "name": no_auth["metadata"]["name"]},
        }
        for route in of_kind(resources, "HTTPRoute"):
            with_ref = [reference in rule["filters"] for rule in route["spec"]["rules"]]
            assert with_ref == [True, False, True]


class TestGraphQL:
    def test_gql_routes(self) -> None:
        resources = translate(graphql_data(), definition=SDL)
        api = one(resources, "API")
        route = one(resources, "GQLRoute")
        backend = one(resources, "Backend")
        no_auth = next(a for a in of_kind(resources, "Authentication") if a["spec"]["default"] == {"disabled": True})
        assert not of_kind(resources, "HTTPRoute")
        assert api["spec"]["apiType"] == "GraphQL"
        assert api["spec"]["basePath"] == "/swapi/1.0.0"
        assert api["spec"]["production"] == [{"routeRefs": [route["metadata"]["name"]]}]
        assert route["apiVersion"] == "dp.wso2.com/v1alpha2"
        assert route["spec"]["backendRefs"] == [
            {"group": "dp.wso2.com", "kind": "Backend", "name": backend["metadata"]["name"]}
        ]
        assert route["spec"]["hostnames"] == ["gw.example.com"]
        assert route["spec"]["rules"] == [
            {"matches": [{"type": "QUERY", "path": "hero"}]},
            {
                "matches": [{"type": "QUERY", "path": "allHeroes"}],
                "filters": [
                    {
                        "extensionRef": {
                            "group": "dp.wso2.com",
                            "kind": "Authentication",
                            "name": no_auth["metadata"]["name"],
                        }
                    }
                ],
            },
            {"matches": [{"type": "MUTATION", "path": "addHero"}]},
        ]
        assert backend["spec"]["basePath"] == "/graphql"

    def test_schema_in_the_definition_config_map(self) -> None:
        resources = translate(graphql_data(), definition=SDL)
        packed = one(resources, "ConfigMap")["binaryData"]["definition"]
        assert gzip.decompress(base64.b64decode(packed)).decode() == SDL

    def test_subscriptions_are_refused(self) -> None:
        operations = [{"target": "hero", "verb": "QUERY"}, {"target": "heroAdded", "verb": "SUBSCRIPTION"}]
        message = refuses(
            graphql_data(operations=operations), "SUBSCRIPTION operations (heroAdded)", "GQLRoute", definition=SDL
        )
        assert message.startswith("API 'StarWarsAPI' 1.0.0 ")

    def test_schema_is_required(self) -> None:
        refuses(graphql_data(), "GraphQL API without a schema", definition=None)


class TestDeterminism:
    def test_same_input_same_bytes(self) -> None:
        data = api_data(endpointConfig=_endpoints(sandbox=True, security=CREDENTIALS))
        first = json.dumps(translate(data))
        second = json.dumps(translate(json.loads(json.dumps(data))))
        assert first == second

    def test_definition_is_gzip_without_a_timestamp(self) -> None:
        packed = base64.b64decode(one(translate(), "ConfigMap")["binaryData"]["definition"])
        assert packed[:2] == b"\x1f\x8b"
        assert packed[4:8] == b"\0\0\0\0"  # mtime

    def test_names_are_stable_across_revisions(self) -> None:
        data = api_data(endpointConfig=_endpoints(sandbox=True, security=CREDENTIALS))
        first = translate(data, revision="1")
        second = translate({**data, "revisionId": "2"}, revision="2")
        assert [(r["kind"], r["metadata"]["name"]) for r in first] == [
            (r["kind"], r["metadata"]["name"]) for r in second
        ]
        assert one(first, "API")["spec"] == one(second, "API")["spec"]
        assert {r["metadata"]["labels"][REVISION_LABEL] for r in second} == {"2"}

    def test_names_are_unique_across_apis(self) -> None:
        same_name_other_uuid = translate(api_data(id=OTHER_UUID))
        same_uuid_other_org = translate(organization="acme")
        original = translate()
        names = [
            {(r["kind"], r["metadata"]["name"]) for r in rs}
            for rs in (original, same_name_other_uuid, same_uuid_other_org)
        ]
        assert not names[0] & names[1]
        assert not names[0] & names[2]

    @pytest.mark.parametrize(
        "change",
        [
            {"operations": [{"target": "/menu", "verb": "GET"}]},
            {
                "endpointConfig": {
                    "endpoint_type": "http",
                    "production_endpoints": {"url": "https://pizza.backend.example:8443/v2"},
                }
            },
            {"securityScheme": []},
            {"securityScheme": ["api_key"], "apiKeyHeader": "X-Key"},
        ],
    )
    def test_any_change_changes_the_config_hash(self, change: dict[str, Any]) -> None:
        # The hash covers the API's other resources; a change to the API's own spec changes it anyway.
        def config_hash(resources: list[dict[str, Any]]) -> str:
            return str(one(resources, "API")["metadata"]["annotations"][CONFIG_HASH_ANNOTATION])

        assert config_hash(translate(api_data(**change))) != config_hash(translate())

    def test_definition_change_changes_the_config_hash(self) -> None:
        before = one(translate(), "API")["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        after = one(translate(definition='{"openapi": "3.0.2"}'), "API")["metadata"]["annotations"][
            CONFIG_HASH_ANNOTATION
        ]
        assert before != after


def _endpoints(*, sandbox: bool = False, security: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "endpoint_type": "http",
        "production_endpoints": {"url": "https://pizza.backend.example:8443/v1/"},
    }
    if sandbox:
        config["sandbox_endpoints"] = {"url": "http://sandbox.backend"}
    if security is not None:
        config["endpoint_security"] = security
    return config


def _decoded(data: dict[str, str]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in data.items()}
