"""``gateway-agent translate``: the translator run offline on a file, for review before an agent applies it.

It reads what the control plane serves (``apis.zip``) or what a user exports (one API project, as a
zip or a directory), prints or writes the gateway resources, and can check them against the CRDs.
The same rendering serves the golden files of the translation tests, so what a user reviews here is
byte for byte what the tests pin down.

Secret names end in a keyed digest of their content (``translation.content_names``). The key is
derived from ``GATEWAY_AGENT_SEALING_KEY`` as the agent's workers derive it, so the names match
the agent's; without that setting each run draws a random key and Secret names differ between runs.
"""

from __future__ import annotations

import io
import os
import secrets
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer
import yaml
from pydantic import ValidationError

from agent.settings import Settings
from models.artifact import ApiProject, DeployedApi, DeploymentEnvironment
from translation import secret_name_key
from translation.artifacts import (
    API_FILES,
    DEFAULT_LIMITS,
    DEFAULT_ORGANIZATION,
    DEPLOYMENTS_FILE,
    ArtifactError,
    load_api_project_dir,
    parse_api_project_zip,
    parse_runtime_artifacts,
)
from translation.translate import Translation, TranslationError, TranslationOptions
from translation.translate import translate as translate_project

DEFAULT_VHOST = "localhost"  # the vhost of APIM's own "Default" gateway environment
EXIT_INVALID = 1  # --check found problems
EXIT_BAD_INPUT = 2  # the input (or an option) cannot be translated at all


class InputError(Exception):
    """Input the command cannot translate; the message names the file and the problem."""


@dataclass(frozen=True)
class TranslationInput:
    """The deployed APIs read from one input (an ``apis.zip``'s ``env_properties`` travel inside each)."""

    apis: list[DeployedApi]
    skipped: list[DeployedApi] = field(default_factory=list)  # deployed to other gateway environments only


def single_project_deployment(
    project: ApiProject, *, source: str, gateway_labels: Sequence[str], vhost: str
) -> DeployedApi:
    """A lone project has no ``deployments.json``: deploy it to every gateway label on one vhost."""
    data = project.data
    return DeployedApi(
        project=project,
        api_file=source,
        revision_id=data.revision_id or "0",
        organization=data.organization_id or DEFAULT_ORGANIZATION,
        environments=[DeploymentEnvironment(name=label, vhost=vhost) for label in gateway_labels],
    )


def read_input(path: Path, *, gateway_labels: Sequence[str], vhost: str) -> TranslationInput:
    """The APIs in ``path``: an ``apis.zip``, an API project zip, a project directory or its parent.

    Raises ``InputError`` for a path that is none of these and ``ArtifactError`` for a malformed artifact.
    """
    if path.is_dir():
        projects = _project_dirs(path)
        return TranslationInput(
            apis=[
                single_project_deployment(
                    load_api_project_dir(project), source=project.name, gateway_labels=gateway_labels, vhost=vhost
                )
                for project in projects
            ]
        )
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file or directory")
    size = path.stat().st_size
    if size > DEFAULT_LIMITS.max_total_bytes:
        raise InputError(f"{path}: {size} bytes exceeds the limit of {DEFAULT_LIMITS.max_total_bytes} bytes")
    content = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(content)):
        raise InputError(f"{path}: not a zip archive; expected an apis.zip, an API project zip or a project directory")
    if _holds_deployments(content):
        artifacts = parse_runtime_artifacts(content)
        if not artifacts.apis:
            raise InputError(f"{path}: {DEPLOYMENTS_FILE} lists no deployed API")
        # The agent asks the control plane for its own labels only; a saved answer may hold more.
        ours = [api for api in artifacts.apis if _deployed_to(api, gateway_labels)]
        if not ours:
            listed = sorted({e.name for api in artifacts.apis for e in api.environments}) or ["none"]
            raise InputError(
                f"{path}: no API is deployed to {', '.join(gateway_labels)}; its environments are "
                f"{', '.join(listed)} (choose with --gateway-label)"
            )
        skipped = [api for api in artifacts.apis if not _deployed_to(api, gateway_labels)]
        return TranslationInput(apis=ours, skipped=skipped)
    project = parse_api_project_zip(content, name=path.name)
    return TranslationInput(
        apis=[single_project_deployment(project, source=path.name, gateway_labels=gateway_labels, vhost=vhost)]
    )


def secret_name_key_of(settings: Settings) -> tuple[bytes, bool]:
    """The key of Secret names and whether it is the agent's (from the sealing key) or this run's own."""
    sealing_key = settings.sealing_key.get_secret_value()
    if sealing_key:
        return secret_name_key(sealing_key), True
    return secrets.token_bytes(32), False


