"""Field paths, FieldsV1 encoding and the patch formats (RFC 7386, RFC 6902, server-side apply merge).

Lists are atomic throughout (as in most CRD schemas): a path never descends into
a list, so owning `spec.production` means owning the whole list.
"""

from __future__ import annotations

import copy
from typing import Any

Path = tuple[str, ...]
Obj = dict[str, Any]
_MISSING = object()

# Paths no manager ever owns, as in the real field manager.
IGNORED: frozenset[Path] = frozenset(
    {("apiVersion",), ("kind",), ("metadata",)}
    | {("metadata", k) for k in ("name", "namespace", "uid", "resourceVersion", "generation",
                                 "creationTimestamp", "managedFields", "selfLink", "deletionTimestamp")}
)


class PatchError(ValueError):
    """A patch document that cannot be applied (the server answers 400/422)."""


def get_path(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def path_exists(obj: Obj, path: Path) -> bool:
    return get_path(obj, path) is not _MISSING


def leaf_paths(obj: Obj, prefix: Path = ()) -> set[Path]:
    """Paths an applied configuration sets: every leaf, and maps only when empty (no `.` entries)."""
    out: set[Path] = set()
    for key, value in obj.items():
        path = prefix + (key,)
        if isinstance(value, dict) and value:
            out |= leaf_paths(value, path)
        else:
            out.add(path)
    return out


def all_paths(obj: Obj, prefix: Path = ()) -> set[Path]:
    """Every path including the maps themselves (what an Update that creates a map owns: `.`)."""
    out: set[Path] = set()
    for key, value in obj.items():
        path = prefix + (key,)
        out.add(path)
        if isinstance(value, dict):
            out |= all_paths(value, path)
    return out


def changed_paths(old: Obj, new: Obj, prefix: Path = ()) -> set[Path]:
    """Paths whose value an Update changed or added (removed paths are owned by nobody afterwards)."""
    out: set[Path] = set()
    for key, value in new.items():
        path = prefix + (key,)
        before = old.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(before, dict):
            out |= changed_paths(before, value, path)
        elif before is _MISSING or before != value:
            out.add(path)
            if isinstance(value, dict):
                out |= all_paths(value, path)
    return out


def to_fields_v1(paths: set[Path]) -> Obj:
    """Encode a path set as FieldsV1 (`f:<key>` children, `.` when a map is itself owned)."""
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    for path in paths:
        node = root
        for key in path:
            node = node[f"f:{key}"]
        if node and "." not in node:
            node["."] = {}
    return _sorted(root)


def _sorted(node: Obj) -> Obj:
    return {k: _sorted(node[k]) for k in sorted(node)}


def from_fields_v1(fields: Obj, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, child in fields.items():
        if key == ".":
            out.add(prefix)
        elif key.startswith("f:"):
            path = prefix + (key[2:],)
            if child:
                out |= from_fields_v1(child, path)
            else:
                out.add(path)
    return out


def remove_path(obj: Obj, path: Path) -> None:
    """Delete a field and the maps it leaves empty (but never a top-level section such as spec)."""
    parents: list[tuple[Obj, str]] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        parents.append((node, key))
        node = node[key]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, key in reversed(parents[1:]):
        if parent[key]:
            break
        del parent[key]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _container(doc: Any, parts: list[str], pointer: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"path {pointer!r} does not exist")
    return node


def _index(node: list[Any], part: str, pointer: str, *, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(node)
    if not part.isdigit() or int(part) > len(node) - (0 if allow_end else 1):
        raise PatchError(f"index out of range in {pointer!r}")
    return int(part)


def _read(doc: Any, pointer: str) -> Any:
    parts = _pointer(pointer)
    if not parts:
        return doc
    node = _container(doc, parts, pointer)
    if isinstance(node, dict) and parts[-1] in node:
        return node[parts[-1]]
    if isinstance(node, list):
        return node[_index(node, parts[-1], pointer, allow_end=False)]
    raise PatchError(f"path {pointer!r} does not exist")


def _remove(doc: Any, pointer: str) -> Any:
    parts = _pointer(pointer)
    node = _container(doc, parts, pointer)
    if isinstance(node, dict) and parts[-1] in node:
        return node.pop(parts[-1])
    if isinstance(node, list):
        return node.pop(_index(node, parts[-1], pointer, allow_end=False))
    raise PatchError(f"path {pointer!r} does not exist")


def _add(doc: Any, pointer: str, value: Any, *, replace: bool) -> Any:
    parts = _pointer(pointer)
    if not parts:
        return value
    node = _container(doc, parts, pointer)
    if isinstance(node, dict):
        if replace and parts[-1] not in node:
            raise PatchError(f"path {pointer!r} does not exist")
        node[parts[-1]] = value
    elif isinstance(node, list):
        i = _index(node, parts[-1], pointer, allow_end=not replace)
        if replace:
            node[i] = value
        else:
            node.insert(i, value)
    else:
        raise PatchError(f"path {pointer!r} does not exist")
    return doc


def json_patch(doc: Obj, ops: Any) -> Obj:
    """RFC 6902 JSON patch; a failing `test` raises PatchError like any other bad operation."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind} needs a value")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=False)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=True)
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "move":
            doc = _add(doc, path, _remove(doc, op["from"]), replace=False)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_read(doc, op["from"])), replace=False)
        elif kind == "test":
            if _read(doc, path) != op["value"]:
                raise PatchError(f"test operation failed at {path!r}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    if not isinstance(doc, dict):
        raise PatchError("the patched document is not an object")
    return doc


def apply_merge(live: Obj, applied: Obj) -> Obj:
    """Merge an applied configuration into the live object: maps merge key by key, lists and scalars replace."""
    result = dict(live)
    for key, value in applied.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = apply_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
