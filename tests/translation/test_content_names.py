"""Content-addressed names of ConfigMaps and Secrets, so every content change is a spec change the gateway sees.

APK redeploys an API only when the generation of the API or of an object it references moves, and a
ConfigMap's or Secret's content has no generation; see ``translation.content_names``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
from typing import Any

import pytest

import translation
from models.naming import CONFIG_HASH_ANNOTATION, MAX_NAME
from translation.content_names import config_map_name, secret_name, secret_name_key
from translation.translate import TranslationOptions, translate_api

from . import (
    API_KEY_VALUE,
    CERTIFICATE,
    OTHER_CERTIFICATE,
    PASSWORD,
    SEALING_KEY,
    SECRET_NAME_KEY,
    SWAGGER,
    api_data,
    dangling_references,
    deployed_api,
)

OPTIONS = TranslationOptions(namespace="apk-agent", gateway_labels=["Default"], secret_name_key=SECRET_NAME_KEY)
OTHER_KEY = secret_name_key("another-sealing-key")
RFC1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SUFFIX = re.compile(r"-([0-9a-f]{10})$")
CREDENTIALS = {
    "production": {"enabled": True, "type": "BASIC", "username": "backend-user", "password": PASSWORD},
    "sandbox": {"enabled": True, "type": "apikey", "apiKeyIdentifier": "X-Backend-Key", "apiKeyValue": API_KEY_VALUE},
}
INTERCEPTOR_URL = "https://interceptor.backend:9081/check"


def everything(
    *,
    security: dict[str, Any] | None = None,
    definition: str = SWAGGER,
    client_certificate: str = CERTIFICATE,
    endpoint_certificate: str = CERTIFICATE,
) -> Any:
    """An API with every ConfigMap and Secret the translator emits, the interceptor's TLS included."""
    interceptor = {
        "policyName": "callInterceptorService",
        "parameters": {"interceptorServiceURL": INTERCEPTOR_URL, "includes": "request_headers"},
    }
    data = api_data(
        securityScheme=["oauth2", "mutualssl"],
        endpointConfig={
            "endpoint_type": "http",
            "production_endpoints": {"url": "https://a.backend:8443/v1"},
            "sandbox_endpoints": {"url": "http://sandbox.backend/v1"},
            "endpoint_security": copy.deepcopy(security if security is not None else CREDENTIALS),
        },
        operations=[
            {"target": "/menu", "verb": "GET", "operationPolicies": {"request": [interceptor]}},
            {"target": "/order", "verb": "POST"},
        ],
    )
    return deployed_api(
        data,
        definition=definition,
        client_certificates={"tpp.crt": client_certificate},
        endpoint_certificates={"a.crt": endpoint_certificate, "i.crt": CERTIFICATE},
        endpoint_bindings=[
            {"alias": "a", "endpoint": "https://a.backend:8443/v1", "certificate": "a.crt"},
            {"alias": "i", "endpoint": INTERCEPTOR_URL, "certificate": "i.crt"},
        ],
    )


