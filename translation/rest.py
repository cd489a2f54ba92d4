"""REST operations as Gateway API ``HTTPRoute`` rules, shaped the way APK's own translator does.

A match path is relative to the API's base path (the gateway prefixes it). Because the match is
a regular expression, the ``URLRewrite`` filter must be ``ReplaceFullPath`` (the CRD's CEL rules
allow ``ReplacePrefixMatch`` only with a single ``PathPrefix`` match); APK expands ``\\1``,
``\\2`` in it from the match's capture groups and prefixes the Backend's base path.

Two choices differ from APK, which turns ``{param}`` and ``/*`` into ``(.*)``: that lets
``/{id}`` also match ``/42/salary`` and ``/menu/*`` match ``/menus``, so scopes, "no auth" and
limits of one operation could apply to another. Here a path parameter is one segment,
``([^/]+)`` (as OpenAPI defines it), and a trailing ``/*`` is ``((?:/.*)?)``, which keeps the
``/`` boundary. Rules are ordered most specific first, since the gateway takes the first match.
"""

from __future__ import annotations

import functools
import itertools
import re
import string
from collections.abc import Sequence
from typing import Any

from models.artifact import Operation
from translation.errors import TranslationError

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
MAX_PATH_LENGTH = 1024  # HTTPRoute path match value and replaceFullPath limit
_PARAM = re.compile(r"\{[^{}/]*\}")
_RE2_SPECIAL = re.compile(r"([.+*?()\[\]{}^$|\\])")
_SEGMENT = "([^/]+)"
# RFC 3986 pchar: what a path segment carries raw; anything else a client percent-encodes.
_PCHAR = frozenset(string.ascii_letters + string.digits + "-._~" + "!$&'()*+,;=" + ":@")
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_HEX_LETTERS = frozenset("ABCDEF")
_REST_OF_PATH = "((?:/.*)?)"


@functools.lru_cache(maxsize=4096)  # a pure function of the target; both endpoint types ask
def path_match_regex(target: str) -> str:
    """The ``RegularExpression`` value for an operation target, relative to the API base path."""
    segments = _segments(target)
    if segments is None:
        return "/"
    if segments == ["*"]:
        return _REST_OF_PATH
    wildcard = segments[-1] == "*"
    parts = [
        "".join(_SEGMENT if is_param else _literal_regex(text) for is_param, text in _pieces(segment))
        for segment in (segments[:-1] if wildcard else segments)
    ]
    path = "/" + "/".join(parts)
    return f"{path}{_REST_OF_PATH}" if wildcard else path


@functools.lru_cache(maxsize=4096)  # a pure function of the target; both endpoint types ask
def rewrite_full_path(target: str) -> str:
    """The ``ReplaceFullPath`` value: the target with each capture group as ``\\N``, and every
    character a request line cannot carry raw percent-encoded (UTF-8, upper-case hex)."""
    segments = _segments(target)
    if segments is None:
        return "/"
    if segments == ["*"]:
        return "\\1"
    wildcard = segments[-1] == "*"
    counter = 0
    parts = []
    for segment in segments[:-1] if wildcard else segments:
        part = []
        for is_param, text in _pieces(segment):
            if is_param:
                counter += 1
                part.append(f"\\{counter}")
            else:
                part.append(_literal_rewrite(text))
        parts.append("".join(part))
    path = "/" + "/".join(parts)
    return f"{path}\\{counter + 1}" if wildcard else path


