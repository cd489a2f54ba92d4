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

import re
from collections.abc import Sequence
from typing import Any

from models.artifact import Operation
from translation.errors import TranslationError

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
MAX_PATH_LENGTH = 1024  # HTTPRoute path match value and replaceFullPath limit
_PARAM = re.compile(r"\{[^{}/]*\}")
_RE2_SPECIAL = re.compile(r"([.+*?()\[\]{}^$|\\])")
_SEGMENT = "([^/]+)"
_REST_OF_PATH = "((?:/.*)?)"


def path_match_regex(target: str) -> str:
    """The ``RegularExpression`` value for an operation target, relative to the API base path."""
    segments = _segments(target)
    if segments is None:
        return "/"
    if segments == ["*"]:
        return _REST_OF_PATH
    wildcard = segments[-1] == "*"
    parts = [_PARAM.sub(_SEGMENT, "".join(_escape_literals(s))) for s in (segments[:-1] if wildcard else segments)]
    path = "/" + "/".join(parts)
    return f"{path}{_REST_OF_PATH}" if wildcard else path


def rewrite_full_path(target: str) -> str:
    """The ``ReplaceFullPath`` value: the target with each capture group as ``\\N``."""
    segments = _segments(target)
    if segments is None:
        return "/"
    if segments == ["*"]:
        return "\\1"
    wildcard = segments[-1] == "*"
    counter = 0

    def group(_: re.Match[str]) -> str:
        nonlocal counter
        counter += 1
        return f"\\{counter}"

    parts = [_PARAM.sub(group, s) for s in (segments[:-1] if wildcard else segments)]
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


def _escape_literals(segment: str) -> list[str]:
    """Escape RE2 metacharacters outside ``{param}`` placeholders, which stay for substitution."""
    pieces: list[str] = []
    position = 0
    for found in _PARAM.finditer(segment):
        pieces.append(_RE2_SPECIAL.sub(r"\\\1", segment[position : found.start()]))
        pieces.append(found.group(0))
        position = found.end()
    pieces.append(_RE2_SPECIAL.sub(r"\\\1", segment[position:]))
    return pieces