def translate_input(source: TranslationInput, options: TranslationOptions) -> Translation:
    """Every API's resources and warnings, API by API in input order; raises the first ``TranslationError``."""
    translations = [translate_project(api, options) for api in source.apis]
    return Translation(
        resources=[r for t in translations for r in t.resources],
        warnings=[w for t in translations for w in t.warnings],
    )


def render_stream(resources: Sequence[dict[str, Any]]) -> str:
    """One multi-document YAML stream (``---`` before each object), keys in the translator's order."""
    return "".join(render_resource(resource) for resource in resources)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (certificates, definitions) as literal blocks, the way people write them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # PyYAML falls back to a quoted style by itself where a block cannot hold the value exactly,
    # except for Unicode line breaks, which its single-quoted style mangles: double quotes escape them.
    if _UNICODE_BREAKS.intersection(value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_UNICODE_BREAKS = frozenset("\x85\u2028\u2029")


_Dumper.add_representer(str, _represent_str)


def render_resource(resource: dict[str, Any]) -> str:
    """One object as a YAML document; wide lines so long regexes and base64 values stay on one line."""
    return str(
        yaml.dump(
            resource, Dumper=_Dumper, explicit_start=True, sort_keys=False, allow_unicode=True, width=1_000_000
        )
    )


def resource_file_name(resource: dict[str, Any]) -> str:
    """``<kind-lowercase>-<name>.yaml``: unique per object, since names are unique within a kind."""
    return f"{resource['kind'].lower()}-{resource['metadata']['name']}.yaml"


def write_resources(resources: Sequence[dict[str, Any]], directory: Path) -> list[Path]:
    """One file per object; Secrets are written readable by their owner only."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for resource in resources:
        target = directory / resource_file_name(resource)
        mode = 0o600 if resource["kind"] == "Secret" else 0o644
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(render_resource(resource))
        os.chmod(target, mode)  # O_CREAT's mode does not apply to a file that already existed
        written.append(target)
    return written


def check_resources(resources: Sequence[dict[str, Any]], crd_dir: Path | None) -> tuple[list[str], Path]:
    """Problems of each object against the CRDs, as ``<Kind>/<name>: <problem>``, and the directory used.

    ``crd_dir`` None means the translator's default (``$GATEWAY_AGENT_CRD_DIR`` or the shared copy).
    """
    try:
        from translation.crd_schemas import default_crd_dir, load_crd_schemas, validate_resources
    except ImportError as exc:  # jsonschema is a development dependency
        raise InputError(f"--check needs the jsonschema package ({exc}); install the project with [dev]") from None
    directory = crd_dir if crd_dir is not None else default_crd_dir()
    try:
        schemas = load_crd_schemas(directory)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(f"{directory}: cannot load the CRDs ({exc})") from None
    return validate_resources(resources, schemas), directory


def translate(
    input_path: Path = typer.Argument(
        ...,
        metavar="INPUT",
        help="An apis.zip (runtime-artifacts answer: every API in it), one API project zip, "
        "or a project directory (<Name>-<version>/ or a folder holding such directories).",
        show_default=False,
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Write one file per object, <kind>-<name>.yaml, into this directory (created if missing). "
        "Default: one multi-document YAML stream on stdout.",
        show_default=False,
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Validate every object against the CRDs first; on problems list them on stderr, write nothing, exit 1.",
    ),
    crds: Path | None = typer.Option(
        None,
        "--crds",
        help="CRD directory for --check. Default: $GATEWAY_AGENT_CRD_DIR, else ../shared/apk-crds beside the repo.",
        show_default=False,
    ),
    namespace: str | None = typer.Option(
        None,
        "--namespace",
        help="Namespace of the objects. Default: $GATEWAY_AGENT_NAMESPACE or 'default'.",
        show_default=False,
    ),
    gateway_labels: list[str] | None = typer.Option(
        None,
        "--gateway-label",
        metavar="LABEL",
        help="A gateway environment this agent serves (repeatable). Only APIs deployed there are translated; "
        "a single project is deployed to each. Default: $GATEWAY_AGENT_GATEWAY_LABELS or 'Default'.",
        show_default=False,
    ),
    gateway_name: str | None = typer.Option(
        None,
        "--gateway-name",
        help="Gateway the routes attach to. Default: $GATEWAY_AGENT_GATEWAY_NAME or 'wso2-apk-default'.",
        show_default=False,
    ),
    gateway_namespace: str | None = typer.Option(
        None,
        "--gateway-namespace",
        help="The Gateway's namespace. Default: $GATEWAY_AGENT_GATEWAY_NAMESPACE, else the objects' namespace.",
        show_default=False,
    ),
    gateway_listener: str | None = typer.Option(
        None,
        "--gateway-listener",
        help="The Gateway listener (sectionName). Default: $GATEWAY_AGENT_GATEWAY_LISTENER or 'httpslistener'.",
        show_default=False,
    ),
    vhost: str = typer.Option(
        DEFAULT_VHOST,
        "--vhost",
        help="Host a single project (which has no deployments.json) is served on; sandbox routes get sandbox.<vhost>.",
    ),
) -> None:
    """Translate control-plane artifacts into the gateway's Kubernetes resources, offline.

    Endpoint credentials become Secrets in the output; a warning on stderr says so.
    Secret names end in a digest keyed by $GATEWAY_AGENT_SEALING_KEY, as the agent names them.
    Without it, each run draws a random key: Secret names then differ between runs.

    Exit codes: 0 done, 1 --check found problems, 2 the input cannot be translated.
    """
    try:
        settings = Settings()
        name_key, agents_key = secret_name_key_of(settings)
        options = TranslationOptions(
            namespace=namespace or settings.namespace,
            gateway_name=gateway_name or settings.gateway_name,
            gateway_namespace=gateway_namespace or settings.gateway_namespace,
            gateway_listener=gateway_listener or settings.gateway_listener,
            gateway_http_listener=settings.gateway_http_listener,
            gateway_labels=list(gateway_labels or settings.gateway_labels),
            key_managers=settings.gateway_key_managers,
            secret_name_key=name_key,
        )
    except ValidationError as exc:
        _fail(f"invalid option or GATEWAY_AGENT_* setting: {_first_problem(exc)}")
    shown = str(input_path)
    try:
        source = read_input(input_path, gateway_labels=options.gateway_labels, vhost=vhost)
        translation = translate_input(source, options)
        resources = translation.resources
    except InputError as exc:
        _fail(str(exc))
    except (ArtifactError, TranslationError) as exc:
        _fail(_located(exc.message, input_path))
    except ValidationError as exc:  # a lone project's environment built from --vhost/--gateway-label
        _fail(f"{shown}: {_first_problem(exc)}")
    except OSError as exc:
        _fail(f"{shown}: {exc.strerror or exc}")

    for warning in translation.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for api in source.skipped:
        data = api.project.data
        where = ", ".join(e.name for e in api.environments) or "no environment"
        typer.echo(f"note: skipped API '{data.name}' {data.version}, deployed to {where} only", err=True)
    if check:
        try:
            problems, crd_dir = check_resources(resources, crds)
        except InputError as exc:
            _fail(str(exc))
        if problems:
            for problem in problems:
                typer.echo(problem, err=True)
            typer.echo(f"{len(problems)} problem(s) against the CRDs in {crd_dir}; nothing written", err=True)
            raise typer.Exit(EXIT_INVALID)
        typer.echo(f"{len(resources)} object(s) valid against the CRDs in {crd_dir}", err=True)

    secret_names = [r["metadata"]["name"] for r in resources if r["kind"] == "Secret"]
    if secret_names:
        typer.echo(
            f"warning: the output holds {len(secret_names)} Secret(s) with endpoint credentials "
            f"({', '.join(secret_names)}); keep it out of logs and version control",
            err=True,
        )
        if not agents_key:
            typer.echo(
                "note: GATEWAY_AGENT_SEALING_KEY is not set, so the Secret names come from a random key of this "
                "run and differ between runs (and from the agent's); set it to the agent's to match",
                err=True,
            )
    if out is None:
        typer.echo(render_stream(resources), nl=False)
        return
    try:
        written = write_resources(resources, out)
    except OSError as exc:
        _fail(f"{out}: cannot write ({exc.strerror or exc})")
    typer.echo(f"wrote {len(written)} file(s) for {len(source.apis)} API(s) to {out}", err=True)


def _project_dirs(path: Path) -> list[Path]:
    """``path`` itself when it holds an ``api.json``/``api.yaml``, else its subdirectories that do."""
    if _is_project_dir(path):
        return [path]
    found = sorted(child for child in path.iterdir() if child.is_dir() and _is_project_dir(child))
    if not found:
        raise InputError(f"{path}: no API project here (no {' or '.join(API_FILES)} in it or in a subdirectory)")
    return found


def _is_project_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in API_FILES)


def _holds_deployments(content: bytes) -> bool:
    """Whether a zip is a runtime-artifacts answer (a top-level ``deployments.json``) or a lone project.

    A damaged archive counts as a project: the artifact parser then says precisely what is wrong.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return any(info.filename == DEPLOYMENTS_FILE for info in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        return False


def _deployed_to(api: DeployedApi, gateway_labels: Sequence[str]) -> bool:
    return any(environment.name in gateway_labels for environment in api.environments)


def _located(message: str, path: Path) -> str:
    """``message`` led by the path as the user gave it (the parsers name files by base name only)."""
    shown = str(path)
    if message.startswith(f"{shown}:"):
        return message
    if message.startswith(f"{path.name}:"):
        return shown + message[len(path.name) :]
    return f"{shown}: {message}"


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)
