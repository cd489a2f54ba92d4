"""Check generated objects against the gateway's CRDs before they reach a cluster.

Each object is validated with JSON Schema against the ``openAPIV3Schema`` of the exact served
version it names. Two things the API server does beyond plain JSON Schema are made explicit:
unknown fields are errors here (a structural schema would silently prune them, hiding a typo),
and the HTTPRoute CEL rules the agent's output can run into are evaluated in Python (jsonschema
ignores ``x-kubernetes-validations``). Core kinds (ConfigMap, Secret) get shape checks only.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_DIR_ENV = "GATEWAY_AGENT_CRD_DIR"
MAX_CONFIG_BYTES = 1024 * 1024
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
}
_SINGLE_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")
_PATH_MODIFIER_FIELDS = {"ReplaceFullPath": "replaceFullPath", "ReplacePrefixMatch": "replacePrefixMatch"}


def default_crd_dir() -> Path:
    """``$GATEWAY_AGENT_CRD_DIR``, else the shared CRD copy beside the repository."""
    configured = os.environ.get(CRD_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "apk-crds"


class CrdSchemas:
    """The ``openAPIV3Schema`` of every served version of every CRD in a directory."""

    def __init__(self, schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
        self._schemas = schemas
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> CrdSchemas:
        folder = Path(directory)
        if not folder.is_dir():
            raise FileNotFoundError(f"CRD directory {folder} does not exist")
        schemas: dict[tuple[str, str], dict[str, Any]] = {}
        for path in sorted(folder.glob("*.y*ml")):
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
                    continue
                spec = document["spec"]
                for version in spec.get("versions", []):
                    if version.get("served") and "schema" in version:
                        key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                        schemas[key] = version["schema"]["openAPIV3Schema"]
        if not schemas:
            raise FileNotFoundError(f"no CustomResourceDefinitions found in {folder}")
        return cls(schemas)

    def kinds(self) -> list[tuple[str, str]]:
        """``(apiVersion, kind)`` of every served version, sorted."""
        return sorted(self._schemas)

    def schema(self, api_version: str, kind: str) -> dict[str, Any] | None:
        return self._schemas.get((api_version, kind))

    def validate(self, resource: dict[str, Any]) -> list[str]:
        """Problems with one object, each prefixed ``Kind/name:``; empty when it is valid."""
        kind = str(resource.get("kind", "?"))
        api_version = str(resource.get("apiVersion", "?"))
        name = str((resource.get("metadata") or {}).get("name", "?"))
        where = f"{kind}/{name}"
        problems = _metadata_problems(resource)
        if api_version == "v1" and kind in ("ConfigMap", "Secret"):
            problems += _core_problems(resource)
        else:
            validator = self._validator(api_version, kind)
            if validator is None:
                served = ", ".join(v for v, k in self.kinds() if k == kind) or "none"
                return [
                    f"{where}: {api_version} {kind} is not served by the CRDs (served versions of {kind}: {served})"
                ]
            for error in sorted(validator.iter_errors(resource), key=lambda e: [str(p) for p in e.absolute_path]):
                problems.append(f"{_json_path(error.absolute_path)}: {error.message}")
            if kind == "HTTPRoute":
                problems += _http_route_rule_problems(resource.get("spec") or {})
        return [f"{where}: {problem}" for problem in problems]

    def _validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
        key = (api_version, kind)
        if key not in self._validators:
            schema = self._schemas.get(key)
            if schema is None:
                return None
            self._validators[key] = jsonschema.Draft7Validator(_closed(copy.deepcopy(schema)))
        return self._validators[key]


@functools.lru_cache(maxsize=4)
def _load_cached(directory: str) -> CrdSchemas:
    return CrdSchemas.load(directory)


def load_crd_schemas(directory: str | os.PathLike[str] | None = None) -> CrdSchemas:
    """Load (once per directory) the CRDs from ``directory`` or ``default_crd_dir()``."""
    return _load_cached(str(Path(directory) if directory is not None else default_crd_dir()))


def validate_resources(resources: Iterable[dict[str, Any]], schemas: CrdSchemas | None = None) -> list[str]:
    """Problems across ``resources``; empty when every object would be accepted."""
    crds = schemas if schemas is not None else load_crd_schemas()
    return [problem for resource in resources for problem in crds.validate(resource)]


def _closed(schema: Any) -> Any:
    """Make every object schema with declared properties reject undeclared ones."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            schema[key] = _closed(value)
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def _json_path(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(object)"


def _metadata_problems(resource: dict[str, Any]) -> list[str]:
    metadata = resource.get("metadata")
    if not isinstance(metadata, dict):
        return ["metadata is missing"]
    problems: list[str] = []
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _SUBDOMAIN.match(name):
        problems.append(f"metadata.name {name!r} is not a lowercase RFC 1123 subdomain of at most 253 characters")
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.match(namespace)
    ):
        problems.append(f"metadata.namespace {namespace!r} is not a valid namespace name")
    for key, value in (metadata.get("labels") or {}).items():
        if not _qualified_name(key):
            problems.append(f"label key {key!r} is not a valid qualified name")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"label {key!r} has invalid value {value!r}")
    for key, value in (metadata.get("annotations") or {}).items():
        if not _qualified_name(key):
            problems.append(f"annotation key {key!r} is not a valid qualified name")
        if not isinstance(value, str):
            problems.append(f"annotation {key!r} is not a string")
    return problems


