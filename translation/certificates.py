"""Client certificates (mutual TLS) and endpoint certificates (backend TLS) as ConfigMaps.

APK reads both from ConfigMaps: ``Authentication.spec.default.authTypes.mtls.configMapRefs`` and
``Backend.spec.tls.configMapRef``, each ``{name, key}``. Certificates are public, so a ConfigMap
(not a Secret) is the right home, as in APK's own translator.

Both ConfigMaps are named by their content (``translation.content_names``), so a new or changed
certificate changes the ``Authentication`` or ``Backend`` that references it, which the gateway sees.
"""

from __future__ import annotations

import base64
import hashlib
import re
import textwrap
from collections.abc import Callable
from typing import Any

from cryptography import x509

from models.artifact import ApiProject
from models.naming import child_name
from translation.content_names import config_map_name
from translation.endpoints import normalized_url
from translation.errors import TranslationError

PEM_MARKER = "-----BEGIN CERTIFICATE-----"
PEM_END = "-----END CERTIFICATE-----"
_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_KEY_FORBIDDEN = re.compile(r"[^-._a-zA-Z0-9]")


def client_certificates(
    project: ApiProject,
    base: str,
    label: str,
    metadata: Callable[[str], dict[str, Any]],
    endpoint_types: set[str],
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The ConfigMap with the API's client certificates and the ``configMapRefs`` pointing into it.

    The gateway trusts the certificates on every route of the API, so a certificate the control
    plane limits to one key type (PRODUCTION or SANDBOX) is refused when the API also serves the other.
    """
    files = project.client_certificates
    if not files:
        raise TranslationError(
            f"{label} enables mutual TLS but carries no client certificate (Client-certificates/*.crt); "
            "add the clients' certificates to the API or turn mutual TLS off"
        )
    for binding in project.client_certificate_bindings:
        key_type = (binding.key_type or "").strip().lower()
        others = sorted(endpoint_types - {key_type})
        if key_type in ("production", "sandbox") and others:
            raise TranslationError(
                f"{label} limits client certificate {binding.alias!r} to {key_type} keys, but the gateway would "
                f"trust it on the API's {' and '.join(others)} routes too (mutual TLS applies to the whole API); "
                f"remove the API's {' and '.join(others)} endpoint or upload the certificate for both key types"
            )
        tier = (binding.tier_name or "").strip()
        if tier and tier.lower() != "unlimited":
            raise TranslationError(
                f"{label} limits callers of client certificate {binding.alias!r} to tier {tier!r}; the gateway "
                "has no per-certificate rate limit. Set the certificate's tier to Unlimited"
            )
    data: dict[str, str] = {}
    for file, text in sorted(files.items()):
        _put(data, _key(file), "".join(certificate_blocks(file, text, label, "client")))
    name = config_map_name(child_name(base, "client-certificates"), data)
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(name), "data": data}
    return config_map, [{"name": name, "key": key} for key in sorted(data)]


class EndpointCertificates:
    """Which endpoint URL trusts which certificates, from ``endpoint_certificates.json``.

    An endpoint may be bound to several certificates (a rotation, an intermediate and its root,
    or the same file uploaded twice): its ``Backend`` trusts a PEM bundle of the distinct ones,
    held in one key of the ConfigMap, named after the file (or files, joined by ``-``) they come from.

    The ConfigMap holds the certificates some backend uses, so its content, and with it its name,
    is known only once every backend is built: ``tls_for`` hands out references whose name
    ``config_map`` fills in.
    """

    def __init__(self, project: ApiProject, base: str, label: str) -> None:
        self._label = label
        self._prefix = child_name(base, "endpoint-certificates")
        files = project.endpoint_certificates
        bindings = project.endpoint_certificate_bindings
        if files and not bindings:
            raise TranslationError(
                f"{label} carries endpoint certificates ({', '.join(sorted(files))}) without "
                "Endpoint-certificates/endpoint_certificates.json naming their endpoints"
            )
        files_by_url: dict[str, set[str]] = {}
        for binding in bindings:
            file = binding.certificate or f"{binding.alias}.crt"
            if file not in files:
                raise TranslationError(
                    f"{label}: endpoint certificate {binding.alias!r} names {file!r}, "
                    "which is not in Endpoint-certificates/"
                )
            if not binding.endpoint:
                raise TranslationError(f"{label}: endpoint certificate {binding.alias!r} names no endpoint URL")
            files_by_url.setdefault(normalized_url(binding.endpoint), set()).add(file)
        blocks = {file: certificate_blocks(file, files[file], label, "endpoint") for file in files}
        self._by_url: dict[str, tuple[str, str]] = {}  # normalized URL -> (key, PEM bundle)
        for url, named in files_by_url.items():
            distinct: dict[str, str] = {}  # PEM block -> the first file (by name) holding it
            for file in sorted(named):
                for block in blocks[file]:
                    distinct.setdefault(block, file)
            sources = sorted(set(distinct.values()))
            self._by_url[url] = (_key("+".join(sources)), "".join(distinct))
        self._used: dict[str, str] = {}
        self._references: list[dict[str, str]] = []  # the configMapRefs handed out, named by config_map

    def tls_for(self, url: str, protocol: str) -> dict[str, Any] | None:
        """``Backend.spec.tls`` for an endpoint, or None (plain HTTP, or no certificate for it).

        The reference's name is empty until ``config_map`` is called, which every translation does.
        """
        found = self._by_url.get(normalized_url(url))
        if found is None or protocol != "https":
            return None
        key = _put(self._used, *found)
        reference = {"name": "", "key": key}
        self._references.append(reference)
        return {"configMapRef": reference}

    def config_map(self, metadata: Callable[[str], dict[str, Any]]) -> dict[str, Any] | None:
        """The ConfigMap holding the certificates some backend uses (None when none does).

        Names it by its content and points every reference ``tls_for`` handed out at it.
        """
        if not self._used:
            return None
        data = dict(sorted(self._used.items()))
        name = config_map_name(self._prefix, data)
        for reference in self._references:
            reference["name"] = name
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(name), "data": data}


def certificate_blocks(file: str, text: str, label: str, kind: str) -> list[str]:
    """The X.509 certificates of a PEM file, each re-encoded the one way (64-column base64, LF endings).

    Refuses a file with no certificate, a block cut short, a block that is not a certificate, and
    a private key: the ConfigMap that carries certificates is readable by anyone who reads the
    namespace, and a trust store never needs a key.
    """
    if _PRIVATE_KEY.search(text):
        raise TranslationError(
            f"{label}: {kind} certificate {file!r} contains a private key; the gateway needs only the "
            "certificate, which it stores in a ConfigMap. Remove the key from the file"
        )
    found = _PEM_BLOCK.findall(text)
    if PEM_MARKER not in text:
        raise TranslationError(f"{label}: {kind} certificate {file!r} is not a PEM certificate ({PEM_MARKER})")
    if text.count(PEM_MARKER) != len(found):
        raise TranslationError(
            f"{label}: {kind} certificate {file!r} has a {PEM_MARKER} without its -----END CERTIFICATE----- line"
        )
    blocks = []
    for number, body in enumerate(found, start=1):
        encoded = re.sub(r"\s+", "", body)
        try:
            der = base64.b64decode(encoded, validate=True)
            x509.load_der_x509_certificate(der)
        except ValueError as error:
            where = f"certificate {number} of {file!r}" if len(found) > 1 else repr(file)
            raise TranslationError(
                f"{label}: {kind} certificate {where} is not a valid X.509 certificate ({error})"
            ) from None
        lines = textwrap.wrap(base64.b64encode(der).decode(), 64)
        blocks.append("\n".join([PEM_MARKER, *lines, PEM_END]) + "\n")
    return blocks


def _key(file: str) -> str:
    return _KEY_FORBIDDEN.sub("-", file)[:253]


def _put(data: dict[str, str], key: str, pem: str) -> str:
    """Store ``pem`` under ``key``, or under a key made unique by the content's hash when another
    certificate already holds it (``a b.crt`` and ``a-b.crt`` share a key once made legal)."""
    if data.get(key, pem) != pem:
        suffix = "-" + hashlib.sha256(pem.encode()).hexdigest()[:8]
        key = key[: 253 - len(suffix)] + suffix
    data[key] = pem
    return key
