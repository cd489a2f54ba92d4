"""Builders of WSO2 API Manager export artifacts: API projects, their zips and ``apis.zip``.

Tests, benchmarks and the demo need artifacts shaped exactly like the ones the control
plane serves from ``runtime-artifacts`` (see control-plane.md, section 3), so the agent's
parser is exercised on realistic input rather than on a simplified private format.
"""

from __future__ import annotations

import copy
import io
import json
import re
import time
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

EXPORT_VERSION = "v4.3.0"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


class _PlainDumper(yaml.SafeDumper):
    """Writes shared objects out in full: APIM's exports carry no YAML aliases, and the agent
    refuses them."""

    def ignore_aliases(self, data: object) -> bool:
        return True


ProjectFormat = Literal["json", "yaml"]

_PATH_PARAM = re.compile(r"\{([^}/]+)\}")

DEFAULT_REST_OPERATIONS: tuple[dict[str, Any], ...] = (
    {"target": "/items", "verb": "GET"},
    {"target": "/items", "verb": "POST"},
    {"target": "/items/{itemId}", "verb": "GET"},
    {"target": "/items/{itemId}", "verb": "PUT"},
    {"target": "/items/{itemId}", "verb": "DELETE"},
)

DEFAULT_GRAPHQL_SDL = """\
schema {
  query: Query
  mutation: Mutation
}

type Query {
  hero(episode: Episode): Character
  droid(id: ID!): Droid
}

type Mutation {
  createReview(episode: Episode, review: ReviewInput!): Review
}

enum Episode {
  NEWHOPE
  EMPIRE
  JEDI
}

type Character {
  id: ID!
  name: String!
}

type Droid {
  id: ID!
  name: String!
  primaryFunction: String
}

type Review {
  stars: Int!
  commentary: String
}

input ReviewInput {
  stars: Int!
  commentary: String
}
"""

DEFAULT_GRAPHQL_OPERATIONS: tuple[dict[str, Any], ...] = (
    {"target": "hero", "verb": "QUERY"},
    {"target": "droid", "verb": "QUERY"},
    {"target": "createReview", "verb": "MUTATION"},
)

_DEFAULT_CORS: dict[str, Any] = {
    "corsConfigurationEnabled": False,
    "accessControlAllowOrigins": ["*"],
    "accessControlAllowCredentials": False,
    "accessControlAllowHeaders": [
        "authorization",
        "Access-Control-Allow-Origin",
        "Content-Type",
        "SOAPAction",
        "apikey",
        "Internal-Key",
    ],
    "accessControlAllowMethods": ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"],
}

_ENDPOINT_SECURITY_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "type": "NONE",
    "username": "",
    "password": "",
    "apiKeyIdentifier": None,
    "apiKeyValue": None,
    "apiKeyIdentifierType": "HEADER",
    "grantType": None,
    "tokenUrl": None,
    "clientId": None,
    "clientSecret": None,
    "customParameters": {},
    "additionalProperties": {},
}