def http_route_rules(
    operations: Sequence[Operation],
    *,
    api_label: str,
    backend_refs: list[dict[str, Any]],
    no_auth_filter: dict[str, Any] | None,
    operation_filters: Sequence[Sequence[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """One rule per operation, in artifact order; unsecured operations get ``no_auth_filter``.

    ``operation_filters`` (one list per operation) are further HTTPRoute filters: header modifiers
    go after the rewrite, ``ExtensionRef`` filters after the no-auth reference.
    """
    rules: list[dict[str, Any]] = []
    extras = list(operation_filters) if operation_filters is not None else [[] for _ in operations]
    ordered = sorted(zip(operations, extras, strict=True), key=lambda pair: _specificity(pair[0].target))
    for operation, extra in ordered:
        method = operation.verb.strip().upper()
        if method not in HTTP_METHODS:
            raise TranslationError(
                f"{api_label} has operation {operation.verb} {operation.target}; "
                f"HTTP methods are {', '.join(HTTP_METHODS)}"
            )
        match_value = path_match_regex(operation.target)
        rewrite = rewrite_full_path(operation.target)
        if max(len(match_value), len(rewrite)) > MAX_PATH_LENGTH:
            raise TranslationError(
                f"{api_label} has operation target {operation.target[:80]}... longer than the "
                f"gateway's {MAX_PATH_LENGTH}-character path limit"
            )
        filters: list[dict[str, Any]] = [
            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": rewrite}}}
        ]
        filters.extend(f for f in extra if f["type"] != "ExtensionRef")
        if operation.is_unsecured and no_auth_filter is not None:
            filters.append({"type": "ExtensionRef", "extensionRef": dict(no_auth_filter)})
        filters.extend(f for f in extra if f["type"] == "ExtensionRef")
        rules.append(
            {
                "matches": [{"path": {"type": "RegularExpression", "value": match_value}, "method": method}],
                "filters": filters,
                "backendRefs": [dict(ref) for ref in backend_refs],
            }
        )
    return rules


@functools.lru_cache(maxsize=4096)  # a pure function of the target; both endpoint types ask
def _specificity(target: str) -> tuple[int, int, tuple[int, ...]]:
    """Sort key, most specific first: exact paths before wildcards, longer wildcard prefixes
    first, and segment by segment a literal before a parameter (``/orders/pending`` before
    ``/orders/{id}``). Exact paths of different lengths never overlap."""
    segments = _segments(target) or []
    wildcard = bool(segments) and segments[-1] == "*"
    prefix = segments[:-1] if wildcard else segments
    kinds = tuple(1 if _PARAM.search(s) else 0 for s in prefix)
    return (int(wildcard), -len(prefix) if wildcard else 0, kinds)


def _segments(target: str) -> list[str] | None:
    """Non-empty path segments of a target without its query; None for the root path."""
    path = target.split("?", 1)[0].strip()
    segments = [s.strip() for s in path.split("/") if s.strip()]
    return segments or None


def _pieces(segment: str) -> list[tuple[bool, str]]:
    """A segment as ``(is_param, text)`` pieces: ``{param}`` placeholders and the literals between."""
    pieces: list[tuple[bool, str]] = []
    position = 0
    for found in _PARAM.finditer(segment):
        if found.start() > position:
            pieces.append((False, segment[position : found.start()]))
        pieces.append((True, found.group(0)))
        position = found.end()
    if position < len(segment):
        pieces.append((False, segment[position:]))
    return pieces


def _characters(literal: str) -> list[tuple[str, bool]]:
    """The literal's characters, each with whether the target wrote it percent-encoded.

    A run of escapes that is valid UTF-8 becomes its characters (``%C3%BC`` is ``ü``); an escape
    that is not stays a ``%`` followed by its two hex digits, each flagged encoded.
    """
    characters: list[tuple[str, bool]] = []
    position = 0
    for found in _ESCAPES.finditer(literal):
        characters.extend((c, False) for c in literal[position : found.start()])
        raw = bytes.fromhex(found.group(0).replace("%", ""))
        try:
            characters.extend((c, True) for c in raw.decode("utf-8"))
        except UnicodeDecodeError:
            characters.extend((f"%{byte:02X}", True) for byte in raw)
        position = found.end()
    characters.extend((c, False) for c in literal[position:])
    return characters


def _encoded(character: str) -> str:
    if len(character) == 3 and character.startswith("%"):  # an escape that is not UTF-8, kept as is
        return character
    return "".join(f"%{byte:02X}" for byte in character.encode("utf-8"))


def _literal_regex(literal: str) -> str:
    """RE2 for a literal: metacharacters escaped; a character a client may percent-encode matches
    its raw form and its UTF-8 escapes in either hex case (clients send ``%c3%bc`` as well as
    ``%C3%BC``), one non-capturing group per run, so capture numbers stay the params'. A character
    no request carries raw (a space, ``%``, an encoded ``/``) matches only its escape."""
    out: list[str] = []
    for kind, group in itertools.groupby(_characters(literal), key=_kind):
        characters = [c for c, _ in group]
        raw = _RE2_SPECIAL.sub(r"\\\1", "".join(characters))
        if kind == "raw":
            out.append(raw)
            continue
        encoded = "".join(_encoded(c) for c in characters)
        if _HEX_LETTERS.intersection(encoded):
            encoded = f"(?i:{encoded})"
        out.append(f"(?:{raw}|{encoded})" if kind == "either" else encoded)
    return "".join(out)


def _kind(character: tuple[str, bool]) -> str:
    """``raw``: a pchar written raw; ``either``: raw or encoded (non-ASCII, or a pchar the
    target wrote encoded); ``encoded``: only its escape is a valid request."""
    text, was_encoded = character
    if text in _PCHAR:
        return "either" if was_encoded else "raw"
    return "either" if len(text) == 1 and ord(text) > 127 else "encoded"


def _literal_rewrite(literal: str) -> str:
    """A literal as the backend receives it: every character outside RFC 3986's ``pchar``, and
    every one the target wrote encoded, percent-encoded in UTF-8 with upper-case hex."""
    return "".join(
        c if c in _PCHAR and not was_encoded else _encoded(c) for c, was_encoded in _characters(literal)
    )
