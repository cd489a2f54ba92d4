"""``gateway-agent translate``: what a user sees on stdout, stderr, in files and in the exit code."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agent.cli import app
from harness.api_projects import (
    ApiProjectFiles,
    Deployment,
    api_project_zip,
    apis_zip,
    gateway_environment,
    graphql_api_project,
    rest_api_project,
)
from tests.translation import SEALING_KEY
from translation.crd_schemas import default_crd_dir

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "translation" / "fixtures"
GOLDEN = REPO / "tests" / "translation" / "golden"
REST_UUID = "2c5e7a9b-1d3f-4a6c-8e0b-9f1a3c5e7d20"
GRAPHQL_UUID = "7b9d1f3a-5c7e-4b0d-a2c4-6e8f0a2c4e61"
EDGE_UUID = "4e6a8c0e-2a4c-4e6a-8c0e-2a4c6e8a0c93"
PASSWORD = "cli-backend-Pa55word!"
# What the fixture tests render with; the CLI given the same settings must print the same bytes.
FIXTURE_SETTINGS = ["--namespace", "apk-apis", "--gateway-namespace", "apk", "--gateway-label", "Default"]


@pytest.fixture(autouse=True)
def _no_agent_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's defaults come from GATEWAY_AGENT_* settings; the tests pin them."""
    for key in list(os.environ):
        if key.startswith("GATEWAY_AGENT_") and key != "GATEWAY_AGENT_CRD_DIR":
            monkeypatch.delenv(key)


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(app, ["translate", *(str(a) for a in args)])


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return [o["kind"] for o in objects]


def pizza_project(**overrides: Any) -> ApiProjectFiles:
    settings: dict[str, Any] = {
        "uuid": REST_UUID,
        "name": "PizzaShackAPI",
        "version": "1.0.0",
        "context": "/pizzashack",
        "production_url": "https://pizza.backend.example:8443/v1",
        "sandbox_url": "https://sandbox.pizza.backend.example:8443/v1",
    }
    settings.update(overrides)
    return rest_api_project(**settings)


def write_project(project: ApiProjectFiles, parent: Path) -> Path:
    for path, content in project.files.items():
        target = parent / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return parent / project.root


def runtime_artifacts(tmp_path: Path) -> Path:
    deployments = [
        Deployment(pizza_project(), [gateway_environment("Default", vhost="gw.example.com", deployed_at_ms=1)]),
        Deployment(
            graphql_api_project(uuid=GRAPHQL_UUID, name="StarWarsAPI", version="2.0", context="/swapi"),
            [gateway_environment("Default", vhost="gw.example.com", deployed_at_ms=1)],
        ),
        Deployment(
            pizza_project(uuid=EDGE_UUID, name="EdgeOnlyAPI", context="/edge"),
            [gateway_environment("Edge", vhost="edge.example.com", deployed_at_ms=1)],
        ),
    ]
    path = tmp_path / "apis.zip"
    path.write_bytes(apis_zip(deployments))
    return path


