"""Properties of the translator over wide, generated APIM exports.

Projects are built with ``harness.api_projects`` and read back through the real parser, so the
generated input has the control plane's wire shape. Whatever the input, translation either
succeeds or refuses with ``TranslationError``; what it produces is valid, stably and uniquely
named, deterministic, and keeps endpoint credentials inside Secret data only. Its ConfigMaps and
Secrets are named by their content (a keyed digest for Secrets), every reference resolves, and a
change of a definition or a credential renames exactly the object that holds it.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.translate_command import render_stream
from harness.api_projects import (
    ApiProjectFiles,
    api_project_zip,
    graphql_api_project,
    rest_api_project,
    with_changes,
)
from models.artifact import DeployedApi, DeploymentEnvironment
from models.naming import CONFIG_HASH_ANNOTATION
from translation.artifacts import parse_api_project_zip
from translation.content_names import config_map_name, secret_name, secret_name_key
from translation.crd_schemas import CrdSchemas, validate_resources
from translation.translate import TranslationError, TranslationOptions, translate_api

from . import SECRET_NAME_KEY, dangling_references

OPTIONS = TranslationOptions(namespace="apk-apis", gateway_labels=["Default"], secret_name_key=SECRET_NAME_KEY)
EXAMPLES = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# What APIM refuses in API names; the generated names use everything else, unicode included.
NAME_FORBIDDEN = "~!@#;:%^*()+={}|\\<>\"',&$[]/"
RFC1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECRET_PREFIX = "s3cr3t\u00b7"  # a marker no translator output contains by chance
OTHER_KEY_OPTIONS = OPTIONS.model_copy(update={"secret_name_key": secret_name_key("another sealing key")})
CONTENT_SUFFIX = re.compile(r"-[0-9a-f]{10}$")
MAX_API_NAME = 60  # the API CRD's spec.apiName


# Whether this example may draw odd input (one example in two): every ``mostly`` shares the value.
ODD_ALLOWED = st.shared(st.booleans(), key="odd input allowed")


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``odd`` about one time in ten: awkward input is covered without drowning the translatable.
    Never ``odd`` in a serveable API (``generated_apis(serveable=True)``).

    (``st.one_of`` weighs branches by how many distinct values they yield, so it cannot express this.)
    """
    rolled = st.integers(0, 99).flatmap(lambda roll: odd if roll % 10 == 7 else usual)
    return ODD_ALLOWED.flatmap(lambda allowed: rolled if allowed else usual)


_printable = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=NAME_FORBIDDEN),
    min_size=1,
    max_size=64,
).filter(lambda n: n.strip() not in ("", ".", ".."))
versions = mostly(
    st.from_regex(r"\A(v?[0-9]{1,3}(\.[0-9]{1,3}){0,2}(-[a-z]{1,6}[0-9]?)?)\Z"),
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=NAME_FORBIDDEN + "."
        ),
        min_size=1,
        max_size=32,
    ),
)
_segment = mostly(
    st.one_of(st.from_regex(r"\A[a-z0-9][a-z0-9._~-]{0,11}\Z"), st.sampled_from(["{version}", "t", "wso2.com"])),
    st.sampled_from(["ÄPI", "a b", "x+y", ""]),
)
contexts = st.lists(_segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
_path_literal = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9_-]{1,10}\Z"),
    st.sampled_from(["items.json", "résumé", "a+b", "search:batch", "(x)", "~me", "[0]"]),
)
_path_part = st.one_of(_path_literal, st.from_regex(r"\A\{[A-Za-z][A-Za-z0-9_]{0,8}\}\Z"))
rest_targets = st.one_of(
    st.just("/"),
    st.just("/*"),
    st.tuples(st.lists(_path_part, min_size=1, max_size=5), st.booleans()).map(
        lambda t: "/" + "/".join(t[0]) + ("/*" if t[1] else "")
    ),
)
verbs = mostly(
    st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    st.sampled_from(["get", "TRACE", "CONNECT", "FETCH"]),
)
scopes = st.lists(st.from_regex(r"\A[a-z]{1,8}(:[a-z]{1,8})?\Z"), max_size=2, unique=True)
auth_types = st.sampled_from(["Application & Application User", "None", "Application", "Any"])
throttling = mostly(st.sampled_from(["Unlimited", "10KPerMin", "50KPerMin"]), st.just("Bronze"))