@dataclass(frozen=True)
class ApiProjectFiles:
    """One exported API project: its files keyed by path relative to the zip root.

    Paths start with the project directory ``<Name>-<version>/`` exactly as in an export.
    """

    uuid: str
    revision: str
    name: str
    version: str
    files: dict[str, bytes] = field(repr=False)

    @property
    def root(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def api_file_path(self) -> str:
        """Path of ``api.json`` or ``api.yaml``, whichever the project carries."""
        for candidate in (f"{self.root}/api.json", f"{self.root}/api.yaml", f"{self.root}/api.yml"):
            if candidate in self.files:
                return candidate
        raise KeyError(f"project {self.root} has no api.json or api.yaml")

    @property
    def document(self) -> dict[str, Any]:
        """The parsed ``{type, version, data}`` export document."""
        return _parse_document(self.api_file_path, self.files[self.api_file_path])

    @property
    def data(self) -> dict[str, Any]:
        data = self.document.get("data")
        if not isinstance(data, dict):
            raise ValueError(f"{self.api_file_path} has no 'data' object")
        return data

    @property
    def context(self) -> str:
        return str(self.data.get("context", ""))

    @property
    def provider(self) -> str:
        return str(self.data.get("provider", "admin"))

    @property
    def api_type(self) -> str:
        return str(self.data.get("type", "HTTP"))

    @property
    def lifecycle_status(self) -> str:
        return str(self.data.get("lifeCycleStatus", "PUBLISHED"))

    @property
    def organization(self) -> str:
        return str(self.data.get("organizationId") or "carbon.super")

    @property
    def api_file_name(self) -> str:
        """Name of this revision's inner zip in ``apis.zip`` (``deployments.json`` ``apiFile``)."""
        return f"{self.uuid}-{self.revision}.zip"

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> ApiProjectFiles:
        """Build from a file map; identity (uuid, revision, name, version) comes from api.json/yaml."""
        normalized = {path.replace("\\", "/").lstrip("/"): bytes(content) for path, content in files.items()}
        api_paths = [p for p in normalized if re.fullmatch(r"[^/]+/api\.(json|ya?ml)", p)]
        if len(api_paths) != 1:
            raise ValueError(f"expected exactly one <Name>-<version>/api.json|yaml, found {sorted(api_paths)}")
        document = _parse_document(api_paths[0], normalized[api_paths[0]])
        data = document.get("data")
        if not isinstance(data, dict):
            raise ValueError(f"{api_paths[0]} has no 'data' object")
        missing = [key for key in ("id", "name", "version") if not data.get(key)]
        if missing:
            raise ValueError(f"{api_paths[0]} lacks {missing}")
        root = api_paths[0].split("/", 1)[0]
        expected_root = f"{data['name']}-{data['version']}"
        if root != expected_root:
            # Re-root so the directory name always matches the API, as APIM's export does.
            normalized = {expected_root + path[len(root) :]: content for path, content in normalized.items()}
        revision = data.get("revisionId")
        return cls(
            uuid=str(data["id"]),
            revision=str(revision if revision not in (None, "") else "0"),
            name=str(data["name"]),
            version=str(data["version"]),
            files=normalized,
        )


@dataclass(frozen=True)
class Deployment:
    """One API revision deployed on some gateway environments of one organization."""

    project: ApiProjectFiles
    environments: list[dict[str, Any]]
    organization: str = "carbon.super"

    @property
    def api_file(self) -> str:
        return self.project.api_file_name


def gateway_environment(
    name: str,
    *,
    vhost: str = "gw.wso2.com",
    deployed_at_ms: int | None = None,
    deployment_type: str = "hybrid",
) -> dict[str, Any]:
    """An entry of ``deployments.json`` ``environments``."""
    return {
        "name": name,
        "vhost": vhost,
        "deployedTimeStamp": deployed_at_ms if deployed_at_ms is not None else int(time.time() * 1000),
        "deploymentType": deployment_type,
    }


def rest_api_project(
    *,
    uuid: str,
    name: str,
    version: str,
    context: str,
    organization: str = "carbon.super",
    provider: str = "admin",
    revision_id: str = "1",
    production_url: str | None = "http://backend.example:8080/api",
    sandbox_url: str | None = None,
    operations: Iterable[Mapping[str, Any]] | None = None,
    security_scheme: Iterable[str] = ("oauth2",),
    endpoint_security: Mapping[str, Mapping[str, Any]] | None = None,
    cors: Mapping[str, Any] | None = None,
    is_default_version: bool = False,
    extra: Mapping[str, Any] | None = None,
    format: ProjectFormat = "json",
) -> ApiProjectFiles:
    """A REST (``type: HTTP``) API project with an OpenAPI 3 definition matching its operations."""
    ops = _normalize_operations(DEFAULT_REST_OPERATIONS if operations is None else operations)
    data = _api_data(
        uuid=uuid,
        name=name,
        version=version,
        context=context,
        api_type="HTTP",
        organization=organization,
        provider=provider,
        revision_id=revision_id,
        production_url=production_url,
        sandbox_url=sandbox_url,
        operations=ops,
        security_scheme=list(security_scheme),
        endpoint_security=endpoint_security,
        cors=cors,
        is_default_version=is_default_version,
    )
    if extra:
        data.update(copy.deepcopy(dict(extra)))
    root = f"{name}-{version}"
    files = {
        _api_file_name(root, format): _dump_document(_export_document(data), format),
        f"{root}/Definitions/swagger.yaml": yaml.dump(
            openapi_definition(data), Dumper=_PlainDumper, sort_keys=False, allow_unicode=True
        ).encode("utf-8"),
    }
    return ApiProjectFiles(uuid=uuid, revision=str(revision_id), name=name, version=version, files=files)


def graphql_api_project(
    *,
    uuid: str,
    name: str,
    version: str,
    context: str,
    organization: str = "carbon.super",
    provider: str = "admin",
    revision_id: str = "1",
    production_url: str | None = "http://graphql-backend.example:8080/graphql",
    sandbox_url: str | None = None,
    sdl: str = DEFAULT_GRAPHQL_SDL,
    operations: Iterable[Mapping[str, Any]] | None = None,
    security_scheme: Iterable[str] = ("oauth2",),
    endpoint_security: Mapping[str, Mapping[str, Any]] | None = None,
    cors: Mapping[str, Any] | None = None,
    is_default_version: bool = False,
    extra: Mapping[str, Any] | None = None,
    format: ProjectFormat = "json",
) -> ApiProjectFiles:
    """A GraphQL API project: operations are schema fields with verb QUERY/MUTATION/SUBSCRIPTION."""
    ops = _normalize_operations(DEFAULT_GRAPHQL_OPERATIONS if operations is None else operations)
    data = _api_data(
        uuid=uuid,
        name=name,
        version=version,
        context=context,
        api_type="GRAPHQL",
        organization=organization,
        provider=provider,
        revision_id=revision_id,
        production_url=production_url,
        sandbox_url=sandbox_url,
        operations=ops,
        security_scheme=list(security_scheme),
        endpoint_security=endpoint_security,
        cors=cors,
        is_default_version=is_default_version,
    )
    if extra:
        data.update(copy.deepcopy(dict(extra)))
    root = f"{name}-{version}"
    files = {
        _api_file_name(root, format): _dump_document(_export_document(data), format),
        f"{root}/Definitions/schema.graphql": sdl.encode("utf-8"),
    }
    return ApiProjectFiles(uuid=uuid, revision=str(revision_id), name=name, version=version, files=files)


def with_changes(
    project: ApiProjectFiles,
    *,
    revision_id: str | None = None,
    data_updates: Mapping[str, Any] | None = None,
) -> ApiProjectFiles:
    """A copy with a new revision id and/or top-level ``data`` fields replaced (a new revision)."""
    document = project.document
    data = dict(document["data"])
    if revision_id is not None:
        data["revisionId"] = _revision_value(revision_id)
    if data_updates:
        data.update(copy.deepcopy(dict(data_updates)))
    document["data"] = data
    path = project.api_file_path
    fmt: ProjectFormat = "json" if path.endswith(".json") else "yaml"
    files = dict(project.files)
    files[path] = _dump_document(document, fmt)
    return ApiProjectFiles(
        uuid=project.uuid,
        revision=str(revision_id) if revision_id is not None else project.revision,
        name=project.name,
        version=project.version,
        files=files,
    )


def openapi_definition(data: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0 document for an api.json ``data``, with APIM's ``x-wso2-*`` extensions."""
    paths: dict[str, dict[str, Any]] = {}
    for op in data.get("operations", []):
        target = str(op["target"])
        verb = str(op["verb"]).lower()
        entry: dict[str, Any] = {
            "operationId": _operation_id(verb, target),
            "responses": {"200": {"description": "OK"}},
            "x-auth-type": op.get("authType", "Application & Application User"),
            "x-throttling-tier": op.get("throttlingPolicy", "Unlimited"),
        }
        params = [
            {"name": param, "in": "path", "required": True, "style": "simple", "explode": False,
             "schema": {"type": "string"}}
            for param in _PATH_PARAM.findall(target)
        ]
        if params:
            entry["parameters"] = params
        if verb in ("post", "put", "patch"):
            entry["requestBody"] = {
                "content": {"application/json": {"schema": {"type": "object"}}},
                "required": True,
            }
        # APIM keeps the security requirement on unsecured resources and marks them with
        # ``x-auth-type: None`` instead.
        entry["security"] = [{"default": list(op.get("scopes", []))}]
        if op.get("scopes"):
            entry["x-scope"] = op["scopes"][0]
        paths.setdefault(target, {})[verb] = entry

    scope_names = sorted({s for op in data.get("operations", []) for s in op.get("scopes", [])})
    endpoint_config = data.get("endpointConfig") or {}
    document: dict[str, Any] = {
        "openapi": "3.0.1",
        "info": {"title": data.get("name", ""), "version": data.get("version", "")},
        "servers": [{"url": "/"}],
        "security": [{"default": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "default": {
                    "type": "oauth2",
                    "flows": {
                        "implicit": {
                            "authorizationUrl": "https://test.com",
                            "scopes": {name: name for name in scope_names},
                            "x-scopes-bindings": {name: "" for name in scope_names},
                        }
                    },
                }
            }
        },
        "x-wso2-auth-header": data.get("authorizationHeader", "Authorization"),
        "x-wso2-api-key-header": data.get("apiKeyHeader", "ApiKey"),
        "x-wso2-cors": data.get("corsConfiguration", _DEFAULT_CORS),
        "x-wso2-basePath": _base_path(str(data.get("context", "")), str(data.get("version", ""))),
        "x-wso2-transports": data.get("transport", ["http", "https"]),
    }
    production = (endpoint_config.get("production_endpoints") or {}).get("url")
    sandbox = (endpoint_config.get("sandbox_endpoints") or {}).get("url")
    if production:
        document["x-wso2-production-endpoints"] = {"urls": [production], "type": "http"}
    if sandbox:
        document["x-wso2-sandbox-endpoints"] = {"urls": [sandbox], "type": "http"}
    return document


def api_project_zip(project: ApiProjectFiles) -> bytes:
    """The inner ``<apiUUID>-<revisionId>.zip`` holding the ``<Name>-<version>/`` project tree."""
    return _zip_bytes(sorted(project.files.items()))


def apis_zip(
    deployments: Iterable[Deployment],
    *,
    env_properties: Mapping[str, Any] | None = None,
    descriptor_version: str = EXPORT_VERSION,
) -> bytes:
    """The ``runtime-artifacts`` answer: ``deployments.json``, optional ``env_properties.json``, inner zips."""
    entries: list[dict[str, Any]] = []
    inner: dict[str, bytes] = {}
    for deployment in deployments:
        entries.append(
            {
                "apiFile": deployment.api_file,
                "environments": [dict(env) for env in deployment.environments],
                "organizationId": deployment.organization,
                "apiContext": deployment.project.context,
                "version": deployment.project.version,
            }
        )
        inner.setdefault(deployment.api_file, api_project_zip(deployment.project))
    descriptor = {"type": "deployments", "version": descriptor_version, "data": {"deployments": entries}}
    members: list[tuple[str, bytes]] = [("deployments.json", json.dumps(descriptor, indent=2).encode("utf-8"))]
    if env_properties:
        members.append(("env_properties.json", json.dumps(dict(env_properties), indent=2).encode("utf-8")))
    members.extend(sorted(inner.items()))
    return _zip_bytes(members)


def project_from_zip(content: bytes) -> ApiProjectFiles:
    """Parse an API project zip (an inner revision zip or an apictl/import zip)."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        files = {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    return ApiProjectFiles.from_files(files)


def load_project_dir(path: str | Path) -> ApiProjectFiles:
    """Load a project from disk: either the ``<Name>-<version>`` directory or a directory holding it."""
    base = Path(path)
    if not base.is_dir():
        raise FileNotFoundError(f"no project directory at {base}")
    if any((base / name).is_file() for name in ("api.json", "api.yaml", "api.yml")):
        prefix, top = base.name + "/", base
    else:
        prefix, top = "", base
    files = {
        prefix + file.relative_to(top).as_posix(): file.read_bytes()
        for file in sorted(top.rglob("*"))
        if file.is_file() and not file.name.startswith(".")
    }
    return ApiProjectFiles.from_files(files)


def sample_project(name: str) -> ApiProjectFiles:
    """A sample shipped under ``harness/samples/<name>/`` (e.g. ``pizzashack``)."""
    return load_project_dir(SAMPLES_DIR / name)


def sample_names() -> list[str]:
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if p.is_dir()) if SAMPLES_DIR.is_dir() else []


def _api_data(
    *,
    uuid: str,
    name: str,
    version: str,
    context: str,
    api_type: str,
    organization: str,
    provider: str,
    revision_id: str,
    production_url: str | None,
    sandbox_url: str | None,
    operations: list[dict[str, Any]],
    security_scheme: list[str],
    endpoint_security: Mapping[str, Mapping[str, Any]] | None,
    cors: Mapping[str, Any] | None,
    is_default_version: bool,
) -> dict[str, Any]:
    endpoint_config: dict[str, Any] = {"endpoint_type": "http"}
    if production_url:
        endpoint_config["production_endpoints"] = {"url": production_url}
    if sandbox_url:
        endpoint_config["sandbox_endpoints"] = {"url": sandbox_url}
    if endpoint_security:
        endpoint_config["endpoint_security"] = {
            env: {**_ENDPOINT_SECURITY_DEFAULTS, "enabled": True, **dict(settings)}
            for env, settings in endpoint_security.items()
        }
    cors_config = dict(_DEFAULT_CORS)
    if cors is not None:
        cors_config["corsConfigurationEnabled"] = True
        cors_config.update(dict(cors))
    scope_names = sorted({s for op in operations for s in op["scopes"]})
    return {
        "id": uuid,
        "name": name,
        "description": f"{name} {version}, exported from WSO2 API Manager",
        "context": context,
        "version": version,
        "provider": provider,
        "lifeCycleStatus": "PUBLISHED",
        "responseCachingEnabled": False,
        "cacheTimeout": 300,
        "hasThumbnail": False,
        "isDefaultVersion": is_default_version,
        "isRevision": True,
        "revisionedApiId": uuid,
        "revisionId": _revision_value(revision_id),
        "enableSchemaValidation": False,
        "type": api_type,
        "audience": None,
        "transport": ["http", "https"],
        "tags": [],
        "policies": ["Unlimited"],
        "apiThrottlingPolicy": None,
        "maxTps": None,
        "authorizationHeader": "Authorization",
        "apiKeyHeader": "ApiKey",
        "securityScheme": security_scheme,
        "visibility": "PUBLIC",
        "visibleRoles": [],
        "accessControl": "NONE",
        "accessControlRoles": [],
        "gatewayVendor": "wso2",
        "gatewayType": "wso2/apk",
        "initiatedFromGateway": False,
        "organizationId": organization,
        "additionalProperties": [],
        "additionalPropertiesMap": {},
        "corsConfiguration": cors_config,
        "endpointConfig": endpoint_config,
        "endpointImplementationType": "ENDPOINT",
        "scopes": [
            {
                "scope": {
                    "id": None,
                    "name": scope,
                    "displayName": scope,
                    "description": "",
                    "bindings": [],
                    "usageCount": None,
                },
                "shared": False,
            }
            for scope in scope_names
        ],
        "operations": operations,
        "keyManagers": ["all"],
        "categories": [],
        "serviceInfo": None,
        "advertiseInfo": {"advertised": False, "apiExternalProductionEndpoint": None,
                          "apiExternalSandboxEndpoint": None, "originalDevPortalUrl": None,
                          "apiOwner": provider, "vendor": "WSO2"},
    }


def _normalize_operations(operations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fill each operation with the fields APIM always exports."""
    result: list[dict[str, Any]] = []
    for op in operations:
        entry: dict[str, Any] = {
            "id": "",
            "target": op["target"],
            "verb": str(op["verb"]).upper(),
            "authType": "Application & Application User",
            "throttlingPolicy": "Unlimited",
            "scopes": [],
            "usedProductIds": [],
            "operationPolicies": {"request": [], "response": [], "fault": []},
        }
        entry.update(copy.deepcopy(dict(op)))
        entry["verb"] = str(entry["verb"]).upper()
        result.append(entry)
    return result


def _revision_value(revision_id: str) -> int | str:
    """APIM exports ``revisionId`` as a number; keep non-numeric ids as given."""
    return int(revision_id) if str(revision_id).isdigit() else revision_id


def _export_document(data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "api", "version": EXPORT_VERSION, "data": data}


def _api_file_name(root: str, fmt: ProjectFormat) -> str:
    if fmt not in ("json", "yaml"):
        raise ValueError(f"format must be 'json' or 'yaml', not {fmt!r}")
    return f"{root}/api.{fmt}"


def _dump_document(document: Mapping[str, Any], fmt: ProjectFormat) -> bytes:
    if fmt == "json":
        return json.dumps(document, indent=2).encode("utf-8")
    return yaml.dump(dict(document), Dumper=_PlainDumper, sort_keys=False, allow_unicode=True).encode("utf-8")


def _parse_document(path: str, content: bytes) -> dict[str, Any]:
    text = content.decode("utf-8")
    parsed = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(parsed, dict):
        raise ValueError(f"{path} is not a mapping")
    return parsed


def _operation_id(verb: str, target: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", target) if w]
    return verb + "".join(w[:1].upper() + w[1:] for w in words)


def _base_path(context: str, version: str) -> str:
    return context if not version or context.rstrip("/").endswith("/" + version) else f"{context.rstrip('/')}/{version}"


def _zip_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, content)
    return buffer.getvalue()