class TestOutput:
    def test_a_fixture_directory_prints_its_golden_stream(self) -> None:
        golden = GOLDEN / "customer-apikey.yaml"
        result = run(FIXTURES / "customer-apikey", *FIXTURE_SETTINGS, "--vhost", "gw.wso2.example")
        assert result.exit_code == 0, result.stderr
        assert result.stdout == golden.read_text(encoding="utf-8")

    def test_warnings_go_to_stderr_and_follow_the_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fixture = FIXTURES / "library-graphql-complexity"
        warned = run(fixture, *FIXTURE_SETTINGS)
        assert warned.exit_code == 0, warned.stderr
        assert "warning: API 'LibraryAPI' 1.0.0: the query-complexity values of 4 GraphQL field(s)" in warned.stderr
        assert "GATEWAY_HTTP_LISTENER" in warned.stderr and "warning" not in warned.stdout
        monkeypatch.setenv("GATEWAY_AGENT_GATEWAY_HTTP_LISTENER", "httplistener")
        listened = run(fixture, *FIXTURE_SETTINGS)
        assert "GATEWAY_HTTP_LISTENER" not in listened.stderr and "sectionName: httplistener" in listened.stdout

    def test_the_gateways_key_managers_are_the_agents_setting(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fixture = FIXTURES / "billing-key-manager-restricted"
        assert run(fixture, *FIXTURE_SETTINGS).exit_code == 2
        monkeypatch.setenv("GATEWAY_AGENT_GATEWAY_KEY_MANAGERS", "Okta")
        assert run(fixture, *FIXTURE_SETTINGS).exit_code == 0

    def test_the_agents_sealing_key_gives_the_agents_secret_names(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The goldens name Secrets with the key derived from the tests' sealing key, as a worker would.
        golden = GOLDEN / "payments-endpoint-credentials.yaml"
        monkeypatch.setenv("GATEWAY_AGENT_SEALING_KEY", SEALING_KEY)
        result = run(FIXTURES / "payments-endpoint-credentials", *FIXTURE_SETTINGS, "--vhost", "gw.wso2.example")
        assert result.exit_code == 0, result.stderr
        assert result.stdout == golden.read_text(encoding="utf-8")
        assert "GATEWAY_AGENT_SEALING_KEY is not set" not in result.stderr

    def test_without_a_sealing_key_secret_names_differ_between_runs(self) -> None:
        arguments = (FIXTURES / "payments-endpoint-credentials", *FIXTURE_SETTINGS, "--vhost", "gw.wso2.example")
        first, second = run(*arguments), run(*arguments)
        assert first.exit_code == second.exit_code == 0, first.stderr + second.stderr
        assert "note: GATEWAY_AGENT_SEALING_KEY is not set, so the Secret names come from a random key" in first.stderr

        def names(result: Any, kind: str) -> set[str]:
            return {o["metadata"]["name"] for o in documents(result.stdout) if o["kind"] == kind}

        assert len(names(first, "Secret")) == 2 and not names(first, "Secret") & names(second, "Secret")
        for kind in ("ConfigMap", "Backend", "HTTPRoute", "API"):
            assert names(first, kind) == names(second, kind)
        for result in (first, second):
            refs = {
                o["spec"]["security"][kind][field]["name"]
                for o in documents(result.stdout)
                if o["kind"] == "Backend" and "security" in o["spec"]
                for kind, field in (("basic", "secretRef"), ("apiKey", "valueFrom"))
                if kind in o["spec"]["security"]
            }
            assert refs == names(result, "Secret")

    def test_the_project_folder_and_its_parent_give_the_same_stream(self, tmp_path: Path) -> None:
        folder = write_project(pizza_project(), tmp_path)
        from_parent, from_folder = run(tmp_path), run(folder)
        assert from_parent.exit_code == from_folder.exit_code == 0, from_parent.stderr + from_folder.stderr
        assert from_parent.stdout == from_folder.stdout
        assert from_parent.stdout.startswith("---\n")

    def test_apis_zip_translates_every_api_on_the_gateway_labels(self, tmp_path: Path) -> None:
        result = run(runtime_artifacts(tmp_path))
        assert result.exit_code == 0, result.stderr
        objects = documents(result.stdout)
        assert sorted(o["spec"]["apiName"] for o in objects if o["kind"] == "API") == ["PizzaShackAPI", "StarWarsAPI"]
        assert {"HTTPRoute", "GQLRoute", "Backend", "ConfigMap", "Authentication"} <= set(kinds(objects))
        assert "skipped API 'EdgeOnlyAPI' 1.0.0, deployed to Edge only" in result.stderr
        hosts = {h for o in objects if o["kind"] == "HTTPRoute" for h in o["spec"]["hostnames"]}
        assert hosts == {"gw.example.com", "sandbox.gw.example.com"}

    def test_env_properties_of_an_apis_zip_override_endpoints(self, tmp_path: Path) -> None:
        path = tmp_path / "apis.zip"
        environment = gateway_environment("Default", vhost="gw.example.com", deployed_at_ms=1)
        path.write_bytes(
            apis_zip(
                [Deployment(pizza_project(), [environment])],
                env_properties={"Default": {"productionEndpoint": "https://prod-override.example:9443/pizza"}},
            )
        )
        result = run(path)
        assert result.exit_code == 0, result.stderr
        backends = {o["metadata"]["name"]: o["spec"] for o in documents(result.stdout) if o["kind"] == "Backend"}
        production = next(spec for name, spec in backends.items() if name.endswith("-production"))
        assert production["services"] == [{"host": "prod-override.example", "port": 9443}]

    def test_gateway_labels_choose_the_apis(self, tmp_path: Path) -> None:
        result = run(runtime_artifacts(tmp_path), "--gateway-label", "Edge")
        assert result.exit_code == 0, result.stderr
        assert [o["spec"]["apiName"] for o in documents(result.stdout) if o["kind"] == "API"] == ["EdgeOnlyAPI"]

    def test_labels_default_to_the_agent_setting(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_AGENT_GATEWAY_LABELS", "Edge")
        monkeypatch.setenv("GATEWAY_AGENT_NAMESPACE", "edge-apis")
        result = run(runtime_artifacts(tmp_path))
        assert result.exit_code == 0, result.stderr
        objects = documents(result.stdout)
        assert [o["spec"]["apiName"] for o in objects if o["kind"] == "API"] == ["EdgeOnlyAPI"]
        assert {o["metadata"]["namespace"] for o in objects} == {"edge-apis"}

    def test_a_project_zip_is_served_on_the_vhost_for_every_label(self, tmp_path: Path) -> None:
        path = tmp_path / "PizzaShackAPI-1.0.0.zip"
        path.write_bytes(api_project_zip(pizza_project()))
        result = run(
            path, "--vhost", "api.pizza.example", "--gateway-name", "edge-gw", "--gateway-listener", "https-edge"
        )
        assert result.exit_code == 0, result.stderr
        routes = [o for o in documents(result.stdout) if o["kind"] == "HTTPRoute"]
        assert sorted(h for r in routes for h in r["spec"]["hostnames"]) == [
            "api.pizza.example",
            "sandbox.api.pizza.example",
        ]
        parent = routes[0]["spec"]["parentRefs"][0]
        assert (parent["name"], parent["namespace"], parent["sectionName"]) == ("edge-gw", "default", "https-edge")

    def test_secrets_are_printed_with_a_warning(self, tmp_path: Path) -> None:
        project = pizza_project(
            endpoint_security={"production": {"type": "BASIC", "username": "pizza", "password": PASSWORD}},
            format="json",
        )
        result = run(write_project(project, tmp_path))
        assert result.exit_code == 0, result.stderr
        assert "warning: the output holds 1 Secret(s) with endpoint credentials" in result.stderr
        assert "Secret names come from a random key of this run and differ between runs" in result.stderr
        assert PASSWORD not in result.stderr
        secret = next(o for o in documents(result.stdout) if o["kind"] == "Secret")
        assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
        assert PASSWORD not in result.stdout  # only its base64 form

    def test_out_writes_one_file_per_object(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_AGENT_SEALING_KEY", SEALING_KEY)  # the same Secret names in both runs
        project = pizza_project(
            endpoint_security={"production": {"type": "BASIC", "username": "pizza", "password": PASSWORD}},
            format="json",
        )
        folder = write_project(project, tmp_path / "in")
        out = tmp_path / "out" / "manifests"
        streamed = documents(run(folder).stdout)
        result = run(folder, "--out", out)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == ""
        assert f"wrote {len(streamed)} file(s) for 1 API(s) to {out}" in result.stderr
        expected = {f"{o['kind'].lower()}-{o['metadata']['name']}.yaml": o for o in streamed}
        assert sorted(p.name for p in out.iterdir()) == sorted(expected)
        for name, obj in expected.items():
            assert documents((out / name).read_text(encoding="utf-8")) == [obj]
        secret_file = next(out.glob("secret-*.yaml"))
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    def test_the_module_entry_point_runs_the_command(self, tmp_path: Path) -> None:
        folder = write_project(pizza_project(), tmp_path)
        done = subprocess.run(
            [sys.executable, "-m", "agent", "translate", str(folder), "--namespace", "pizza"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_AGENT_")},
        )
        assert done.returncode == 0, done.stderr
        assert {o["metadata"]["namespace"] for o in documents(done.stdout)} == {"pizza"}


class TestCheck:
    @pytest.fixture()
    def crd_dir(self) -> Path:
        directory = default_crd_dir()
        if not directory.is_dir():
            pytest.skip(f"CRDs not found at {directory}; set GATEWAY_AGENT_CRD_DIR to the apk-crds directory")
        return directory

    def test_valid_objects_pass_and_are_printed(self, tmp_path: Path, crd_dir: Path) -> None:
        result = run(runtime_artifacts(tmp_path), "--check", "--crds", crd_dir)
        assert result.exit_code == 0, result.stderr
        assert f"object(s) valid against the CRDs in {crd_dir}" in result.stderr
        assert "API" in kinds(documents(result.stdout))

    def test_problems_are_listed_by_object_and_nothing_is_written(self, tmp_path: Path, crd_dir: Path) -> None:
        # A CRD directory whose Backend accepts https only: the plain-http sandbox backend must be named.
        strict = tmp_path / "crds"
        strict.mkdir()
        for source in crd_dir.glob("*.yaml"):
            (strict / source.name).write_bytes(source.read_bytes())
        backends = strict / "dp.wso2.com_backends.yaml"
        crds = [d for d in yaml.safe_load_all(backends.read_text(encoding="utf-8")) if d]
        for crd in crds:
            for version in crd["spec"]["versions"]:
                version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["protocol"]["enum"] = ["https"]
        backends.write_text(yaml.safe_dump_all(crds), encoding="utf-8")
        folder = write_project(pizza_project(sandbox_url="http://sandbox.pizza.internal:8080/v1"), tmp_path / "in")
        out = tmp_path / "out"

        result = run(folder, "--check", "--crds", strict, "--out", out)

        assert result.exit_code == 1
        assert result.stdout == ""
        assert not out.exists()
        problems = [line for line in result.stderr.splitlines() if line.startswith("Backend/")]
        assert len(problems) == 1, result.stderr
        assert problems[0].endswith("-sandbox: spec.protocol: 'http' is not one of ['https']")
        assert f"1 problem(s) against the CRDs in {strict}; nothing written" in result.stderr

    def test_a_missing_crd_directory_is_bad_input(self, tmp_path: Path) -> None:
        folder = write_project(pizza_project(), tmp_path)
        result = run(folder, "--check", "--crds", tmp_path / "no-crds")
        assert result.exit_code == 2
        assert f"error: {tmp_path / 'no-crds'}: cannot load the CRDs" in result.stderr


class TestBadInput:
    def assert_refused(self, result: Any, *fragments: str) -> None:
        assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        for fragment in fragments:
            assert fragment in lines[0], lines[0]

    def test_a_missing_path(self, tmp_path: Path) -> None:
        missing = tmp_path / "nowhere.zip"
        self.assert_refused(run(missing), f"{missing}: no such file or directory")

    def test_a_file_that_is_not_a_zip(self, tmp_path: Path) -> None:
        path = tmp_path / "api.yaml"
        path.write_text("type: api\n", encoding="utf-8")
        self.assert_refused(run(path), f"{path}: not a zip archive; expected an apis.zip, an API project zip")

    def test_a_zip_without_a_project(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("README.txt", "nothing to see")
        self.assert_refused(run(path), str(path), "no api.json or api.yaml found")

    def test_a_damaged_project_zip(self, tmp_path: Path) -> None:
        content = bytearray(api_project_zip(pizza_project()))
        content[40:120] = b"\x00" * 80  # inside the first entry's compressed data
        path = tmp_path / "damaged.zip"
        path.write_bytes(bytes(content))
        self.assert_refused(run(path), "damaged.zip: ")

    def test_an_apis_zip_naming_a_missing_project(self, tmp_path: Path) -> None:
        path = tmp_path / "apis.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(
                "deployments.json",
                '{"type": "deployments", "data": {"deployments": [{"apiFile": "gone-1.zip", "environments": []}]}}',
            )
        self.assert_refused(run(path), str(path), "deployments.json names 'gone-1.zip' which is not in the archive")

    def test_an_apis_zip_with_nothing_on_our_labels(self, tmp_path: Path) -> None:
        path = runtime_artifacts(tmp_path)
        self.assert_refused(
            run(path, "--gateway-label", "Internal"), f"{path}: no API is deployed to Internal", "Default, Edge"
        )

    def test_a_directory_without_a_project(self, tmp_path: Path) -> None:
        (tmp_path / "docs").mkdir()
        self.assert_refused(run(tmp_path), f"{tmp_path}: no API project here")

    def test_a_project_with_broken_yaml(self, tmp_path: Path) -> None:
        folder = write_project(pizza_project(format="yaml"), tmp_path)
        (folder / "api.yaml").write_text("type: api\ndata: {name: [unclosed\n", encoding="utf-8")
        self.assert_refused(run(folder), "PizzaShackAPI-1.0.0: api.yaml: invalid YAML at line")

    def test_a_project_missing_required_fields(self, tmp_path: Path) -> None:
        path = tmp_path / "Broken-1.0.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("Broken-1.0/api.json", '{"type": "api", "data": {"name": "Broken"}}')
        self.assert_refused(run(path), "Broken-1.0.zip: Broken-1.0/api.json: field 'data.id' is required")

    def test_an_api_the_gateway_cannot_serve(self) -> None:
        result = run(FIXTURES / "chat-graphql-subscription", *FIXTURE_SETTINGS)
        self.assert_refused(
            result, str(FIXTURES / "chat-graphql-subscription"), "API 'ChatAPI' 1.0.0 has SUBSCRIPTION operations"
        )

    def test_an_invalid_namespace(self, tmp_path: Path) -> None:
        folder = write_project(pizza_project(), tmp_path)
        self.assert_refused(run(folder, "--namespace", "Not_A_Namespace"), "namespace", "not a valid Kubernetes")

    def test_an_invalid_vhost(self, tmp_path: Path) -> None:
        folder = write_project(pizza_project(), tmp_path)
        result = run(folder, "--vhost", "not a host")
        self.assert_refused(result, "has vhost 'not a host', which is not a valid hostname")