def operation(targets: st.SearchStrategy[str], verb: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"target": targets, "verb": verb},
        optional={"authType": auth_types, "scopes": scopes, "throttlingPolicy": throttling},
    )


rest_operations = mostly(
    st.lists(operation(rest_targets, verbs), min_size=1, max_size=12), st.lists(operation(rest_targets, verbs))
)
graphql_operations = st.lists(
    operation(
        st.from_regex(r"\A[a-z][A-Za-z0-9_]{0,15}\Z"),
        st.sampled_from(["QUERY", "QUERY", "MUTATION", "SUBSCRIPTION"]),
    ),
    min_size=1,
    max_size=8,
)
hosts = mostly(
    st.from_regex(r"\A[a-z][a-z0-9-]{0,12}(\.[a-z][a-z0-9-]{0,12}){0,3}\Z").filter(lambda h: not h.endswith("-")),
    st.sampled_from(["10.0.0.7", "backend", "[::1]", "BACKEND.Example.COM"]),
)
urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    mostly(st.sampled_from(["http", "https"]), st.sampled_from(["ws", "ftp", "HTTPS"])),
    hosts,
    st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")),
    st.one_of(st.just(""), st.just("/"), st.from_regex(r"\A(/[a-z0-9._-]{1,10}){1,3}/?\Z")),
)
endpoint_urls = mostly(urls, st.none())
security_schemes = mostly(
    st.lists(st.sampled_from(["oauth2", "api_key", "oauth_basic_auth_api_key_mandatory"]), unique=True, max_size=3),
    st.lists(
        st.sampled_from(
            [
                "oauth2",
                "api_key",
                "basic_auth",
                "mutualssl",
                "mutualssl_mandatory",
                "oauth_basic_auth_api_key_mandatory",
            ]
        ),
        unique=True,
        max_size=4,
    ),
)
secret_values = st.text(alphabet=_printable, min_size=4, max_size=24).map(lambda s: SECRET_PREFIX + s)
endpoint_credentials = st.one_of(
    st.builds(
        lambda username, password: {"type": "BASIC", "username": username, "password": password},
        st.from_regex(r"\A[a-z][a-z0-9._-]{0,15}\Z"),
        secret_values,
    ),
    st.builds(
        lambda name, placement, value: {
            "type": "apikey",
            "apiKeyIdentifier": name,
            "apiKeyIdentifierType": placement,
            "apiKeyValue": value,
        },
        st.sampled_from(["X-API-Key", "apikey", "Authorization"]),
        st.sampled_from(["HEADER", "QUERY_PARAMETER"]),
        secret_values,
    ),
)
organizations = st.sampled_from(["carbon.super", "wso2.com", "acme", "3f9a1c5e-org", "Ünïcode Org"])
vhosts = mostly(st.sampled_from(["gw.wso2.com", "localhost", "api.example.org"]), st.just("Not A Host"))


@dataclass(frozen=True)
class GeneratedApi:
    """A generated export and the credentials it carries in clear text."""

    files: ApiProjectFiles
    organization: str
    vhost: str
    secrets: dict[str, str]  # endpoint type -> password or API key
    urls: dict[str, str | None]  # endpoint type -> URL


def _names_a_scheme(schemes: list[str]) -> bool:
    return not schemes or bool({"oauth2", "api_key"} & set(schemes))


