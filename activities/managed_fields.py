"""The part of a live object that one field manager owns, read from its ``managedFields``.

What client-go's ``Extract...`` functions do: a snapshot taken this way holds only what the agent
applied, so re-applying it restores the agent's own fields and never takes over a field another
manager (a person with kubectl, a mutating webhook, another controller) set.
"""

from __future__ import annotations

import copy
import json
from typing import Any

Obj = dict[str, Any]
_IDENTITY = ("name", "namespace")


def owned_fields(obj: Obj, manager: str) -> Obj:
    """``apiVersion``, ``kind``, name and namespace, and every field ``manager`` applied."""
    metadata = obj.get("metadata") or {}
    out: Obj = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind")}
    for entry in metadata.get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply" or entry.get("subresource"):
            continue
        out = _merge(out, _extract(obj, entry.get("fieldsV1") or {}))
    out["metadata"] = {**(out.get("metadata") or {}), **{k: metadata[k] for k in _IDENTITY if metadata.get(k)}}
    return out


def _extract(value: Any, tree: Obj) -> Any:
    """The part of ``value`` that the FieldsV1 ``tree`` names; a leaf (``{}``) is owned whole."""
    children = {k: v for k, v in tree.items() if k != "."}
    if not children:
        return copy.deepcopy(value)
    if isinstance(value, dict):
        out: Obj = {}
        for key, sub in children.items():
            if key.startswith("f:") and key[2:] in value:
                out[key[2:]] = _extract(value[key[2:]], sub)
        return out
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            sub = _list_entry(children, index, item)
            if sub is not None:
                items.append(_extract(item, sub))
        return items
    return copy.deepcopy(value)


def _list_entry(children: Obj, index: int, item: Any) -> Obj | None:
    for key, sub in children.items():
        kind, _, raw = key.partition(":")
        if kind == "i" and raw == str(index):
            return sub
        if kind not in ("k", "v"):
            continue
        try:
            wanted = json.loads(raw)
        except ValueError:
            continue
        if kind == "v" and item == wanted:
            return sub
        if kind == "k" and isinstance(item, dict) and isinstance(wanted, dict):
            if all(item.get(k) == v for k, v in wanted.items()):
                return sub
    return None


def _merge(left: Any, right: Any) -> Any:
    if isinstance(left, dict) and isinstance(right, dict):
        out = dict(left)
        for key, value in right.items():
            out[key] = _merge(out[key], value) if key in out else value
        return out
    return right
