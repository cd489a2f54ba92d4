"""Parsing ``apis.zip``: what a valid archive becomes, and how each unsafe or broken one fails."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from translation.artifacts import (
    DEFAULT_LIMITS,
    ArtifactError,
    ArtifactLimits,
    load_api_project_dir,
    parse_api_project_zip,
    parse_runtime_artifacts,
)

from . import (
    API_UUID,
    OTHER_UUID,
    PASSWORD,
    SDL,
    SWAGGER,
    api_data,
    deployments_json,
    graphql_data,
    project_files,
    zip_bytes,
)

INNER = f"{API_UUID}-1.zip"


def runtime_zip(
    inner: Mapping[str, bytes | str] | None = None, extra: Mapping[str, bytes | str] | None = None
) -> bytes:
    """An ``apis.zip`` with one deployed PizzaShackAPI revision, plus ``extra`` entries."""
    project = zip_bytes(inner if inner is not None else project_files(api_data()))
    files: dict[str, bytes | str] = {
        "deployments.json": deployments_json((INNER, "carbon.super", [("Default", "gw.example.com")])),
        INNER: project,
    }
    files.update(extra or {})
    return zip_bytes(files)


def with_entry(archive: bytes, info: zipfile.ZipInfo, content: bytes) -> bytes:
    buffer = io.BytesIO(archive)
    with zipfile.ZipFile(buffer, "a") as handle:
        handle.writestr(info, content)
    return buffer.getvalue()


def expect_error(data: bytes, *fragments: str, limits: ArtifactLimits = DEFAULT_LIMITS) -> str:
    with pytest.raises(ArtifactError) as caught:
        parse_runtime_artifacts(data, limits=limits)
    for fragment in fragments:
        assert fragment in caught.value.message, caught.value.message
    return caught.value.message


class TestValidArchives:
    def test_deployed_api_with_environments_and_definition(self) -> None:
        data = api_data(
            endpointConfig={
                "endpoint_type": "http",
                "production_endpoints": {"url": "https://pizza.backend.example/v1"},
                "endpoint_security": {
                    "production": {"enabled": True, "type": "BASIC", "username": "admin", "password": PASSWORD}
                },
            }
        )
        files = project_files(data)
        files["PizzaShackAPI-1.0.0/Endpoint-certificates/backend.crt"] = "-----BEGIN CERTIFICATE-----\nMIIB\n"
        files["PizzaShackAPI-1.0.0/Endpoint-certificates/endpoint_certificates.json"] = "{}"
        env = json.dumps({"env-uuid": {"productionEndpoint": "https://override.example"}})
        artifacts = parse_runtime_artifacts(runtime_zip(files, extra={"env_properties.json": env}))

        assert len(artifacts.apis) == 1
        deployed = artifacts.apis[0]
        assert deployed.api_file == INNER
        assert deployed.revision_id == "1"
        assert deployed.organization == "carbon.super"
        assert [(e.name, e.vhost, e.deployed_timestamp) for e in deployed.environments] == [
            ("Default", "gw.example.com", 1764236400123)
        ]
        project = deployed.project
        assert project.data.name == "PizzaShackAPI"
        assert project.data.id == API_UUID
        assert [o.target for o in project.data.operations] == ["/menu", "/order", "/order/{orderId}"]
        assert project.definition == SWAGGER
        assert project.definition_file == "Definitions/swagger.json"
        assert project.endpoint_certificates == {"backend.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n"}
        assert artifacts.env_properties == {"env-uuid": {"productionEndpoint": "https://override.example"}}

    def test_credentials_never_show_in_reprs_or_dumps(self) -> None:
        data = api_data(
            endpointConfig={
                "endpoint_type": "http",
                "production_endpoints": {"url": "https://pizza.backend.example"},
                "endpoint_security": {
                    "production": {
                        "enabled": True,
                        "type": "apikey",
                        "apiKeyIdentifier": "X-Key",
                        "apiKeyValue": PASSWORD,
                    },
                    "sandbox": {"enabled": True, "type": "BASIC", "username": "u", "password": PASSWORD},
                },
            }
        )
        artifacts = parse_runtime_artifacts(runtime_zip(project_files(data)))
        security = artifacts.apis[0].project.data.endpoint_config.endpoint_security  # type: ignore[union-attr]
        assert security.sandbox.password.get_secret_value() == PASSWORD  # type: ignore[union-attr]
        for text in (repr(artifacts), str(artifacts), artifacts.model_dump_json()):
            assert PASSWORD not in text

    def test_api_yaml_and_yaml_definition(self) -> None:
        files: dict[str, bytes | str] = {
            "PizzaShackAPI-1.0.0/api.yaml": yaml.safe_dump({"type": "api", "version": "v4.3.0", "data": api_data()}),
            "PizzaShackAPI-1.0.0/Definitions/swagger.yaml": "openapi: 3.0.1\n",
        }
        project = parse_runtime_artifacts(runtime_zip(files)).apis[0].project
        assert project.data.context == "/pizzashack"
        assert project.definition == "openapi: 3.0.1\n"
        assert project.definition_file == "Definitions/swagger.yaml"

    def test_graphql_project_reads_the_schema(self) -> None:
        files = project_files(graphql_data(), root="StarWarsAPI-1.0.0", definition=("schema.graphql", SDL))
        project = parse_runtime_artifacts(runtime_zip(files)).apis[0].project
        assert project.definition == SDL
        assert project.definition_file == "Definitions/schema.graphql"

    def test_revision_and_organization_fall_back_to_file_name_and_default(self) -> None:
        data = api_data()
        del data["revisionId"], data["organizationId"]
        project = zip_bytes(project_files(data))
        archive = zip_bytes(
            {
                "deployments.json": json.dumps(
                    {"data": {"deployments": [{"apiFile": f"{API_UUID}-7.zip", "environments": []}]}}
                ),
                f"{API_UUID}-7.zip": project,
            }
        )
        deployed = parse_runtime_artifacts(archive).apis[0]
        assert deployed.revision_id == "7"
        assert deployed.organization == "carbon.super"

    def test_several_apis_and_unreferenced_zips(self) -> None:
        other = zip_bytes(project_files(api_data(id=OTHER_UUID, name="Other"), root="Other-1.0.0"))
        archive = zip_bytes(
            {
                "deployments.json": deployments_json(
                    (INNER, "carbon.super", [("Default", "gw.example.com")]),
                    (f"{OTHER_UUID}-3.zip", "acme", [("Default", "gw.example.com")]),
                ),
                INNER: zip_bytes(project_files(api_data())),
                f"{OTHER_UUID}-3.zip": other,
                "stale-9.zip": b"not even a zip",  # not named by deployments.json: never opened
            }
        )
        apis = parse_runtime_artifacts(archive).apis
        assert [(a.project.data.name, a.organization) for a in apis] == [
            ("PizzaShackAPI", "carbon.super"),
            ("Other", "acme"),
        ]

    def test_nested_zips_inside_a_project_are_not_opened(self) -> None:
        evil = zip_bytes({"../../etc/passwd": "root"})
        files = project_files(api_data())
        files["PizzaShackAPI-1.0.0/Sequences/nested.zip"] = evil
        assert parse_runtime_artifacts(runtime_zip(files)).apis[0].project.data.name == "PizzaShackAPI"

    def test_single_project_zip_with_files_at_the_root(self) -> None:
        project = parse_api_project_zip(
            zip_bytes({"api.json": json.dumps({"data": api_data()}), "Definitions/swagger.json": SWAGGER})
        )
        assert project.data.name == "PizzaShackAPI"
        assert project.definition_file == "Definitions/swagger.json"

    def test_project_directory(self, tmp_path: Path) -> None:
        for name, content in project_files(api_data()).items():
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content if isinstance(content, str) else content.decode())
        project = load_api_project_dir(tmp_path)
        assert project.data.version == "1.0.0"
        assert project.definition == SWAGGER


class TestUnsafeArchives:
    @pytest.mark.parametrize(
        ("name", "problem"),
        [
            ("../../etc/cron.d/evil", "'..' path segments"),
            ("PizzaShackAPI-1.0.0/../../evil", "'..' path segments"),
            ("/etc/passwd", "absolute paths"),
            ("C:/Windows/evil.dll", "absolute paths"),
            ("..\\evil", "backslashes"),
        ],
    )
    def test_dangerous_names_in_the_outer_archive(self, name: str, problem: str) -> None:
        archive = with_entry(runtime_zip(), zipfile.ZipInfo(name), b"x")
        expect_error(archive, "apis.zip: ", name, problem)

    def test_dangerous_names_in_an_api_project(self) -> None:
        files = project_files(api_data())
        files["PizzaShackAPI-1.0.0/../../../home/evil.sh"] = "#!/bin/sh"
        expect_error(runtime_zip(files), f"{INNER}: PizzaShackAPI-1.0.0/../../../home/evil.sh", "'..' path segments")

    def test_symlink_entries(self) -> None:
        link = zipfile.ZipInfo("PizzaShackAPI-1.0.0/Definitions/link")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        expect_error(
            with_entry(runtime_zip(), link, b"/etc/shadow"),
            "apis.zip: PizzaShackAPI-1.0.0/Definitions/link",
            "symbolic links",
        )

    def test_too_many_entries(self) -> None:
        extra = {f"junk/{i}.txt": "x" for i in range(10)}
        expect_error(
            runtime_zip(extra=extra), "apis.zip: has 12 entries; the limit is 5", limits=ArtifactLimits(max_entries=5)
        )

    def test_oversize_entry(self) -> None:
        files = project_files(api_data())
        files["PizzaShackAPI-1.0.0/Docs/big.md"] = "a" * 5000
        expect_error(
            runtime_zip(files),
            f"{INNER}: PizzaShackAPI-1.0.0/Docs/big.md: 5000 bytes uncompressed exceeds the limit of 4096 bytes",
            limits=ArtifactLimits(max_entry_bytes=4096),
        )

    def test_total_uncompressed_size_within_one_archive(self) -> None:
        files = project_files(api_data())
        for i in range(4):
            files[f"PizzaShackAPI-1.0.0/Docs/{i}.md"] = os.urandom(3000).hex()
        expect_error(
            runtime_zip(files),
            f"{INNER}: declares more than 20000 bytes",
            limits=ArtifactLimits(max_total_bytes=20_000, max_entry_bytes=20_000),
        )

    def test_total_uncompressed_size_across_nested_archives(self) -> None:
        # Each project stays under the limit on its own; what is read from both goes beyond it.
        def project(uuid: str) -> bytes:
            swagger = json.dumps({"openapi": "3.0.1", "x-padding": os.urandom(5000).hex()})
            return zip_bytes(project_files(api_data(id=uuid), definition=("swagger.json", swagger)))

        archive = zip_bytes(
            {
                "deployments.json": deployments_json(
                    (INNER, "carbon.super", []), (f"{OTHER_UUID}-1.zip", "carbon.super", [])
                ),
                INNER: project(API_UUID),
                f"{OTHER_UUID}-1.zip": project(OTHER_UUID),
            }
        )
        expect_error(
            archive, "the archive expands beyond 20000 bytes in total", limits=ArtifactLimits(max_total_bytes=20_000)
        )

    def test_zip_bomb_ratio(self) -> None:
        expect_error(
            runtime_zip(extra={"bomb.bin": b"\0" * (2 * 1024 * 1024)}),
            "apis.zip: bomb.bin: compression ratio above 200:1",
            "zip bomb",
        )

    def test_entry_that_expands_beyond_its_declared_size(self) -> None:
        swagger = json.dumps({"openapi": "3.0.1", "x-padding": "A" * 100_000})
        inner = zip_bytes(project_files(api_data(), definition=("swagger.json", swagger)))
        size = len(swagger).to_bytes(4, "little")
        assert inner.count(size) == 2  # the local header and the central directory
        lying = inner.replace(size, (1_000).to_bytes(4, "little"))
        archive = zip_bytes({"deployments.json": deployments_json((INNER, "carbon.super", [])), INNER: lying})
        expect_error(archive, f"{INNER}: PizzaShackAPI-1.0.0/Definitions/swagger.json: cannot be decompressed")

    @pytest.mark.filterwarnings("ignore:Duplicate name")
    def test_duplicate_entries(self) -> None:
        archive = with_entry(runtime_zip(), zipfile.ZipInfo("deployments.json"), b"{}")
        expect_error(archive, "apis.zip: deployments.json: appears twice")

    def test_not_a_zip(self) -> None:
        expect_error(b"<html>502 Bad Gateway</html>", "apis.zip: not a valid zip archive")

    def test_symlinks_in_a_project_directory(self, tmp_path: Path) -> None:
        for name, content in project_files(api_data()).items():
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(str(content))
        (tmp_path / "PizzaShackAPI-1.0.0" / "secrets").symlink_to("/etc")
        with pytest.raises(ArtifactError, match=r"PizzaShackAPI-1\.0\.0/secrets: symbolic links are not accepted"):
            load_api_project_dir(tmp_path)


class TestBrokenContent:
    def test_missing_inner_zip(self) -> None:
        archive = zip_bytes({"deployments.json": deployments_json(("x-1.zip", "carbon.super", []))})
        message = expect_error(archive)
        assert message == "apis.zip: deployments.json names 'x-1.zip' which is not in the archive"

    def test_missing_deployments(self) -> None:
        expect_error(zip_bytes({INNER: zip_bytes(project_files(api_data()))}), "apis.zip: deployments.json is missing")

    def test_bad_json_in_api_json(self) -> None:
        files = {"PizzaShackAPI-1.0.0/api.json": '{"data": {"name": "PizzaShackAPI",}}'}
        expect_error(runtime_zip(files), f"{INNER}: PizzaShackAPI-1.0.0/api.json: invalid JSON at line 1")

    def test_bad_json_in_deployments(self) -> None:
        archive = zip_bytes({"deployments.json": "{deployments: []"})
        expect_error(archive, "apis.zip: deployments.json: invalid JSON")

    def test_missing_required_field(self) -> None:
        data = api_data()
        del data["context"]
        message = expect_error(runtime_zip(project_files(data)))
        assert message == f"{INNER}: PizzaShackAPI-1.0.0/api.json: field 'data.context' is required"

    def test_wrong_type_of_a_used_field(self) -> None:
        data = api_data(operations=[{"target": "/menu", "verb": ["GET"]}])
        expect_error(runtime_zip(project_files(data)), "PizzaShackAPI-1.0.0/api.json: field 'data.operations.0.verb'")

    def test_unknown_fields_are_ignored(self) -> None:
        data = api_data(somethingNew={"x": 1}, enableSchemaValidation=True)
        assert parse_runtime_artifacts(runtime_zip(project_files(data))).apis[0].project.data.name == "PizzaShackAPI"

    def test_missing_api_json(self) -> None:
        expect_error(runtime_zip({"PizzaShackAPI-1.0.0/README.md": "hi"}), f"{INNER}: no api.json or api.yaml")

    def test_inner_file_that_is_not_a_zip(self) -> None:
        archive = zip_bytes(
            {"deployments.json": deployments_json((INNER, "carbon.super", [])), INNER: b"PK\x03\x04 truncated"}
        )
        expect_error(archive, f"{INNER}: not a valid zip archive")

    def test_yaml_aliases_are_refused(self) -> None:
        bomb = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\ndata: {name: *b}\n"
        expect_error(runtime_zip({"PizzaShackAPI-1.0.0/api.yaml": bomb}), "api.yaml: invalid YAML", "aliases")

    def test_api_json_that_is_not_an_object(self) -> None:
        expect_error(runtime_zip({"PizzaShackAPI-1.0.0/api.json": "[1, 2]"}), "api.json: expected an object")

    def test_definition_that_is_not_utf8(self) -> None:
        files = project_files(api_data(), definition=("swagger.json", "{}"))
        files["PizzaShackAPI-1.0.0/Definitions/swagger.json"] = b"\xff\xfe{\x00}"
        expect_error(runtime_zip(files), "Definitions/swagger.json: is not UTF-8 text")
