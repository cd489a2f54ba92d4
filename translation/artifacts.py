"""Safe reading of the control plane's ``apis.zip`` and of single API projects.

The archive comes over the network, so it is treated as hostile: everything is read in memory
(never extracted to disk), entry names are checked before anything is read, sizes are checked
from the central directory and again while decompressing (headers can lie), and an archive may
hold API-project zips one level deep but no deeper. Every error names the file inside the
archive and what is wrong with it.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import stat
import struct
import zipfile
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from models.artifact import (
    ApiData,
    ApiProject,
    CertificateBinding,
    DeployedApi,
    DeploymentEnvironment,
    FieldComplexity,
    PolicySpecification,
    RuntimeArtifacts,
)

MiB = 1024 * 1024
DEFAULT_ORGANIZATION = "carbon.super"
DEPLOYMENTS_FILE = "deployments.json"
ENV_PROPERTIES_FILE = "env_properties.json"
API_FILES = ("api.json", "api.yaml", "api.yml")
REST_DEFINITIONS = (
    "swagger.json",
    "swagger.yaml",
    "swagger.yml",
    "openapi.json",
    "openapi.yaml",
    "openapi.yml",
)
GRAPHQL_DEFINITIONS = ("schema.graphql",)
CERTIFICATE_SUFFIXES = (".crt", ".pem", ".cer")
# Certificate descriptors come in the project's export format.
CLIENT_CERTIFICATES_FILES = ("client_certificates.json", "client_certificates.yaml", "client_certificates.yml")
POLICY_SUFFIXES = (".yaml", ".yml", ".json")
COMPLEXITY_FILES = ("graphql-complexity.json", "graphql-complexity.yaml", "graphql-complexity.yml")
ENDPOINT_CERTIFICATES_FILES = ("endpoint_certificates.json", "endpoint_certificates.yaml", "endpoint_certificates.yml")
_CHUNK = 64 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_M = TypeVar("_M", bound=BaseModel)


class ArtifactError(Exception):
    """An artifact the agent cannot accept. Permanent: fetching it again yields the same bytes."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArtifactLimits(BaseModel):
    """Bounds on what one archive may expand to; the defaults fit the largest real APIs with room."""

    model_config = ConfigDict(frozen=True)

    max_total_bytes: int = Field(default=50 * MiB, gt=0)
    max_entries: int = Field(default=2_000, gt=0)
    max_entry_bytes: int = Field(default=20 * MiB, gt=0)
    max_compression_ratio: int = Field(default=200, gt=1)
    # Tiny, very repetitive files compress well and are harmless; judge the ratio above this size.
    ratio_check_min_bytes: int = Field(default=1 * MiB, ge=0)


DEFAULT_LIMITS = ArtifactLimits()


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)


class _DeploymentEntry(_WireModel):
    api_file: str
    environments: list[DeploymentEnvironment] = Field(default_factory=list)
    organization_id: str | None = None
    api_context: str | None = None
    version: str | None = None


class _DeploymentsData(_WireModel):
    deployments: list[_DeploymentEntry] = Field(default_factory=list)


class _DeploymentsFile(_WireModel):
    type: str | None = None
    version: str | None = None
    data: _DeploymentsData


class _ApiFile(_WireModel):
    type: str | None = None
    version: str | None = None
    data: ApiData


class _CertificatesFile(_WireModel):
    """``client_certificates.json`` / ``endpoint_certificates.json``: ``{type, version, data: [...]}``."""

    data: list[CertificateBinding] = Field(default_factory=list)


class _PolicyFile(_WireModel):
    """An operation policy specification in ``Policies/``: ``{type, version, data: {name, version, ...}}``."""

    data: PolicySpecification


class _ComplexityList(_WireModel):
    entries: list[FieldComplexity] = Field(default_factory=list, alias="list")


class _ComplexityFile(_WireModel):
    """``Definitions/graphql-complexity.json``: ``{type, version, data: {list: [...]}}`` (or the bare ``{list}``)."""

    data: _ComplexityList | None = None
    entries: list[FieldComplexity] = Field(default_factory=list, alias="list")


class _NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML without anchors/aliases: an alias bomb expands to gigabytes once walked."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted", event.start_mark)
        return super().compose_node(parent, index)


class _Budget:
    """Bytes decompressed so far across one parse, nested archives included."""

    def __init__(self, limits: ArtifactLimits) -> None:
        self.limits = limits
        self.total = 0

    def consume(self, count: int, where: str) -> None:
        self.total += count
        if self.total > self.limits.max_total_bytes:
            raise ArtifactError(f"{where}: the archive expands beyond {_size(self.limits.max_total_bytes)} in total")


