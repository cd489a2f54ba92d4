"""The in-memory object store: apiserver write semantics, managedFields, resourceVersions and watch history.

All mutations happen on the emulator's event-loop thread; `lock` only guards
readers on other threads (test assertions). Stored objects are never mutated
after they are stored, so watch events and responses can share them.
"""

from __future__ import annotations

import base64
import copy
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import fields as F
from .registry import Registry, ResourceType
from .selectors import Predicate

Obj = dict[str, Any]
ManagerKey = tuple[str, str, str]  # (manager, operation, subresource)

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                  "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                  r"validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
              "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
              "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Built-in kinds without a spec, which the real API server gives no metadata.generation.
UNVERSIONED_BUILTINS = frozenset({"ConfigMap", "Secret"})
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error the apiserver reports as a metav1.Status body with this HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rt: ResourceType, name: str, kind: str | None = None) -> Obj:
    d: Obj = {"name": name, "kind": kind or rt.plural}
    if rt.group:
        d["group"] = rt.group
    return d


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.resource_label} "{name}" not found', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.resource_label} "{name}": {why}',
                    _details(rt, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(rt: ResourceType, name: str, fld: str, message: str, cause: str = "FieldValueInvalid") -> ApiError:
    details = _details(rt, name, rt.kind)
    details["causes"] = [{"reason": cause, "message": message, "field": fld}]
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {fld}: {message}', details)


@dataclass
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    prev: Obj | None = None


class Watcher:
    """A live watch: receives matching events; `offer` is called on the loop thread."""

    def __init__(self, namespace: str | None, predicate: Predicate | None,
                 deliver: Callable[[str, Obj], None]) -> None:
        self.namespace, self.predicate, self.deliver = namespace, predicate, deliver

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.predicate is None or self.predicate(obj)

    def translate(self, event: Event) -> str | None:
        """The event type this watcher sees: an object leaving the selector is DELETED, entering it ADDED."""
        now = self.matches(event.obj)
        if event.type != "MODIFIED":
            return event.type if now else None
        before = self.matches(event.prev)
        if now and before:
            return "MODIFIED"
        if now:
            return "ADDED"
        return "DELETED" if before else None

    def offer(self, event: Event) -> None:
        etype = self.translate(event)
        if etype is not None:
            self.deliver(etype, event.obj)


@dataclass
class KindStore:
    objects: dict[str, dict[str, Obj]] = field(default_factory=dict)  # namespace ("" if cluster) -> name -> obj
    history: deque[Event] = field(default_factory=deque)
    floor: int = 0  # events at or below this resourceVersion may have been dropped from history
    watchers: set[Watcher] = field(default_factory=set)


ChangeListener = Callable[[ResourceType, Event, str], None]


class Store:
    def __init__(self, registry: Registry, history_limit: int = 10_000) -> None:
        self.registry = registry
        self.history_limit = history_limit
        self.lock = threading.RLock()
        self.rv = 0
        self.kinds: dict[tuple[str, str], KindStore] = {rt.key: KindStore() for rt in registry.types}
        self.listeners: list[ChangeListener] = []
        ns_type = registry.by_kind("Namespace")
        for ns in DEFAULT_NAMESPACES:
            self.create(ns_type, "v1", None, {"metadata": {"name": ns}}, "kube-apiserver")

    # ---- reads -------------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        return self.kinds[rt.key].objects.get(namespace or "", {}).get(name)

    def require(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.get(rt, namespace, name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def list(self, rt: ResourceType, namespace: str | None, predicate: Predicate | None = None,
             name: str | None = None) -> list[Obj]:
        """Objects sorted by (namespace, name) like etcd keys; `name` short-cuts a metadata.name selector."""
        ks = self.kinds[rt.key]
        if namespace is not None or not rt.namespaced:
            buckets = [(namespace or "", ks.objects.get(namespace or "", {}))]
        else:
            buckets = sorted(ks.objects.items())
        out: list[Obj] = []
        for _, bucket in buckets:
            if name is not None:
                candidates = [bucket[name]] if name in bucket else []
            else:
                candidates = [bucket[n] for n in sorted(bucket)]
            out.extend(o for o in candidates if predicate is None or predicate(o))
        return out

    # ---- writes ------------------------------------------------------------------------------------

    def create(self, rt: ResourceType, version: str, namespace: str | None, body: Obj, manager: str) -> Obj:
        body = self._check_body(rt, version, namespace, body, require_type=not rt.builtin)
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        name = meta.get("name") or ""
        self._validate_name(rt, name)
        if self.get(rt, namespace, name) is not None:
            raise ApiError(409, "AlreadyExists", f'{rt.resource_label} "{name}" already exists', _details(rt, name))
        for key in SERVER_METADATA:
            meta.pop(key, None)
        if rt.has_status:
            body.pop("status", None)
        _create_defaults(rt, body)
        owned = F.changed_paths({}, body)
        return self._commit(rt, version, namespace, name, None, body, (manager, "Update", ""), owned, {})

    def update(self, rt: ResourceType, version: str, namespace: str | None, name: str, body: Obj,
               manager: str, subresource: str = "", *, require_rv: bool = True) -> Obj:
        old = self.require(rt, namespace, name)
        body = self._check_body(rt, version, namespace, body, require_type=not rt.builtin)
        meta = body.setdefault("metadata", {})
        if meta.setdefault("name", name) != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name, "the object has been modified; please apply your changes to the latest "
                                     "version and try again")
        if not sent_rv and require_rv and not rt.builtin:
            raise invalid(rt, name, "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")
        if subresource == "status":
            new = copy.deepcopy(old)
            new.pop("status", None)
            if body.get("status") is not None:
                new["status"] = body["status"]
        else:
            new = body
            for key in SERVER_METADATA:
                meta.pop(key, None)
            if rt.has_status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
        owned = F.changed_paths(self._area(rt, old, subresource), self._area(rt, new, subresource))
        return self._commit(rt, version, namespace, name, old, new, (manager, "Update", subresource), owned, {})

    def patch(self, rt: ResourceType, version: str, namespace: str | None, name: str, patch_type: str,
              patch: Any, manager: str, subresource: str = "") -> Obj:
        """merge / json / strategic (treated as merge) patches: patch the live object, then update."""
        old = self.require(rt, namespace, name)
        current = dict(old, apiVersion=rt.api_version(version), kind=rt.kind)
        try:
            if patch_type == "json":
                patched = F.json_patch(current, patch)
            else:
                if not isinstance(patch, dict):
                    raise F.PatchError("a merge patch must be a JSON object")
                patched = F.merge_patch(copy.deepcopy(current), patch)
        except F.PatchError as e:
            raise ApiError(422 if "test operation" in str(e) else 400,
                           "Invalid" if "test operation" in str(e) else "BadRequest", str(e)) from None
        patched = copy.deepcopy(patched)
        rv = (patched.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name, "the object has been modified; please apply your changes to the latest "
                                     "version and try again")
        return self.update(rt, version, namespace, name, patched, manager, subresource, require_rv=False)

    def apply(self, rt: ResourceType, version: str, namespace: str | None, name: str, body: Any,
              manager: str, force: bool, subresource: str = "") -> tuple[Obj, bool]:
        """Server-side apply; returns (object, created)."""
        if not isinstance(body, dict):
            raise bad_request("the apply configuration must be an object")
        for key in ("apiVersion", "kind"):
            if not body.get(key):
                raise bad_request(f"{key} must be set")
        body = self._check_body(rt, version, namespace, copy.deepcopy(body), require_type=True)
        meta = body.setdefault("metadata", {})
        if meta.setdefault("name", name) != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        old = self.get(rt, namespace, name)
        if old is None and subresource:
            raise not_found(rt, name)
        sent_rv = meta.get("resourceVersion")
        if old is not None and sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name, "the object has been modified; please apply your changes to the latest "
                                     "version and try again")
        live: Obj = old or {"metadata": {"name": name}}
        applied = self._area(rt, body, subresource)
        applied_set = self._owned(rt, F.leaf_paths(applied), subresource)
        managers = self._managers(live)
        me: ManagerKey = (manager, "Apply", subresource)
        clashes: dict[ManagerKey, list[F.Path]] = {}
        for key, paths in managers.items():
            if key == me:
                continue
            for path in sorted(applied_set & paths):
                if F.get_path(live, path) != F.get_path(body, path):
                    clashes.setdefault(key, []).append(path)
        if clashes and not force:
            raise self._apply_conflict(rt, name, version, managers, clashes, live)
        for key, paths in clashes.items():
            managers[key] = managers[key] - set(paths)
        dropped = managers.get(me, set()) - applied_set
        others = set().union(*(p for k, p in managers.items() if k != me)) if managers else set()
        merged = F.apply_merge(copy.deepcopy(live), applied)
        for path in sorted(dropped - others, key=len, reverse=True):
            F.remove_path(merged, path)
        if subresource == "status":
            new = copy.deepcopy(live)
            new.pop("status", None)
            if "status" in merged:
                new["status"] = merged["status"]
        else:
            new = merged
            if rt.has_status:
                new.pop("status", None)
                if "status" in live:
                    new["status"] = copy.deepcopy(live["status"])
        new["apiVersion"], new["kind"] = body["apiVersion"], body["kind"]
        if old is None:
            self._validate_name(rt, name)
            for key in SERVER_METADATA:
                new["metadata"].pop(key, None)
            _create_defaults(rt, new)
        managers[me] = applied_set
        obj = self._commit(rt, version, namespace, name, old, new, me, set(), managers)
        return obj, old is None

    def delete(self, rt: ResourceType, namespace: str | None, name: str, options: Obj | None = None) -> Obj:
        old = self.require(rt, namespace, name)
        pre = (options or {}).get("preconditions") or {}
        for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(key) and pre[key] != old["metadata"].get(key):
                raise conflict(rt, name, f"Precondition failed: {label} in precondition: {pre[key]}, "
                                         f"{label} in object meta: {old['metadata'].get(key)}")
        if rt.kind == "Namespace":
            for other in self.registry.types:
                if other.namespaced:
                    for obj in list(self.kinds[other.key].objects.get(name, {}).values()):
                        self.delete(other, name, obj["metadata"]["name"])
        self.rv += 1
        gone = dict(old, metadata=dict(old["metadata"], resourceVersion=str(self.rv)))
        with self.lock:
            bucket = self.kinds[rt.key].objects[namespace or ""]
            del bucket[name]
            if not bucket:
                del self.kinds[rt.key].objects[namespace or ""]
        self._emit(rt, Event(self.rv, "DELETED", gone), "")
        return gone

    # ---- internals ---------------------------------------------------------------------------------

    def _check_body(self, rt: ResourceType, version: str, namespace: str | None, body: Any,
                    *, require_type: bool) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        body = copy.deepcopy(body)
        expected = rt.api_version(version)
        if require_type and not body.get("kind"):
            raise bad_request("Object 'Kind' is missing in the request body")
        if body.get("apiVersion", expected) != expected:
            raise bad_request(f"the API version in the data ({body['apiVersion']}) does not match the expected "
                              f"API version ({expected})")
        if body.get("kind", rt.kind) != rt.kind:
            raise bad_request(f"the kind in the data ({body['kind']}) does not match the expected kind ({rt.kind})")
        body["apiVersion"], body["kind"] = expected, rt.kind
        meta = body.get("metadata")
        if meta is None:
            meta = body["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if rt.kind == "Secret" and rt.group == "":
            _fold_string_data(body)
        return body

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        if not name:
            raise invalid(rt, "", "metadata.name", "Required value: name or generateName is required",
                          "FieldValueRequired")
        if rt.kind == "Namespace" and rt.builtin:
            pattern, msg, limit = _LABEL, _LABEL_MSG, 63
        elif rt.kind == "Service" and rt.builtin:
            pattern, msg, limit = _DNS1035, _DNS1035_MSG, 63
        else:
            pattern, msg, limit = _SUBDOMAIN, _SUBDOMAIN_MSG, 253
        if len(name) > limit:
            raise invalid(rt, name, "metadata.name", f'Invalid value: "{name}": must be no more than {limit} '
                                                     "characters")
        if not pattern.match(name):
            raise invalid(rt, name, "metadata.name", f'Invalid value: "{name}": {msg}')

    @staticmethod
    def _area(rt: ResourceType, obj: Obj, subresource: str) -> Obj:
        """The part of an object a write may touch: status only via /status, everything else otherwise."""
        if subresource == "status":
            return {"status": obj["status"]} if "status" in obj else {}
        if rt.has_status:
            return {k: v for k, v in obj.items() if k != "status"}
        return obj

    @staticmethod
    def _owned(rt: ResourceType, paths: set[F.Path], subresource: str) -> set[F.Path]:
        if subresource == "status":
            return {p for p in paths if p[0] == "status" and p not in F.IGNORED}
        return {p for p in paths if p not in F.IGNORED and (p[0] != "status" or not rt.has_status)}

    @staticmethod
    def _managers(obj: Obj) -> dict[ManagerKey, set[F.Path]]:
        out: dict[ManagerKey, set[F.Path]] = {}
        for entry in obj.get("metadata", {}).get("managedFields") or []:
            key = (entry.get("manager", ""), entry.get("operation", "Update"), entry.get("subresource", ""))
            out[key] = out.get(key, set()) | F.from_fields_v1(entry.get("fieldsV1") or {})
        return out

    def _apply_conflict(self, rt: ResourceType, name: str, version: str, managers: dict[ManagerKey, set[F.Path]],
                        clashes: dict[ManagerKey, list[F.Path]], live: Obj) -> ApiError:
        versions = {(e.get("manager"), e.get("operation"), e.get("subresource", "")): e.get("apiVersion")
                    for e in live.get("metadata", {}).get("managedFields") or []}
        causes, lines = [], []
        for key, paths in clashes.items():
            using = versions.get(key) or rt.api_version(version)
            for path in paths:
                fld = "." + ".".join(path)
                causes.append({"type": "FieldManagerConflict", "message": f'conflict with "{key[0]}" using {using}',
                               "field": fld})
                lines.append((f'conflict with "{key[0]}" using {using}', fld))
        n = len(lines)
        if n == 1:
            message = f"Apply failed with 1 conflict: {lines[0][0]}: {lines[0][1]}"
        else:
            message = f"Apply failed with {n} conflicts: " + "\n".join(f"{who}: {fld}" for who, fld in lines)
        details = _details(rt, name)
        details["causes"] = causes
        return ApiError(409, "Conflict", message, details)

    def _commit(self, rt: ResourceType, version: str, namespace: str | None, name: str, old: Obj | None,
                new: Obj, me: ManagerKey, owned: set[F.Path], managers: dict[ManagerKey, set[F.Path]]) -> Obj:
        """Finish a write: managedFields, generation, no-op detection, resourceVersion, event."""
        meta = new["metadata"]
        if not managers:  # an Update: the writer takes the fields it changed from everyone else
            owned = self._owned(rt, owned, me[2])
            managers = self._managers(old) if old else {}
            for key in managers:
                if key != me:
                    managers[key] = managers[key] - owned
            managers[me] = managers.get(me, set()) | owned
        managers = {k: {p for p in v if F.path_exists(new, p)} for k, v in managers.items()}
        old_entries = {(e["manager"], e["operation"], e.get("subresource", "")): e
                       for e in (old or {}).get("metadata", {}).get("managedFields") or []}
        old_sets = self._managers(old) if old else {}
        entries: list[Obj] = []
        gv = rt.api_version(version)
        order = list(old_entries) + [k for k in managers if k not in old_entries]
        for key in order:
            paths = managers.get(key)
            if not paths:
                continue
            if key in old_entries and old_sets.get(key) == paths:
                entries.append(old_entries[key])
                continue
            entry: Obj = {"manager": key[0], "operation": key[1], "apiVersion": gv, "time": now_rfc3339(),
                          "fieldsType": "FieldsV1", "fieldsV1": F.to_fields_v1(paths)}
            if key[2]:
                entry["subresource"] = key[2]
            entries.append(entry)
        versioned = not (rt.builtin and rt.kind in UNVERSIONED_BUILTINS)
        if old is not None:
            for key in ("uid", "creationTimestamp", "generation"):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if entries:
                meta["managedFields"] = entries
            else:
                meta.pop("managedFields", None)
            if versioned and _content(new, skip_meta=True) != _content(old, skip_meta=True):
                meta["generation"] = old["metadata"]["generation"] + 1
            if _content(new, skip_meta=False) == _content(old, skip_meta=False):
                return old
        else:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
            if versioned:
                meta["generation"] = 1
            if entries:
                meta["managedFields"] = entries
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        stored = {"apiVersion": rt.api_version(rt.versions[0]), "kind": rt.kind,
                  **{k: v for k, v in new.items() if k not in ("apiVersion", "kind")}}
        with self.lock:
            self.kinds[rt.key].objects.setdefault(namespace or "", {})[name] = stored
        self._emit(rt, Event(self.rv, "MODIFIED" if old else "ADDED", stored, old), me[2])
        return stored

    def _emit(self, rt: ResourceType, event: Event, subresource: str) -> None:
        ks = self.kinds[rt.key]
        ks.history.append(event)
        if len(ks.history) > self.history_limit:
            ks.floor = ks.history.popleft().rv
        for watcher in list(ks.watchers):
            watcher.offer(event)
        for listener in self.listeners:
            listener(rt, event, subresource)

    def events_since(self, rt: ResourceType, rv: int) -> list[Event] | None:
        """History after `rv`, or None when it is older than what is kept (the caller answers 410 Gone)."""
        ks = self.kinds[rt.key]
        if rv < ks.floor:
            return None
        out: list[Event] = []
        for event in reversed(ks.history):
            if event.rv <= rv:
                break
            out.append(event)
        out.reverse()
        return out


def _content(obj: Obj, *, skip_meta: bool) -> Obj:
    """What decides whether a write changed anything (rv/timestamps aside) or bumps generation (spec-like only)."""
    if skip_meta:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    meta = {k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "managedFields")}
    managed = [{k: v for k, v in e.items() if k not in ("time", "apiVersion")}
               for e in obj["metadata"].get("managedFields") or []]
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
    return {"metadata": meta, "managed": managed, **rest}


def _create_defaults(rt: ResourceType, obj: Obj) -> None:
    """What the real server fills in on create for the built-in kinds we serve."""
    if rt.builtin and rt.kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}


def _fold_string_data(secret: Obj) -> None:
    """Secret.stringData is write-only: merged into base64 `data` and never stored (like the real server)."""
    string_data = secret.pop("stringData", None)
    if string_data:
        data = dict(secret.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data
    secret.setdefault("type", "Opaque")
