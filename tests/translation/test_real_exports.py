"""What real API Manager exports carry beyond the basics: subtypes, prototypes, Lambda endpoints,
transports, key managers, custom policies and GraphQL complexity. Each is translated, refused
naming the feature and the API, or deployed with a warning that names what is not enforced."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from models.artifact import FieldComplexity, PolicySpecification
from translation.artifacts import ArtifactError, parse_api_project_zip
from translation.translate import Translation, TranslationError, TranslationOptions, translate

from . import SDL, SECRET_NAME_KEY, api_data, deployed_api, graphql_data, project_files, zip_bytes

OPTIONS = TranslationOptions(namespace="apk-agent", gateway_labels=["Default"], secret_name_key=SECRET_NAME_KEY)
WITH_HTTP = OPTIONS.model_copy(update={"gateway_http_listener": "httplistener"})


def run(data: dict[str, Any], options: TranslationOptions = OPTIONS, **kwargs: Any) -> Translation:
    return translate(deployed_api(data, **kwargs), options)


def refused(data: dict[str, Any], options: TranslationOptions = OPTIONS, **kwargs: Any) -> str:
    with pytest.raises(TranslationError) as caught:
        run(data, options, **kwargs)
    assert "PizzaShackAPI" in caught.value.message or "StarWarsAPI" in caught.value.message
    return caught.value.message


def listeners(translation: Translation) -> list[list[str]]:
    return [
        [p["sectionName"] for p in r["spec"]["parentRefs"]]
        for r in translation.resources
        if r["kind"] in ("HTTPRoute", "GQLRoute")
    ]


class TestSubtypes:
    def test_an_ai_api_is_refused_naming_its_provider(self) -> None:
        configuration = json.dumps({"llmProviderName": "MistralAI", "llmProviderApiVersion": "0.0.2"})
        message = refused(api_data(subtypeConfiguration={"subtype": "AIAPI", "_configuration": configuration}))
        assert "is an AI API (LLM provider 'MistralAI' 0.0.2)" in message

    def test_the_rest_api_form_of_the_configuration_is_read_too(self) -> None:
        subtype = {"subtype": "AIAPI", "configuration": {"llmProviderId": "b3c1-openai"}}
        assert "LLM provider 'b3c1-openai'" in refused(api_data(subtypeConfiguration=subtype))

    def test_an_mcp_server_is_refused_by_name(self) -> None:
        assert "is an MCP server" in refused(api_data(subtypeConfiguration={"subtype": "EXISTING_API"}))

    def test_the_default_subtype_deploys(self) -> None:
        assert run(api_data(subtypeConfiguration={"subtype": "DEFAULT"})).resources


class TestPrototypes:
    @pytest.mark.parametrize(
        ("fields", "named"),
        [
            ({"endpointImplementationType": "INLINE"}, "an inline-script prototype"),
            ({"endpointImplementationType": "MOCKED_OAS"}, "a mocked (OpenAPI example) prototype"),
            (
                {"endpointConfig": {"implementation_status": "prototyped", "production_endpoints": {"url": "http://x"}}},
                "a prototype",
            ),
        ],
    )
    def test_a_prototype_is_refused_as_a_prototype_not_as_missing_an_endpoint(
        self, fields: dict[str, Any], named: str
    ) -> None:
        message = refused(api_data(**fields))
        assert named in message and "add an endpoint URL" not in message

    def test_a_real_implementation_deploys(self) -> None:
        assert run(api_data(endpointImplementationType="ENDPOINT")).resources


class TestTransports:
    def test_https_only_attaches_to_the_https_listener_without_a_word(self) -> None:
        translation = run(api_data(transport=["https"]), WITH_HTTP)
        assert listeners(translation) == [["httpslistener"]] and translation.warnings == []

    def test_http_and_https_attach_to_both_listeners_when_there_is_one_for_http(self) -> None:
        translation = run(api_data(transport="http,https"), WITH_HTTP)
        assert listeners(translation) == [["httpslistener", "httplistener"]] and translation.warnings == []

    def test_http_without_an_http_listener_is_a_warning_not_a_silent_drop(self) -> None:
        translation = run(api_data(transport=["http", "https"]))
        assert listeners(translation) == [["httpslistener"]]
        [warning] = translation.warnings
        assert "allows plain HTTP" in warning and "GATEWAY_HTTP_LISTENER" in warning

    def test_http_only_needs_the_http_listener(self) -> None:
        assert "allows HTTP only" in refused(api_data(transport=["http"]))
        assert listeners(run(api_data(transport=["http"]), WITH_HTTP)) == [["httplistener"]]

    def test_graphql_routes_follow_the_transports_too(self) -> None:
        translation = run(graphql_data(transport=["http", "https"]), WITH_HTTP, definition=SDL)
        assert listeners(translation) == [["httpslistener", "httplistener"]]

    def test_an_unknown_transport_is_refused(self) -> None:
        assert "has transport jms" in refused(api_data(transport=["https", "jms"]))

    def test_no_transport_listed_means_https(self) -> None:
        translation = run(api_data(transport=[]))
        assert listeners(translation) == [["httpslistener"]] and translation.warnings == []


class TestKeyManagers:
    @pytest.mark.parametrize("allowed", [["all"], ["All"], [], ["Resident Key Manager"]])
    def test_all_key_managers_or_the_gateways_own_deploy_quietly(self, allowed: list[str]) -> None:
        assert run(api_data(keyManagers=allowed, transport=["https"])).warnings == []

    def test_an_api_limited_to_another_key_manager_is_refused(self) -> None:
        message = refused(api_data(keyManagers=["Okta"]))
        assert "'Okta' only" in message and "'Resident Key Manager'" in message

    def test_the_gateways_key_managers_are_a_setting(self) -> None:
        options = OPTIONS.model_copy(update={"key_managers": ["Okta"]})
        assert run(api_data(keyManagers=["Okta"], transport=["https"]), options).warnings == []
        assert "'Okta'" in refused(api_data(keyManagers=["Resident Key Manager"]), options)

    def test_a_key_manager_the_gateway_lacks_is_a_warning(self) -> None:
        translation = run(api_data(keyManagers=["Resident Key Manager", "Keycloak"], transport=["https"]))
        [warning] = translation.warnings
        assert "'Keycloak'" in warning and "refused" in warning

    def test_without_oauth2_key_managers_do_not_matter(self) -> None:
        assert run(api_data(keyManagers=["Okta"], securityScheme=["api_key"], transport=["https"])).resources


class TestCustomPolicies:
    def with_policy(self, name: str, version: str | None) -> dict[str, Any]:
        policy: dict[str, Any] = {"policyName": name, "parameters": {"headerName": "X-Audit", "headerValue": "1"}}
        if version is not None:
            policy["policyVersion"] = version
        operation = {"target": "/menu", "verb": "GET", "operationPolicies": {"request": [policy]}}
        return api_data(operations=[operation], transport=["https"])

    def project_with(self, data: dict[str, Any], specs: dict[str, PolicySpecification]) -> Translation:
        api = deployed_api(data)
        api = api.model_copy(update={"project": api.project.model_copy(update={"custom_policies": specs})})
        return translate(api, OPTIONS)

    def test_a_shipped_policy_is_refused_even_under_a_common_name(self) -> None:
        specs = {"addHeader_v2.yaml": PolicySpecification(name="addHeader", version="v2")}
        with pytest.raises(TranslationError, match=r"custom policy of the project \(Policies/addHeader_v2.yaml\)"):
            self.project_with(self.with_policy("addHeader", "v2"), specs)

    def test_the_common_policy_of_another_version_still_translates(self) -> None:
        specs = {"addHeader_v2.yaml": PolicySpecification(name="addHeader", version="v2")}
        translation = self.project_with(self.with_policy("addHeader", "v1"), specs)
        assert any(r["kind"] == "HTTPRoute" for r in translation.resources)

    def test_an_unversioned_reference_to_a_shipped_policy_is_refused(self) -> None:
        specs = {"auditLog.yaml": PolicySpecification(name="auditLog", version="v1")}
        with pytest.raises(TranslationError, match="Policies/auditLog.yaml"):
            self.project_with(self.with_policy("auditLog", None), specs)

    def test_the_parser_reads_policies_and_not_their_templates(self) -> None:
        spec = {"type": "operation_policy_specification", "data": {"name": "auditLog", "version": 1}}
        files = project_files(api_data())
        files["PizzaShackAPI-1.0.0/Policies/auditLog_v1.yaml"] = yaml.safe_dump(spec)
        files["PizzaShackAPI-1.0.0/Policies/auditLog_v1.j2"] = "<log level='full'/>"
        project = parse_api_project_zip(zip_bytes(files), name="p.zip")
        assert project.custom_policies == {"auditLog_v1.yaml": PolicySpecification(name="auditLog", version="1")}

    def test_a_policy_file_without_a_name_is_a_bad_artifact_naming_the_file(self) -> None:
        files = project_files(api_data())
        files["PizzaShackAPI-1.0.0/Policies/broken.yaml"] = yaml.safe_dump({"type": "x", "data": {"version": "v1"}})
        with pytest.raises(ArtifactError, match="broken.yaml"):
            parse_api_project_zip(zip_bytes(files), name="p.zip")


class TestGraphqlComplexity:
    def test_complexity_values_are_a_warning(self) -> None:
        api = deployed_api(graphql_data(transport=["https"]), definition=SDL)
        values = [FieldComplexity(type="Query", field="hero", complexity_value=4)]
        api = api.model_copy(update={"project": api.project.model_copy(update={"graphql_complexity": values})})
        [warning] = translate(api, OPTIONS).warnings
        assert "query-complexity values of 1 GraphQL field(s)" in warning and "StarWarsAPI" in warning

    @pytest.mark.parametrize("wrapped", [True, False])
    def test_the_parser_reads_both_forms_of_the_file(self, wrapped: bool) -> None:
        entries = {"list": [{"type": "Query", "field": "hero", "complexityValue": 3}]}
        document = {"type": "graphql_complexity", "version": "v4.3.0", "data": entries} if wrapped else entries
        files = project_files(graphql_data(), root="StarWarsAPI-1.0.0", definition=("schema.graphql", SDL))
        files["StarWarsAPI-1.0.0/Definitions/graphql-complexity.json"] = json.dumps(document)
        project = parse_api_project_zip(zip_bytes(files), name="p.zip")
        assert project.graphql_complexity == [FieldComplexity(type="Query", field="hero", complexity_value=3)]

    def test_no_values_no_warning(self) -> None:
        assert run(graphql_data(transport=["https"]), definition=SDL).warnings == []