class _Source(ABC):
    """A read-only set of files (a zip archive or a directory) with a label for messages."""

    def __init__(self, label: str, names: list[str]) -> None:
        self.label = label
        self.names = names
        self._known = set(names)

    def __contains__(self, name: str) -> bool:
        return name in self._known

    @abstractmethod
    def read(self, name: str) -> bytes: ...

    def error(self, name: str, problem: str) -> ArtifactError:
        return ArtifactError(f"{self.label}: {name}: {problem}")


class _DirSource(_Source):
    def __init__(self, label: str, root: Path, names: list[str], budget: _Budget) -> None:
        super().__init__(label, names)
        self._root = root
        self._budget = budget

    def read(self, name: str) -> bytes:
        # O_NOFOLLOW and a bounded read: the tree may change between the listing and the read.
        limit = self._budget.limits.max_entry_bytes
        descriptor = os.open(self._root / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(descriptor, "rb") as handle:
            content = handle.read(limit + 1)
        if len(content) > limit:
            raise self.error(name, f"exceeds the limit of {_size(limit)}")
        self._budget.consume(len(content), self.label)
        return content


class _ZipSource(_Source):
    def __init__(
        self,
        label: str,
        archive: zipfile.ZipFile,
        infos: dict[str, zipfile.ZipInfo],
        limits: ArtifactLimits,
        budget: _Budget,
    ) -> None:
        super().__init__(label, sorted(infos))
        self._archive = archive
        self._infos = infos
        self._limits = limits
        self._budget = budget

    def read(self, name: str, *, counted: bool = True) -> bytes:
        """Decompress one entry, stopping as soon as it outgrows its declared or allowed size."""
        info = self._infos[name]
        ceiling = min(info.file_size, self._limits.max_entry_bytes)
        chunks: list[bytes] = []
        total = 0
        try:
            with self._archive.open(info) as handle:
                while chunk := handle.read(_CHUNK):
                    total += len(chunk)
                    if total > ceiling:
                        raise self.error(name, "expands beyond its declared size (a zip bomb?)")
                    if counted:
                        self._budget.consume(len(chunk), self.label)
                    chunks.append(chunk)
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            NotImplementedError,
            RuntimeError,
            ValueError,  # a corrupted local header: "negative seek value"
            struct.error,
        ) as exc:
            raise self.error(name, f"cannot be decompressed ({exc})") from None
        return b"".join(chunks)


def parse_runtime_artifacts(data: bytes, *, limits: ArtifactLimits = DEFAULT_LIMITS) -> RuntimeArtifacts:
    """Parse the runtime-artifacts answer (``apis.zip``) into every deployed API revision.

    Only the API-project zips that ``deployments.json`` names are opened; others are ignored.
    Raises ``ArtifactError`` for anything unsafe or malformed.
    """
    budget = _Budget(limits)
    archive = _open_zip(data, "apis.zip", limits, budget)
    if DEPLOYMENTS_FILE not in archive:
        raise ArtifactError(f"apis.zip: {DEPLOYMENTS_FILE} is missing")
    deployments = _validate(archive, DEPLOYMENTS_FILE, _load_document(archive, DEPLOYMENTS_FILE), _DeploymentsFile)
    env_properties: dict[str, Any] = {}
    if ENV_PROPERTIES_FILE in archive:
        env_properties = _load_document(archive, ENV_PROPERTIES_FILE)
    apis: list[DeployedApi] = []
    for entry in deployments.data.deployments:
        if entry.api_file not in archive:
            raise ArtifactError(f"apis.zip: {DEPLOYMENTS_FILE} names {entry.api_file!r} which is not in the archive")
        if not entry.api_file.lower().endswith(".zip"):
            raise ArtifactError(f"apis.zip: {DEPLOYMENTS_FILE} names {entry.api_file!r}, which is not a .zip file")
        # The inner zip's own bytes are bounded by the outer checks; its contents count against the budget.
        inner = _open_zip(
            archive.read(entry.api_file, counted=False), posixpath.basename(entry.api_file), limits, budget
        )
        project = _parse_project(inner)
        apis.append(
            DeployedApi(
                project=project,
                api_file=entry.api_file,
                revision_id=project.data.revision_id or _revision_from_file(entry.api_file, project.data.id),
                organization=entry.organization_id or project.data.organization_id or DEFAULT_ORGANIZATION,
                environments=entry.environments,
                env_properties=env_properties,
            )
        )
    return RuntimeArtifacts(apis=apis, env_properties=env_properties)


def parse_api_project_zip(
    data: bytes, *, limits: ArtifactLimits = DEFAULT_LIMITS, name: str = "project.zip"
) -> ApiProject:
    """Parse one API project zip (``<Name>-<version>/api.json`` ...); ``name`` labels error messages."""
    return _parse_project(_open_zip(data, name, limits, _Budget(limits)))