@st.composite
def generated_apis(draw: st.DrawFn, serveable: bool = False) -> GeneratedApi:
    """A wide export; with ``serveable``, only what the gateway can serve (no odd input, names the
    gateway takes, no GraphQL subscriptions, an endpoint), which the translator must translate."""
    if serveable:
        assume(not draw(ODD_ALLOWED))
    graphql = draw(st.integers(0, 99)) % 4 == 1  # about one API in four
    credentials = draw(
        st.fixed_dictionaries({}, optional={"production": endpoint_credentials, "sandbox": endpoint_credentials})
    )
    common: dict[str, Any] = {
        "uuid": str(draw(st.uuids())),
        "name": draw(names.filter(lambda n: len(n) <= MAX_API_NAME) if serveable else names),
        "version": draw(versions),
        "context": draw(contexts),
        "organization": draw(organizations),
        "revision_id": str(draw(st.integers(1, 40))),
        "production_url": draw(endpoint_urls),
        "sandbox_url": draw(endpoint_urls),
        # "oauth_basic_auth_api_key_mandatory" alone names no scheme: a refusal, not a serveable API.
        "security_scheme": draw(security_schemes.filter(_names_a_scheme) if serveable else security_schemes),
        "endpoint_security": credentials or None,
        "is_default_version": draw(st.booleans()),
        "extra": draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "authorizationHeader": st.sampled_from(["Authorization", "X-Auth", "x-token"]),
                    "apiKeyHeader": st.sampled_from(["ApiKey", "X-API-Key"]),
                    "additionalProperties": st.lists(
                        st.fixed_dictionaries(
                            {"name": st.from_regex(r"\A[a-zA-Z][a-zA-Z0-9]{0,10}\Z"), "value": st.text(max_size=20)}
                        ),
                        max_size=3,
                    ),
                },
            )
        ),
        "format": draw(st.sampled_from(["json", "yaml"])),
    }
    if graphql:
        operations = graphql_operations.map(lambda ops: [o for o in ops if o["verb"] != "SUBSCRIPTION"]).filter(bool)
        files = graphql_api_project(operations=draw(operations if serveable else graphql_operations), **common)
    else:
        files = rest_api_project(operations=draw(rest_operations), **common)
    secrets = {kind: str(values.get("password") or values.get("apiKeyValue")) for kind, values in credentials.items()}
    return GeneratedApi(
        files=files,
        organization=common["organization"],
        vhost=draw(vhosts),
        secrets=secrets,
        urls={"production": common["production_url"], "sandbox": common["sandbox_url"]},
    )


def deploy(api: GeneratedApi, files: ApiProjectFiles | None = None) -> DeployedApi:
    """Parse the project zip as the agent does and deploy it to the ``Default`` environment."""
    project_files = files or api.files
    project = parse_api_project_zip(api_project_zip(project_files), name=project_files.api_file_name)
    return DeployedApi(
        project=project,
        api_file=project_files.api_file_name,
        revision_id=project_files.revision,
        organization=api.organization,
        environments=[DeploymentEnvironment(name="Default", vhost=api.vhost)],
    )


def translate_or_none(api: DeployedApi) -> list[dict[str, Any]] | None:
    """The objects, or None when the translator refuses; any other exception fails the test."""
    try:
        return translate_api(api, OPTIONS)
    except TranslationError as exc:
        assert exc.message and "\n" not in exc.message
        return None


