"""An API's definition is checked before the gateway gets it: a GraphQL schema must parse, a REST
definition must be an OpenAPI or Swagger document; each refusal names the file and the problem."""

from __future__ import annotations

import json

import pytest

from translation.translate import translate as translate_api

from . import SDL, SWAGGER, deployed_api, graphql_data
from .test_translate import OPTIONS, refuses


def warnings_of(data: dict, definition: str) -> list[str]:
    return translate_api(deployed_api(data, definition=definition), OPTIONS).warnings


class TestGraphQLSchemas:
    @pytest.mark.parametrize(
        ("sdl", "problem"),
        [
            ("type Query { hero: String", "at line 1, column 26: Syntax Error"),
            ("type Query { hero: Villain }", "Unknown type 'Villain'"),
            (SWAGGER, "at line 1, column 2: Syntax Error"),
            (
                "type Query { " + "a: String " * 3 + "} type Query { b: String }",
                "There can be only one type named 'Query'",
            ),
        ],
        ids=["unclosed", "unknown-type", "openapi-instead", "duplicate-type"],
    )
    def test_a_schema_that_does_not_build_is_refused_with_where_and_why(self, sdl: str, problem: str) -> None:
        refuses(graphql_data(), "Definitions/swagger.json is not a valid GraphQL schema", problem, definition=sdl)

    def test_operations_the_schema_has_no_field_for_are_a_warning(self) -> None:
        data = graphql_data(operations=[{"target": "hero", "verb": "QUERY"}, {"target": "villain", "verb": "QUERY"}])
        [warning] = [w for w in warnings_of(data, SDL) if "no field" in w]
        assert "QUERY villain (Query)" in warning and "hero" not in warning.split("operation(s)")[1]

    def test_a_mutation_without_a_mutation_type_names_it(self) -> None:
        data = graphql_data(operations=[{"target": "hero", "verb": "QUERY"}, {"target": "addHero", "verb": "MUTATION"}])
        [warning] = [w for w in warnings_of(data, "type Query { hero(id: ID!): String }") if "no field" in w]
        assert "MUTATION addHero (no mutation type)" in warning

    def test_custom_root_type_names_are_followed(self) -> None:
        sdl = "schema { query: Root mutation: Change } type Root { hero: String } type Change { addHero: String }"
        data = graphql_data(operations=[{"target": "hero", "verb": "QUERY"}, {"target": "addHero", "verb": "MUTATION"}])
        assert not [w for w in warnings_of(data, sdl) if "no field" in w]

    def test_the_sample_schema_passes_without_warnings(self) -> None:
        assert not [w for w in warnings_of(graphql_data(), SDL) if "no field" in w]


class TestOpenApiDocuments:
    @pytest.mark.parametrize(
        ("definition", "problem"),
        [
            ("{not json and: [not yaml", "is neither JSON nor YAML"),
            ('["a", "list"]', "it holds a list"),
            ('{"info": {"title": "x"}}', "neither 'openapi' nor 'swagger'"),
            ('{"openapi": "1.0", "paths": {}}', "version '1.0'"),
            ('{"openapi": "3.0.1", "paths": ["/a"]}', "'paths' must be a mapping"),
            ("a: &a [1]\nb: *a\nopenapi: 3.0.0\n", "YAML aliases are not accepted"),
            ("[" * 50_000, "nested too deeply"),
        ],
        ids=["garbage", "list", "no-version", "old-version", "paths-list", "yaml-alias", "deep"],
    )
    def test_a_definition_that_is_no_openapi_document_is_refused(self, definition: str, problem: str) -> None:
        refuses(None, "Definitions/swagger.json", problem, definition=definition)

    @pytest.mark.parametrize(
        "definition",
        [
            SWAGGER,
            json.dumps({"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {}, "x-wso2-extra": 1}),
            "openapi: 3.1.0\ninfo: {title: t, version: '1'}\nwebhooks: {}\n",
            "openapi: '3.0.3'\ninfo:\n  title: t\n  version: '1'\npaths:\n  /a:\n    get: {}\n",
        ],
        ids=["sample", "swagger-2-with-extensions", "openapi-3.1-without-paths", "yaml"],
    )
    def test_real_shapes_pass(self, definition: str) -> None:
        assert translate_api(deployed_api(None, definition=definition), OPTIONS).resources


class TestYamlTopLevel:
    """The OpenAPI check reads YAML's top level from libyaml's events, without composing the
    document: what it reads must be what a safe loader reads."""

    @pytest.mark.parametrize(
        "text",
        [
            "swagger: 2.0\npaths: {}\n",
            "openapi: '3.0.3'\npaths:\n  /a: {get: {}}\ninfo: [1, 2]\n",
            "openapi: 3.1.0\nx: ~\ny: yes\nz: 12\n1: one\nnested: {a: [1, {b: 2}]}\nafter: 1\n",
            "openapi: !!str 3.0\npaths: []\n",
            "- just\n- a list\n",
            "plain scalar",
            "",
        ],
        ids=["float-version", "nested", "scalars", "explicit-tag", "list", "scalar", "empty"],
    )
    def test_top_level_is_what_a_safe_loader_reads(self, text: str) -> None:
        import yaml

        from translation.definitions import _load_yaml, _Shape

        expected = yaml.safe_load(text)
        got = _load_yaml(text)
        if isinstance(expected, dict):
            assert isinstance(got, dict)
            scalars = {k: v for k, v in expected.items() if isinstance(k, str | int | float | bool | None)}
            assert set(got) == set(scalars)
            for key, value in scalars.items():
                if isinstance(value, dict | list):
                    assert isinstance(got[key], _Shape)
                    assert got[key].kind == ("mapping" if isinstance(value, dict) else "sequence")
                else:
                    assert got[key] == value and type(got[key]) is type(value)
        else:
            assert type(got) is type(expected)

    def test_a_collection_as_a_key_is_passed_over(self) -> None:
        from translation.definitions import _load_yaml

        assert _load_yaml("? [complex, key]\n: {value: 1}\nopenapi: 3.1.0\npaths: {}\n")["openapi"] == "3.1.0"

    def test_more_than_one_document_is_refused(self) -> None:
        refuses(None, "Definitions/swagger.json", "a single document", definition="openapi: 3.0.0\n---\nb: 1\n")

    def test_a_refusal_is_not_remembered_and_a_pass_is(self) -> None:
        from translation import definitions

        bad = "openapi: 1.0\npaths: {}\nx-refused-by-this-test: 1\n"
        passed = len(definitions._PASSED)
        for _ in range(2):
            refuses(None, "Definitions/swagger.json", "version", definition=bad)
        assert len(definitions._PASSED) == passed
        good = "openapi: 3.0.0\npaths: {}\nx-passed-by-this-test: 1\n"
        for _ in range(2):
            translate_api(deployed_api(None, definition=good), OPTIONS)
        assert len(definitions._PASSED) in (passed + 1, definitions.MEMO_SIZE)