def load_api_project_dir(path: str | os.PathLike[str], *, limits: ArtifactLimits = DEFAULT_LIMITS) -> ApiProject:
    """Load an API project from an unpacked directory, under the same limits as a zip.

    Symbolic links are refused rather than followed, so a project cannot read outside itself.
    """
    root = Path(path)
    label = root.name or str(root)
    if not root.is_dir():
        raise ArtifactError(f"{label}: not a directory")
    budget = _Budget(limits)
    sizes: dict[str, int] = {}
    for current, dirs, files in os.walk(root, followlinks=False):
        for entry in sorted([*dirs, *files]):
            full = Path(current) / entry
            relative = full.relative_to(root).as_posix()
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                raise ArtifactError(f"{label}: {relative}: symbolic links are not accepted")
            if not stat.S_ISREG(mode):
                continue
            if len(sizes) >= limits.max_entries:
                raise ArtifactError(f"{label}: has more than {limits.max_entries} files")
            size = os.lstat(full).st_size
            if size > limits.max_entry_bytes:
                raise ArtifactError(
                    f"{label}: {relative}: {_size(size)} exceeds the limit of {_size(limits.max_entry_bytes)}"
                )
            sizes[relative] = size

    return _parse_project(_DirSource(label, root, sorted(sizes), budget))


