"""Realistic APIM exports translated and compared byte for byte with reviewed golden files.

Each ``fixtures/<name>/`` holds one exported API project (``<Name>-<version>/``) and a
``deployment.yaml`` naming the gateway environments it is deployed to. Its golden file is
``golden/<name>.yaml`` (the ``gateway-agent translate`` output) or ``golden/<name>.error.txt``
(the ``TranslationError`` message, for an API the gateway cannot serve), and ``golden/<name>.warnings.txt``
when the translation warns (settings the gateway does not enforce). ``deployment.yaml`` may set
``httpListener`` and ``keyManagers`` (the agent's GATEWAY_HTTP_LISTENER and GATEWAY_KEY_MANAGERS). After a deliberate
translator change, rewrite them with ``pytest tests/translation --update-golden`` and review the diff.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.translate_command import render_stream
from models.artifact import DeployedApi, DeploymentEnvironment
from translation.artifacts import API_FILES, DEFAULT_ORGANIZATION, load_api_project_dir
from translation.crd_schemas import CrdSchemas, validate_resources
from translation.translate import TranslationError, TranslationOptions, translate

from . import SECRET_NAME_KEY, dangling_references

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
GOLDEN = HERE / "golden"
OUTPUT_SUFFIX = ".yaml"
ERROR_SUFFIX = ".error.txt"
WARNINGS_SUFFIX = ".warnings.txt"
UPDATE_HINT = "if the change is intended, run `pytest tests/translation --update-golden` and review the diff"
MIN_FIXTURES = 15


@dataclass(frozen=True)
class Fixture:
    name: str
    api: DeployedApi
    options: TranslationOptions


@dataclass(frozen=True)
class Outcome:
    """What the translator makes of a fixture: its objects, or the error message."""

    resources: list[dict[str, Any]] | None
    error: str | None
    warnings: tuple[str, ...] = ()

    @property
    def golden_suffix(self) -> str:
        return ERROR_SUFFIX if self.error is not None else OUTPUT_SUFFIX

    @property
    def text(self) -> str:
        if self.error is not None:
            return self.error + "\n"
        assert self.resources is not None
        return render_stream(self.resources)


def fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if (p / "deployment.yaml").is_file())


def load_fixture(name: str) -> Fixture:
    root = FIXTURES / name
    deployment = yaml.safe_load((root / "deployment.yaml").read_text(encoding="utf-8"))
    projects = [p for p in sorted(root.iterdir()) if p.is_dir() and any((p / f).is_file() for f in API_FILES)]
    assert len(projects) == 1, f"{root} must hold exactly one <Name>-<version>/ project, found {projects}"
    project = load_api_project_dir(projects[0])
    data = project.data
    environments = [DeploymentEnvironment.model_validate(e) for e in deployment["environments"]]
    revision = data.revision_id or "0"
    api = DeployedApi(
        project=project,
        api_file=f"{data.id}-{revision}.zip",
        revision_id=revision,
        organization=deployment.get("organization") or data.organization_id or DEFAULT_ORGANIZATION,
        environments=environments,
    )
    options = TranslationOptions(
        namespace="apk-apis",
        gateway_namespace="apk",
        gateway_labels=deployment.get("gatewayLabels") or [e.name for e in environments],
        gateway_http_listener=deployment.get("httpListener") or "",
        secret_name_key=SECRET_NAME_KEY,
        **({"key_managers": deployment["keyManagers"]} if "keyManagers" in deployment else {}),
    )
    return Fixture(name=name, api=api, options=options)


def translate_fixture(fixture: Fixture) -> Outcome:
    try:
        translation = translate(fixture.api, fixture.options)
        return Outcome(resources=translation.resources, error=None, warnings=tuple(translation.warnings))
    except TranslationError as exc:
        return Outcome(resources=None, error=exc.message)


def test_the_fixture_set_is_broad() -> None:
    assert len(fixture_names()) >= MIN_FIXTURES


@pytest.mark.parametrize("name", fixture_names())
def test_translation_matches_golden(name: str, update_golden: bool) -> None:
    outcome = translate_fixture(load_fixture(name))
    golden = GOLDEN / f"{name}{outcome.golden_suffix}"
    other = GOLDEN / f"{name}{OUTPUT_SUFFIX if outcome.error is not None else ERROR_SUFFIX}"
    if update_golden:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_bytes(outcome.text.encode("utf-8"))
        other.unlink(missing_ok=True)
        return
    if other.exists():
        now = f"fails with: {outcome.error}" if outcome.error is not None else "now translates"
        pytest.fail(f"{name}: the golden is {other.name} but the translator {now}; {UPDATE_HINT}")
    assert golden.exists(), f"{name}: no golden file {golden.name}; {UPDATE_HINT}"
    differs = f"{name}: output differs from {golden.name}; {UPDATE_HINT}"
    assert golden.read_bytes() == outcome.text.encode("utf-8"), differs


@pytest.mark.parametrize("name", fixture_names())
def test_warnings_match_golden(name: str, update_golden: bool) -> None:
    """What the gateway will not enforce is part of the reviewed outcome too."""
    outcome = translate_fixture(load_fixture(name))
    golden = GOLDEN / f"{name}{WARNINGS_SUFFIX}"
    text = "".join(f"{w}\n" for w in outcome.warnings)
    if update_golden:
        if text:
            golden.write_bytes(text.encode("utf-8"))
        else:
            golden.unlink(missing_ok=True)
        return
    if not text:
        assert not golden.exists(), f"{name}: {golden.name} lists warnings no longer given; {UPDATE_HINT}"
        return
    assert golden.exists(), f"{name}: warns but has no {golden.name}: {outcome.warnings}; {UPDATE_HINT}"
    assert golden.read_text(encoding="utf-8") == text, f"{name}: warnings differ from {golden.name}; {UPDATE_HINT}"


def test_no_golden_without_a_fixture(update_golden: bool) -> None:
    names = set(fixture_names())
    stale = sorted(
        p
        for p in GOLDEN.glob("*")
        if p.name.removesuffix(ERROR_SUFFIX).removesuffix(OUTPUT_SUFFIX).removesuffix(WARNINGS_SUFFIX) not in names
    )
    if update_golden:
        for path in stale:
            path.unlink()
        return
    assert not stale, f"golden files without a fixture: {[p.name for p in stale]}; {UPDATE_HINT}"


def translating_fixtures() -> list[str]:
    """Fixtures whose golden is a translation (the others are expected refusals)."""
    return [n for n in fixture_names() if (GOLDEN / f"{n}{OUTPUT_SUFFIX}").exists()]


@pytest.mark.parametrize("name", translating_fixtures())
def test_every_object_validates_against_the_crds(name: str, crds: CrdSchemas) -> None:
    outcome = translate_fixture(load_fixture(name))
    assert outcome.resources is not None, f"{name}: {outcome.error}"
    assert validate_resources(outcome.resources, crds) == []


@pytest.mark.parametrize("name", translating_fixtures())
def test_every_reference_points_to_an_emitted_object(name: str) -> None:
    outcome = translate_fixture(load_fixture(name))
    assert outcome.resources is not None, f"{name}: {outcome.error}"
    assert dangling_references(outcome.resources) == []


def endpoint_credentials(fixture: Fixture) -> list[str]:
    """Passwords and API keys the fixture's endpoints carry in clear text."""
    config = fixture.api.project.data.endpoint_config
    found: list[str] = []
    for endpoint_type in ("production", "sandbox"):
        security = config.security(endpoint_type) if config is not None else None
        if security is not None and security.enabled:
            for value in (security.password, security.api_key_value, security.client_secret):
                if value is not None and value.get_secret_value():
                    found.append(value.get_secret_value())
    return found


@pytest.mark.parametrize("name", [n for n in translating_fixtures() if endpoint_credentials(load_fixture(n))])
def test_endpoint_credentials_appear_only_in_secret_data(name: str) -> None:
    fixture = load_fixture(name)
    secrets = endpoint_credentials(fixture)
    outcome = translate_fixture(fixture)
    assert outcome.resources is not None, f"{name}: {outcome.error}"
    assert not [s for s in secrets if s in outcome.text], "a credential appears in clear text"
    in_secrets = {
        base64.b64decode(value).decode("utf-8")
        for r in outcome.resources
        if r["kind"] == "Secret"
        for value in r.get("data", {}).values()
    }
    assert set(secrets) <= in_secrets