def unpacked_config_maps(resources: list[dict[str, Any]]) -> list[str]:
    """ConfigMap contents as the gateway reads them (binaryData decoded, the definition gunzipped)."""
    texts: list[str] = []
    for resource in resources:
        if resource["kind"] != "ConfigMap":
            continue
        texts.extend(resource.get("data", {}).values())
        for value in resource.get("binaryData", {}).values():
            raw = base64.b64decode(value)
            texts.append((gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8", "replace"))
    return texts


def identities(resources: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["kind"], r["metadata"]["name"]) for r in resources]


def difference(
    first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[tuple[str, str]]]:
    """(objects only in first, only in second, in both with another content), by (kind, name)."""
    a = {(r["kind"], r["metadata"]["name"]): r for r in first}
    b = {(r["kind"], r["metadata"]["name"]): r for r in second}
    return set(a) - set(b), set(b) - set(a), {key for key in a.keys() & b.keys() if a[key] != b[key]}


def without_config_hash(resource: dict[str, Any]) -> dict[str, Any]:
    copied = copy.deepcopy(resource)
    copied["metadata"]["annotations"].pop(CONFIG_HASH_ANNOTATION, None)
    return copied


def assert_content_addressed(resources: list[dict[str, Any]], key: bytes) -> None:
    """Every ConfigMap and Secret is ``<readable name>-<digest of its content>``."""
    for resource in resources:
        name = resource["metadata"]["name"]
        prefix = CONTENT_SUFFIX.sub("", name)
        if resource["kind"] == "ConfigMap":
            assert name == config_map_name(prefix, resource.get("data"), resource.get("binaryData")), name
        elif resource["kind"] == "Secret":
            assert name == secret_name(prefix, key, resource["data"], resource["type"]), name


def secret_references(resource: dict[str, Any]) -> set[str]:
    security = resource["spec"].get("security") if resource["kind"] == "Backend" else None
    if not security:
        return set()
    ref = security["basic"]["secretRef"] if "basic" in security else security["apiKey"]["valueFrom"]
    return {ref["name"]}


@EXAMPLES
@given(api=generated_apis())
def test_translation_is_valid_named_and_deterministic_or_refused(api: GeneratedApi, crds: CrdSchemas) -> None:
    resources = translate_or_none(deploy(api))
    if resources is None:
        return
    assert validate_resources(resources, crds) == []
    for _, name in identities(resources):
        assert len(name) <= 253 and RFC1123_SUBDOMAIN.match(name), name
    assert len(set(identities(resources))) == len(resources), identities(resources)
    assert dangling_references(resources) == []
    assert_content_addressed(resources, SECRET_NAME_KEY)
    again = translate_api(deploy(api), OPTIONS)
    assert identities(again) == identities(resources)
    assert render_stream(again) == render_stream(resources)


@EXAMPLES
@given(api=generated_apis(serveable=True))
def test_every_api_the_gateway_can_serve_is_translated(api: GeneratedApi, crds: CrdSchemas) -> None:
    """The properties above hold for what is translated; this keeps them honest: a translator
    that refused everything would pass them, and fails here."""
    try:
        resources = translate_api(deploy(api), OPTIONS)
    except TranslationError as exc:
        raise AssertionError(f"refused an API the gateway can serve: {exc.message}") from None
    assert validate_resources(resources, crds) == []
    assert dangling_references(resources) == []


@EXAMPLES
@given(api=generated_apis())
def test_credentials_appear_only_in_secret_data(api: GeneratedApi) -> None:
    resources = translate_or_none(deploy(api))
    if resources is None or not api.secrets:
        return
    serialized = [render_stream(resources), json.dumps(resources, ensure_ascii=False), *unpacked_config_maps(resources)]
    assert not any(SECRET_PREFIX in text for text in serialized), "a credential appears outside base64 Secret data"
    in_secrets = {
        base64.b64decode(value).decode("utf-8")
        for r in resources
        if r["kind"] == "Secret"
        for value in r.get("data", {}).values()
    }
    for endpoint_type, secret in api.secrets.items():
        if api.urls[endpoint_type] is not None:
            assert secret in in_secrets, f"the {endpoint_type} credential is not in any Secret"
    # Nor in a Secret's name: no bare hash of a credential (or of the data) that a guess could be tested against.
    for resource in resources:
        if resource["kind"] != "Secret":
            continue
        name = resource["metadata"]["name"]
        suffix = name[-10:]
        texts = [*api.secrets.values(), *resource["data"].values(), json.dumps(resource["data"], sort_keys=True)]
        for text in texts:
            for algorithm in ("sha1", "sha256", "md5"):
                digest = hashlib.new(algorithm, text.encode("utf-8")).hexdigest()
                assert suffix not in digest and digest[:10] not in name, (algorithm, name)


@EXAMPLES
@given(api=generated_apis(), change=st.text(alphabet=_printable, min_size=1, max_size=20))
def test_a_new_definition_renames_the_definition_and_nothing_else(api: GeneratedApi, change: str) -> None:
    deployed = deploy(api)
    first = translate_or_none(deployed)
    definition = deployed.project.definition
    if first is None or not definition or not definition.strip():
        return
    changed_api = deployed.model_copy(
        update={"project": deployed.project.model_copy(update={"definition": f"{definition}\n# {change}"})}
    )
    second = translate_api(changed_api, OPTIONS)
    gone, added, changed = difference(first, second)
    assert len(gone) == len(added) == 1, (gone, added)
    ((old_kind, old_name),), ((new_kind, new_name),) = gone, added
    assert old_kind == new_kind == "ConfigMap"
    assert CONTENT_SUFFIX.sub("", old_name) == CONTENT_SUFFIX.sub("", new_name)
    (api_object,) = [r for r in second if r["kind"] == "API"]
    assert api_object["spec"]["definitionFileRef"] == new_name
    assert changed == {("API", api_object["metadata"]["name"])}
    assert dangling_references(second) == []


@EXAMPLES
@given(api=generated_apis(), data=st.data())
def test_a_rotated_credential_renames_its_secret_and_moves_its_backends_only(
    api: GeneratedApi, data: st.DataObject
) -> None:
    first = translate_or_none(deploy(api))
    if first is None or not api.secrets:
        return
    endpoint_type = data.draw(st.sampled_from(sorted(api.secrets)))
    config = copy.deepcopy(api.files.data["endpointConfig"])
    security = config["endpoint_security"][endpoint_type]
    field_name = "password" if str(security.get("type")).upper() == "BASIC" else "apiKeyValue"
    security[field_name] = api.secrets[endpoint_type] + data.draw(st.text(alphabet=_printable, min_size=1, max_size=8))
    second = translate_api(deploy(api, with_changes(api.files, data_updates={"endpointConfig": config})), OPTIONS)
    gone, added, changed = difference(first, second)
    if api.urls[endpoint_type] is None:  # no backend of that type, so no Secret
        assert (gone, added, changed) == (set(), set(), set())
        return
    assert len(gone) == len(added) == 1, (gone, added)
    ((old_kind, old_name),), ((new_kind, new_name),) = gone, added
    assert old_kind == new_kind == "Secret"
    assert CONTENT_SUFFIX.sub("", old_name) == CONTENT_SUFFIX.sub("", new_name)
    before = {(r["kind"], r["metadata"]["name"]): r for r in first}
    after = {(r["kind"], r["metadata"]["name"]): r for r in second}
    referrers = {key for key, r in before.items() if old_name in secret_references(r)}
    assert referrers and all(secret_references(after[key]) == {new_name} for key in referrers)
    (api_key,) = [key for key in before if key[0] == "API"]
    assert changed == referrers | {api_key}
    assert without_config_hash(before[api_key]) == without_config_hash(after[api_key])
    assert dangling_references(second) == []


@settings(max_examples=100, deadline=None)
@given(api=generated_apis())
def test_another_key_renames_the_secrets_only(api: GeneratedApi) -> None:
    first = translate_or_none(deploy(api))
    if first is None:
        return
    second = translate_api(deploy(api), OTHER_KEY_OPTIONS)
    gone, added, changed = difference(first, second)
    secrets = {key for key in identities(first) if key[0] == "Secret"}
    assert gone == secrets and len(added) == len(secrets) and {kind for kind, _ in added} <= {"Secret"}
    assert {kind for kind, _ in changed} <= {"Backend", "API"}
    assert_content_addressed(second, OTHER_KEY_OPTIONS.secret_name_key)


@settings(max_examples=100, deadline=None)
@given(api=generated_apis(), other_uuid=st.uuids())
def test_two_apis_never_share_a_name(api: GeneratedApi, other_uuid: uuid.UUID) -> None:
    if str(other_uuid) == api.files.uuid:
        return
    first = translate_or_none(deploy(api))
    second = translate_or_none(deploy(api, with_changes(api.files, data_updates={"id": str(other_uuid)})))
    if first is None or second is None:
        return
    assert not set(identities(first)) & set(identities(second))


@given(st.dictionaries(st.text(max_size=8), st.text(), max_size=4))
def test_the_rendered_stream_loads_back_to_the_same_objects(data: dict[str, str]) -> None:
    """Multi-line values are rendered as literal blocks; whatever the string, YAML gives it back."""
    resource = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": data}
    assert list(yaml.safe_load_all(render_stream([resource]))) == [resource]