def by_id(resources: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


def of_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def difference(
    first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[tuple[str, str]]]:
    """(objects only in first, only in second, in both with another content), by (kind, name)."""
    a, b = by_id(first), by_id(second)
    changed = {key for key in a.keys() & b.keys() if a[key] != b[key]}
    return set(a) - set(b), set(b) - set(a), changed


def without_config_hash(resource: dict[str, Any]) -> dict[str, Any]:
    copied = copy.deepcopy(resource)
    copied["metadata"]["annotations"].pop(CONFIG_HASH_ANNOTATION, None)
    return copied


class TestKeyDerivation:
    def test_the_key_is_hmac_sha256_of_a_fixed_label_keyed_by_the_sealing_key(self) -> None:
        expected = hmac.new(SEALING_KEY.encode(), b"gateway-agent secret names", hashlib.sha256).digest()
        assert secret_name_key(SEALING_KEY) == expected == SECRET_NAME_KEY
        assert len(expected) == 32

    def test_one_function_for_the_command_and_the_worker(self) -> None:
        assert translation.secret_name_key is secret_name_key
        assert secret_name_key("a") != secret_name_key("b")

    def test_an_empty_sealing_key_is_refused(self) -> None:
        with pytest.raises(ValueError, match="sealing key is empty"):
            secret_name_key("")


class TestConfigMapNames:
    def test_the_name_is_the_prefix_and_ten_hex_of_the_content(self) -> None:
        data = {"a.crt": CERTIFICATE}
        name = config_map_name("api-endpoint-certificates", data)
        content = {"kind": "ConfigMap", "name": "api-endpoint-certificates", "data": data, "binaryData": {}}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        assert name == f"api-endpoint-certificates-{hashlib.sha256(canonical).hexdigest()[:10]}"

    def test_same_content_same_name_whatever_the_key_order(self) -> None:
        assert config_map_name("p", {"a": "1", "b": "2"}) == config_map_name("p", {"b": "2", "a": "1"})

    @pytest.mark.parametrize(
        ("data", "binary"),
        [({"a": "2"}, None), ({"b": "1"}, None), ({"a": "1", "b": ""}, None), (None, {"a": "1"}), ({}, None)],
    )
    def test_another_content_another_name(self, data: dict[str, str] | None, binary: dict[str, str] | None) -> None:
        assert config_map_name("p", data, binary) != config_map_name("p", {"a": "1"})

    def test_long_prefixes_stay_valid_and_distinct(self) -> None:
        first, second = "a" * 250 + "x", "a" * 250 + "y"
        names = {config_map_name(prefix, {"k": "v"}) for prefix in (first, second)}
        assert len(names) == 2
        for name in names:
            assert len(name) <= MAX_NAME and RFC1123_SUBDOMAIN.match(name), name


class TestSecretNames:
    DATA = {"password": base64.b64encode(PASSWORD.encode()).decode(), "username": "dQ=="}

    def test_the_name_is_an_hmac_of_the_content(self) -> None:
        name = secret_name("api-production-credentials", SECRET_NAME_KEY, self.DATA)
        content = {"kind": "Secret", "name": "api-production-credentials", "type": "Opaque", "data": self.DATA}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        digest = hmac.new(SECRET_NAME_KEY, canonical, hashlib.sha256).hexdigest()
        assert name == f"api-production-credentials-{digest[:10]}"

    def test_another_key_another_name(self) -> None:
        assert secret_name("p", SECRET_NAME_KEY, self.DATA) != secret_name("p", OTHER_KEY, self.DATA)

    def test_the_same_password_in_two_apis_gives_unrelated_digests(self) -> None:
        first = SUFFIX.search(secret_name("api-a-production-credentials", SECRET_NAME_KEY, self.DATA))
        second = SUFFIX.search(secret_name("api-b-production-credentials", SECRET_NAME_KEY, self.DATA))
        assert first is not None and second is not None and first.group(1) != second.group(1)

    @pytest.mark.parametrize("key", [b"", b"short"])
    def test_no_name_without_a_real_key(self, key: bytes) -> None:
        with pytest.raises(ValueError, match="secret_name_key"):
            secret_name("p", key, self.DATA)


class TestOptions:
    def test_a_short_key_is_refused(self) -> None:
        with pytest.raises(ValueError, match="secret_name_key must be empty or at least 16 bytes"):
            TranslationOptions(namespace="apk-agent", secret_name_key=b"0123456789")

    def test_the_key_stays_out_of_the_repr(self) -> None:
        assert SECRET_NAME_KEY.hex() not in repr(OPTIONS) and repr(SECRET_NAME_KEY) not in repr(OPTIONS)
        assert "secret_name_key" not in repr(OPTIONS)

    def test_an_api_without_credentials_needs_no_key(self) -> None:
        options = TranslationOptions(namespace="apk-agent", gateway_labels=["Default"])
        assert not of_kind(translate_api(deployed_api(), options), "Secret")

    def test_credentials_without_a_key_are_refused(self) -> None:
        options = TranslationOptions(namespace="apk-agent", gateway_labels=["Default"])
        with pytest.raises(ValueError, match="secret_name_key is empty") as info:
            translate_api(everything(), options)
        assert PASSWORD not in str(info.value)


class TestTranslation:
    def test_every_config_map_and_secret_is_named_by_its_content(self) -> None:
        resources = translate_api(everything(), OPTIONS)
        named = [r for r in resources if r["kind"] in ("ConfigMap", "Secret")]
        assert sorted(re.sub(r"^.*?-[0-9a-f]{10}-", "", SUFFIX.sub("", r["metadata"]["name"])) for r in named) == [
            "client-certificates",
            "definition",
            "endpoint-certificates",
            "production-credentials",
            "sandbox-credentials",
        ]
        for resource in named:
            name = resource["metadata"]["name"]
            prefix = SUFFIX.sub("", name)
            if resource["kind"] == "ConfigMap":
                assert name == config_map_name(prefix, resource.get("data"), resource.get("binaryData"))
            else:
                assert name == secret_name(prefix, SECRET_NAME_KEY, resource["data"], resource["type"])

    def test_same_input_same_names(self) -> None:
        assert translate_api(everything(), OPTIONS) == translate_api(everything(), OPTIONS)

    def test_no_reference_dangles(self) -> None:
        resources = translate_api(everything(), OPTIONS)
        assert dangling_references(resources) == []
        # Both the endpoint's Backend and the interceptor's point at the one certificates ConfigMap.
        tls = [b["spec"]["tls"]["configMapRef"] for b in of_kind(resources, "Backend") if "tls" in b["spec"]]
        assert sorted(ref["key"] for ref in tls) == ["a.crt", "i.crt"]
        assert len({ref["name"] for ref in tls}) == 1

    def test_the_check_finds_a_dangling_reference(self) -> None:
        resources = translate_api(everything(), OPTIONS)
        broken = [r for r in resources if r["kind"] != "Secret"]
        problems = dangling_references(broken)
        assert len(problems) == 3 and all(" -> Secret/" in p and p.endswith(": not emitted") for p in problems)
        config_map = next(
            r for r in broken if r["kind"] == "ConfigMap" and "endpoint-certificates" in r["metadata"]["name"]
        )
        config_map["data"].pop("i.crt")
        assert sum(p.endswith(": has no key 'i.crt'") for p in dangling_references(broken)) == 1

    def test_a_new_definition_is_a_new_config_map_and_definition_file_ref(self) -> None:
        first = translate_api(everything(), OPTIONS)
        second = translate_api(everything(definition=SWAGGER.replace("3.0.1", "3.0.3")), OPTIONS)
        gone, added, changed = difference(first, second)
        assert [kind for kind, _ in gone] == [kind for kind, _ in added] == ["ConfigMap"]
        ((_, old_name),), ((_, new_name),) = gone, added
        assert old_name != new_name and _prefix_of(old_name) == _prefix_of(new_name)
        assert _prefix_of(new_name).endswith("-definition")
        assert {kind for kind, _ in changed} == {"API"}
        (api,) = of_kind(second, "API")
        assert api["spec"]["definitionFileRef"] == new_name

    def test_a_rotated_password_changes_the_secret_and_its_backend_only(self) -> None:
        rotated = copy.deepcopy(CREDENTIALS)
        rotated["production"]["password"] = "rotated-" + PASSWORD
        first = translate_api(everything(), OPTIONS)
        second = translate_api(everything(security=rotated), OPTIONS)
        gone, added, changed = difference(first, second)
        assert [kind for kind, _ in gone] == [kind for kind, _ in added] == ["Secret"]
        ((_, old_name),), ((_, new_name),) = gone, added
        assert _prefix_of(old_name) == _prefix_of(new_name)
        assert old_name.endswith("-production-credentials-" + old_name[-10:])
        production = next(name for kind, name in by_id(second) if kind == "Backend" and name.endswith("-production"))
        assert changed == {("Backend", production), ("API", of_kind(second, "API")[0]["metadata"]["name"])}
        assert by_id(second)[("Backend", production)]["spec"]["security"]["basic"]["secretRef"]["name"] == new_name
        # The API itself moves only by its config-hash annotation (a Backend's spec is what the gateway sees).
        assert without_config_hash(of_kind(first, "API")[0]) == without_config_hash(of_kind(second, "API")[0])

    @pytest.mark.parametrize(
        ("change", "kind"),
        [
            ({"client_certificate": OTHER_CERTIFICATE}, "Authentication"),
            ({"endpoint_certificate": OTHER_CERTIFICATE}, "Backend"),
        ],
    )
    def test_a_new_certificate_changes_the_config_map_and_its_referrer(self, change: dict[str, str], kind: str) -> None:
        first = translate_api(everything(), OPTIONS)
        second = translate_api(everything(**change), OPTIONS)
        gone, added, changed = difference(first, second)
        assert [k for k, _ in gone] == [k for k, _ in added] == ["ConfigMap"]
        assert {k for k, _ in changed} == {kind, "API"}
        assert dangling_references(second) == []

    def test_another_key_renames_the_secrets_only(self) -> None:
        options = OPTIONS.model_copy(update={"secret_name_key": OTHER_KEY})
        first, second = translate_api(everything(), OPTIONS), translate_api(everything(), options)
        gone, added, changed = difference(first, second)
        assert [k for k, _ in sorted(gone)] == [k for k, _ in sorted(added)] == ["Secret", "Secret"]
        assert {k for k, _ in changed} == {"Backend", "API"}
        assert sorted(map(_prefix_of, (n for _, n in gone))) == sorted(map(_prefix_of, (n for _, n in added)))

    def test_secret_names_hold_no_unkeyed_hash_of_the_credentials(self) -> None:
        resources = translate_api(everything(), OPTIONS)
        secrets = of_kind(resources, "Secret")
        assert len(secrets) == 2
        for secret in secrets:
            name = secret["metadata"]["name"]
            suffix = name[-10:]
            values = [base64.b64decode(v).decode() for v in secret["data"].values()]
            assert not any(value in name for value in values)
            assert not any(value.lower() in name for value in values)
            for digest in _unkeyed_digests([*values, *secret["data"].values(), json.dumps(secret["data"])]):
                assert suffix not in digest and digest[:10] not in name


def _prefix_of(name: str) -> str:
    return SUFFIX.sub("", name)


def _unkeyed_digests(texts: list[str]) -> list[str]:
    found = []
    for text in texts:
        for algorithm in ("sha1", "sha256", "md5", "sha512"):
            found.append(hashlib.new(algorithm, text.encode()).hexdigest())
    return found
