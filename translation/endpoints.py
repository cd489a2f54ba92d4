"""Endpoint URLs as ``Backend`` specs: the one place that parses a URL the control plane sent."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from translation.errors import TranslationError


def backend_spec(url: str, problem: str) -> dict[str, Any]:
    """``services``, ``protocol`` and ``basePath`` of a Backend for ``url``.

    ``problem`` starts every error message (e.g. "API 'X' 1.0 has production endpoint 'https://...'");
    it must already show the URL redacted.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TranslationError(f"{problem}, which is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TranslationError(f"{problem}; endpoint URLs must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise TranslationError(f"{problem} with credentials in the URL; configure endpoint security instead")
    host = parts.hostname or ""
    if not host or "{" in url or "}" in url:
        raise TranslationError(f"{problem}, which has no host or uses URL templates the gateway cannot resolve")
    if parts.query or parts.fragment:
        raise TranslationError(f"{problem}; the gateway cannot add a query string or fragment to backend requests")
    spec: dict[str, Any] = {
        "services": [{"host": host, "port": port if port is not None else (443 if scheme == "https" else 80)}],
        "protocol": scheme,
    }
    base_path = parts.path.rstrip("/")
    if base_path:
        spec["basePath"] = base_path
    return spec


def redacted_url(url: str) -> str:
    """The URL as it may appear in an error message: no user info, no query (either may hold a secret)."""
    shown = url.strip().split("?", 1)[0].split("#", 1)[0]
    scheme, separator, rest = shown.partition("://")
    if separator and "@" in rest.split("/", 1)[0]:
        shown = f"{scheme}://***@{rest.split('@', 1)[1]}"
    return shown + ("?..." if "?" in url else "")


def normalized_url(url: str) -> str:
    """``url`` for comparisons: trimmed, scheme and host lowercased, no trailing slash."""
    text = url.strip()
    scheme, separator, rest = text.partition("://")
    if not separator:
        return text.rstrip("/")
    authority, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{authority.lower()}{slash}{path}".rstrip("/")
