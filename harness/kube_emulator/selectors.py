"""Label and field selectors with the syntax and semantics of apimachinery's parsers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")


class SelectorError(ValueError):
    """A selector the real apiserver would reject with 400 BadRequest."""


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside an `in (...)` value set."""
    terms, depth, cur = [], 0, []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]


def _label_term(term: str) -> Predicate:
    if m := _SET_RE.match(term):
        if m.group(1):
            raise SelectorError(f"unable to parse requirement: {term!r}")
        key, op = m.group(2), m.group(3)
        values = {v.strip() for v in m.group(4).split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _CMP_RE.match(term):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS_RE.match(term):
        negate, key = m.group(1) == "!", m.group(2)
        return (lambda labels: key not in labels) if negate else (lambda labels: key in labels)
    raise SelectorError(f"unable to parse requirement: {term!r}")


def label_selector(selector: str | None) -> Predicate | None:
    """Compile a labelSelector into a predicate on whole objects; None matches everything."""
    if not selector or not selector.strip():
        return None
    preds = [_label_term(t) for t in _split_terms(selector)]

    def match(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(p(labels) for p in preds)

    return match


_FIELDS = {"metadata.name": ("metadata", "name"), "metadata.namespace": ("metadata", "namespace")}


def field_selector(selector: str | None) -> Predicate | None:
    """Compile a fieldSelector; like the real server only metadata.name/namespace are supported for all kinds."""
    if not selector or not selector.strip():
        return None
    preds: list[Predicate] = []
    for term in _split_terms(selector):
        m = _CMP_RE.match(term)
        if not m:
            raise SelectorError(f"invalid field selector: {term!r}")
        fld, op, value = m.groups()
        if fld not in _FIELDS:
            raise SelectorError(f'field label not supported: {fld}')
        section, key = _FIELDS[fld]
        if op == "!=":
            preds.append(lambda o, s=section, k=key, v=value: (o.get(s, {}).get(k) or "") != v)
        else:
            preds.append(lambda o, s=section, k=key, v=value: (o.get(s, {}).get(k) or "") == v)
    return lambda obj: all(p(obj) for p in preds)


def combine(*preds: Predicate | None) -> Predicate | None:
    active = [p for p in preds if p is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(p(obj) for p in active)


def field_selector_name(selector: str | None) -> str | None:
    """The exact name a `metadata.name=X` selector pins, so lookups can skip a scan."""
    if not selector:
        return None
    terms = _split_terms(selector)
    if len(terms) == 1 and (m := _CMP_RE.match(terms[0])) and m.group(1) == "metadata.name" and m.group(2) != "!=":
        return m.group(3)
    return None
