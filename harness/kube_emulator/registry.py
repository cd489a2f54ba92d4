"""Resource types the emulator serves: built-in core kinds plus CRDs read from YAML files.

Discovery documents are built here so the `kubernetes` dynamic client sees the
same shapes (APIGroupList, APIGroup, APIResourceList) a real apiserver returns.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")
CR_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]


@dataclass(frozen=True)
class ResourceType:
    """One served resource (a kind), stored once whatever version a client uses."""

    group: str
    versions: tuple[str, ...]  # served versions, highest priority first
    plural: str
    singular: str
    kind: str
    namespaced: bool
    has_status: bool
    builtin: bool = False
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = tuple(CR_VERBS)

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def resource_label(self) -> str:
        """`plural.group` as used in real apiserver error messages (e.g. apis.dp.wso2.com)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def discovery_entries(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
            "storageVersionHash": hashlib.sha256(f"{self.group}/{self.kind}".encode()).hexdigest()[:12],
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        if self.has_status:
            entries.append(
                {"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                 "kind": self.kind, "verbs": STATUS_VERBS}
            )
        return entries


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key following Kubernetes version priority: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > other."""
    m = _VERSION_RE.match(version)
    if not m:
        return (3, 0, 0, version)
    major, level, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[level]
    return (rank, -major, -minor, version)


CORE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", ("v1",), "namespaces", "namespace", "Namespace", False, True, True, ("ns",),
                 verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    ResourceType("", ("v1",), "configmaps", "configmap", "ConfigMap", True, False, True, ("cm",)),
    ResourceType("", ("v1",), "secrets", "secret", "Secret", True, False, True),
    ResourceType("", ("v1",), "services", "service", "Service", True, True, True, ("svc",), ("all",)),
)


@dataclass
class Registry:
    """All served resource types, indexed the ways requests and tests look them up."""

    types: list[ResourceType] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_gvp: dict[tuple[str, str, str], ResourceType] = {}
        self._by_name: dict[str, list[ResourceType]] = {}
        for rt in self.types:
            for v in rt.versions:
                self._by_gvp[(rt.group, v, rt.plural)] = rt
            for alias in {rt.kind, rt.kind.lower(), rt.plural, rt.singular, *rt.short_names}:
                self._by_name.setdefault(alias, []).append(rt)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvp.get((group, version, plural))

    def by_kind(self, kind: str) -> ResourceType:
        """Resolve a kind, plural or `Kind.group` / `plural.group` given by a test."""
        name, _, group = kind.partition(".")
        matches = [rt for rt in self._by_name.get(name, []) if not group or rt.group == group]
        if len(matches) != 1:
            raise KeyError(f"{kind!r} matches {len(matches)} served kinds; use Kind.group")
        return matches[0]

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions sorted by priority (first is preferred)."""
        out: dict[str, set[str]] = {}
        for rt in self.types:
            if rt.group:
                out.setdefault(rt.group, set()).update(rt.versions)
        return {g: sorted(vs, key=version_priority) for g, vs in sorted(out.items())}

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self.groups().get(group)
        if not versions:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def api_group_list(self) -> dict[str, Any]:
        groups = [self.api_group(g) for g in self.groups()]
        for g in groups:
            assert g is not None
            del g["kind"], g["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        served = [rt for rt in self.types if rt.group == group and version in rt.versions]
        if not served:
            return None
        resources = [e for rt in served for e in rt.discovery_entries()]
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _crd_type(crd: dict[str, Any]) -> ResourceType | None:
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    served = [v for v in spec.get("versions", []) if v.get("served", True)]
    if not served:
        return None
    return ResourceType(
        group=spec["group"],
        versions=tuple(sorted((v["name"] for v in served), key=version_priority)),
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        has_status=any("status" in (v.get("subresources") or {}) for v in served),
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
    )


@functools.lru_cache(maxsize=8)
def _load_crds(crd_dir: str, stamp: tuple[tuple[str, float], ...]) -> tuple[ResourceType, ...]:
    """Parse every CRD in the directory; cached on (dir, file mtimes) since the gateway CRDs are ~1 MB."""
    types: list[ResourceType] = []
    for name, _ in stamp:
        with open(Path(crd_dir) / name, encoding="utf-8") as f:
            for doc in yaml.load_all(f, Loader=_LOADER):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    rt = _crd_type(doc)
                    if rt is not None:
                        types.append(rt)
    return tuple(types)


def load_registry(crd_dir: Path | None) -> Registry:
    types = list(CORE_TYPES)
    if crd_dir is not None:
        files = sorted(p for p in Path(crd_dir).iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        stamp = tuple((p.name, p.stat().st_mtime) for p in files)
        types.extend(_load_crds(str(Path(crd_dir).resolve()), stamp))
    return Registry(types)