def _open_zip(data: bytes, label: str, limits: ArtifactLimits, budget: _Budget) -> _ZipSource:
    if len(data) > limits.max_total_bytes:
        raise ArtifactError(f"{label}: {_size(len(data))} exceeds the limit of {_size(limits.max_total_bytes)}")
    declared_entries = _declared_entry_count(data)
    if declared_entries is not None and declared_entries > limits.max_entries:
        raise ArtifactError(f"{label}: has {declared_entries} entries; the limit is {limits.max_entries}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError, struct.error) as exc:
        # NotImplementedError: an entry needs a zip feature Python lacks (e.g. "zip file version 6.4").
        raise ArtifactError(f"{label}: not a valid zip archive ({exc})") from None
    if len(entries) > limits.max_entries:
        raise ArtifactError(f"{label}: has {len(entries)} entries; the limit is {limits.max_entries}")
    infos: dict[str, zipfile.ZipInfo] = {}
    declared = 0
    for info in entries:
        name = info.filename
        _check_entry_name(label, name)
        if _is_symlink(info):
            raise ArtifactError(f"{label}: {name}: symbolic links are not accepted")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise ArtifactError(f"{label}: {name}: encrypted entries are not accepted")
        if info.file_size > limits.max_entry_bytes:
            raise ArtifactError(
                f"{label}: {name}: {_size(info.file_size)} uncompressed "
                f"exceeds the limit of {_size(limits.max_entry_bytes)}"
            )
        if (
            info.file_size >= limits.ratio_check_min_bytes
            and info.file_size > info.compress_size * limits.max_compression_ratio
        ):
            raise ArtifactError(
                f"{label}: {name}: compression ratio above {limits.max_compression_ratio}:1 "
                f"({info.compress_size} bytes expand to {info.file_size}); refusing a likely zip bomb"
            )
        declared += info.file_size
        if declared > limits.max_total_bytes:
            raise ArtifactError(f"{label}: declares more than {_size(limits.max_total_bytes)} of uncompressed content")
        if name in infos:
            raise ArtifactError(f"{label}: {name}: appears twice in the archive")
        infos[name] = info
    return _ZipSource(label, archive, infos, limits, budget)


def _declared_entry_count(data: bytes) -> int | None:
    """Entry count from the end-of-central-directory record, read before ``zipfile`` builds an
    object per entry (a small archive can declare millions of them)."""
    position = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if position < 0 or position + 12 > len(data):
        return None
    return int.from_bytes(data[position + 10 : position + 12], "little")


def _check_entry_name(label: str, name: str) -> None:
    if not name or "\x00" in name:
        raise ArtifactError(f"{label}: an entry has an empty or invalid name")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise ArtifactError(f"{label}: {name}: absolute paths are not accepted")
    if "\\" in name:
        raise ArtifactError(f"{label}: {name}: backslashes in entry names are not accepted")
    if ".." in name.split("/"):
        raise ArtifactError(f"{label}: {name}: '..' path segments are not accepted")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix mode bits live in the high 16 bits of external_attr when the creator was Unix.
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _parse_project(source: _Source) -> ApiProject:
    api_files = [n for n in source.names if posixpath.basename(n) in API_FILES and n.count("/") <= 1]
    if not api_files:
        raise ArtifactError(f"{source.label}: no api.json or api.yaml found at the project root")
    roots = sorted({posixpath.dirname(n) for n in api_files})
    if len(roots) > 1 or len(api_files) > 1:
        raise ArtifactError(f"{source.label}: holds more than one API project ({', '.join(sorted(api_files))})")
    api_file = api_files[0]
    root = roots[0]
    api = _validate(source, api_file, _load_document(source, api_file), _ApiFile)

    def under_root(*parts: str) -> str:
        return posixpath.join(root, *parts) if root else posixpath.join(*parts)

    candidates = GRAPHQL_DEFINITIONS if api.data.type.upper() == "GRAPHQL" else REST_DEFINITIONS
    searched = [under_root("Definitions", f) for f in candidates] + [under_root(f) for f in candidates]
    definition_path = next((p for p in searched if p in source), None)
    definition: str | None = None
    definition_file: str | None = None
    if definition_path is not None:
        definition = _decode(source, definition_path)
        if definition_path.endswith(".json"):
            _parse_json(source, definition_path, definition)
        definition_file = definition_path[len(root) + 1 :] if root else definition_path
    return ApiProject(
        data=api.data,
        definition=definition,
        definition_file=definition_file,
        client_certificates=_certificates(source, under_root("Client-certificates")),
        endpoint_certificates=_certificates(source, under_root("Endpoint-certificates")),
        client_certificate_bindings=_bindings(
            source, [under_root("Client-certificates", f) for f in CLIENT_CERTIFICATES_FILES]
        ),
        endpoint_certificate_bindings=_bindings(
            source, [under_root("Endpoint-certificates", f) for f in ENDPOINT_CERTIFICATES_FILES]
        ),
        custom_policies=_policy_specifications(source, under_root("Policies")),
        graphql_complexity=_complexity(source, [under_root("Definitions", f) for f in COMPLEXITY_FILES]),
    )


def _policy_specifications(source: _Source, folder: str) -> dict[str, PolicySpecification]:
    """The specifications of the custom operation policies in ``Policies/`` (their ``.j2`` or
    ``.gotmpl`` implementations beside them are for other gateways and not read)."""
    prefix = folder + "/"
    return {
        posixpath.basename(name): _validate(source, name, _load_document(source, name), _PolicyFile).data
        for name in sorted(source.names)
        if name.startswith(prefix) and "/" not in name[len(prefix) :] and name.lower().endswith(POLICY_SUFFIXES)
    }


def _complexity(source: _Source, candidates: list[str]) -> list[FieldComplexity]:
    name = next((n for n in candidates if n in source), None)
    if name is None:
        return []
    document = _validate(source, name, _load_document(source, name), _ComplexityFile)
    return document.data.entries if document.data is not None else document.entries


def _certificates(source: _Source, folder: str) -> dict[str, str]:
    prefix = folder + "/"
    return {
        posixpath.basename(name): _decode(source, name)
        for name in source.names
        if name.startswith(prefix) and "/" not in name[len(prefix) :] and name.lower().endswith(CERTIFICATE_SUFFIXES)
    }


def _bindings(source: _Source, candidates: list[str]) -> list[CertificateBinding]:
    """The entries of a certificates descriptor; none when the file is absent or empty (``{}``)."""
    name = next((n for n in candidates if n in source), None)
    if name is None:
        return []
    document = _load_document(source, name)
    if not document.get("data"):
        return []
    return _validate(source, name, document, _CertificatesFile).data


def _decode(source: _Source, name: str) -> str:
    try:
        return source.read(name).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise source.error(name, f"is not UTF-8 text (byte {exc.start})") from None


def _parse_json(source: _Source, name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise source.error(name, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise source.error(name, "JSON nested too deeply") from None


def _load_document(source: _Source, name: str) -> dict[str, Any]:
    text = _decode(source, name)
    if name.endswith(".json"):
        document = _parse_json(source, name, text)
    else:
        try:
            document = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            position = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise source.error(name, f"invalid YAML{position}: {problem}") from None
        except RecursionError:
            raise source.error(name, "YAML nested too deeply") from None
    if not isinstance(document, dict):
        raise source.error(name, f"expected an object at the top level, found {type(document).__name__}")
    return document


def _validate(source: _Source, name: str, document: dict[str, Any], model: type[_M]) -> _M:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise source.error(name, describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """First problem of a pydantic error, by field path; never echoes the input (it may be a secret)."""
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"])
    text = f"field '{field}' is required" if first["type"] == "missing" else f"field '{field}': {first['msg']}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text


def _revision_from_file(api_file: str, api_id: str) -> str:
    stem = posixpath.basename(api_file)[: -len(".zip")]
    if stem.startswith(api_id + "-"):
        return stem[len(api_id) + 1 :] or "0"
    return stem.rsplit("-", 1)[1] if "-" in stem else "0"


def _size(count: int) -> str:
    return f"{count / MiB:.1f} MiB" if count >= MiB else f"{count} bytes"