def _qualified_name(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def _core_problems(resource: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    allowed = {"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"}
    if resource["kind"] == "Secret":
        allowed |= {"type", "stringData"}
    problems += [f"unknown field {field!r}" for field in sorted(set(resource) - allowed)]
    size = 0
    for field in ("data", "binaryData", "stringData"):
        values = resource.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(f"{field} is not a map")
            continue
        base64_values = field == "binaryData" or (field == "data" and resource["kind"] == "Secret")
        for key, value in values.items():
            if not isinstance(key, str) or len(key) > 253 or not _DATA_KEY.match(key):
                problems.append(f"{field} key {key!r} is not a valid key")
            if not isinstance(value, str):
                problems.append(f"{field}.{key} is not a string")
                continue
            if base64_values:
                try:
                    size += len(base64.b64decode(value, validate=True))
                except (binascii.Error, ValueError):
                    problems.append(f"{field}.{key} is not valid base64")
            else:
                size += len(value.encode("utf-8"))
    if size > MAX_CONFIG_BYTES:
        problems.append(f"content of {size} bytes exceeds the {MAX_CONFIG_BYTES}-byte limit")
    return problems


def _http_route_rule_problems(spec: dict[str, Any]) -> list[str]:
    """The HTTPRoute CRD's CEL rules that route rules and filters can break."""
    problems: list[str] = []
    rules = spec.get("rules") or []
    if sum(len(rule.get("matches") or []) for rule in rules) > 128:
        problems.append("spec.rules: more than 128 matches across all rules")
    for r, rule in enumerate(rules):
        matches = rule.get("matches") or []
        filters = rule.get("filters") or []
        for m, match in enumerate(matches):
            path = match.get("path") or {}
            if path.get("type", "PathPrefix") in ("Exact", "PathPrefix") and not str(path.get("value", "/")).startswith(
                "/"
            ):
                problems.append(f"spec.rules[{r}].matches[{m}].path: an Exact or PathPrefix value must start with '/'")
        types = [f.get("type") for f in filters]
        if "RequestRedirect" in types and "URLRewrite" in types:
            problems.append(f"spec.rules[{r}].filters: RequestRedirect and URLRewrite cannot be combined")
        for single in _SINGLE_FILTERS:
            if types.count(single) > 1:
                problems.append(f"spec.rules[{r}].filters: {single} filter cannot be repeated")
        for f, flt in enumerate(filters):
            where = f"spec.rules[{r}].filters[{f}]"
            for filter_type, field in _FILTER_FIELDS.items():
                if (flt.get("type") == filter_type) != (field in flt):
                    problems.append(f"{where}: {field} must be set if and only if type is {filter_type}")
            modifier = ((flt.get("urlRewrite") or flt.get("requestRedirect") or {}).get("path")) or {}
            for modifier_type, field in _PATH_MODIFIER_FIELDS.items():
                if modifier and (modifier.get("type") == modifier_type) != (field in modifier):
                    problems.append(f"{where}.path: {field} must be set if and only if type is {modifier_type}")
            if modifier.get("type") == "ReplacePrefixMatch" and not (
                len(matches) == 1 and (matches[0].get("path") or {}).get("type") == "PathPrefix"
            ):
                problems.append(f"{where}: ReplacePrefixMatch needs exactly one PathPrefix match in its rule")
    return problems
