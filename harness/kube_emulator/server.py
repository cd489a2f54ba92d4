"""The HTTP face of the emulator: kube-apiserver REST paths, discovery, watch streams,
fault injection, a stand-in for APK's gateway operator, and the `KubeEmulator` handle."""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import selectors as sel
from .registry import Registry, ResourceType, load_registry
from .selectors import SelectorError, combine, field_selector, field_selector_name, label_selector
from .store import ApiError, Event, Obj, Store, Watcher, bad_request, now_rfc3339

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION_INFO = {"major": "1", "minor": "31", "gitVersion": "v1.31.0+kube-emulator", "gitCommit": "0" * 40,
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.0",
                "compiler": "gc", "platform": "linux/amd64"}
FAULT_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "apply", "delete",
                         "deletecollection", "status"})
PATCH_TYPES = {"application/merge-patch+json": "merge", "application/json-patch+json": "json",
               "application/strategic-merge-patch+json": "merge", "application/apply-patch+yaml": "apply"}
OPERATOR_MANAGER = "apk-operator"
log = logging.getLogger(__name__)


def default_crd_dir() -> Path:
    """GATEWAY_AGENT_CRD_DIR, else ../shared/apk-crds beside the repository (not relative to the CWD)."""
    env = os.environ.get("GATEWAY_AGENT_CRD_DIR")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "apk-crds").resolve()


@dataclass
class Fault:
    id: str
    verb: str | None
    kind: str | None
    name: str | None
    status: int | None
    reason: str
    message: str
    times: int | None
    delay: float = 0.0
    retry_after: int | None = None

    def matches(self, verb: str, rt: ResourceType, name: str | None) -> bool:
        if self.verb is not None and self.verb != verb and not (self.verb == "delete" and verb == "deletecollection"):
            return False
        if self.kind is not None:
            kind, _, group = self.kind.partition(".")
            aliases = {rt.kind, rt.kind.lower(), rt.plural, rt.singular}
            if kind not in aliases or (group and group != rt.group):
                return False
        return self.name is None or self.name == name


@dataclass(frozen=True)
class Access:
    """What a real API server would authorize for one request (RBAC's attributes)."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str
    resource: str  # plural, with "/<subresource>" when one was addressed
    namespace: str | None
    name: str | None


# RBAC's verb of a request on one object or a subresource (a collection: list, watch, deletecollection).
_RBAC_VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete", "POST": "create"}


@dataclass
class Route:
    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str

    @property
    def gv(self) -> str:
        return self.rt.api_version(self.version)

    def render(self, obj: Obj) -> Obj:
        """An object as seen through the requested version (objects are stored once per kind)."""
        return dict(obj, apiVersion=self.gv)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type="application/json")


def _error(err: ApiError) -> web.Response:
    return _json(err.status(), err.code)


# What APK's operator resolves for an API (besides the API itself), by where it is named.
_ROUTE_KINDS = {"REST": "HTTPRoute", "GraphQL": "GQLRoute"}
_POLICY_KINDS = ("Authentication", "APIPolicy", "RateLimitPolicy")
_EXTENSION_KINDS = frozenset({"Scope", "RateLimitPolicy", "APIPolicy", "Authentication", "InterceptorService",
                              "BackendJWT", "AIRateLimitPolicy"})
_WATCHED_KINDS = frozenset({"API", "HTTPRoute", "GQLRoute", "Backend", "ConfigMap", "Secret"}) | _EXTENSION_KINDS
# ConfigMaps and Secrets have no generation: they must exist, but their content never counts.
_UNVERSIONED = frozenset({"ConfigMap", "Secret"})
Ref = tuple[str, str]  # (kind, name) within the API's namespace


def _named_refs(value: Any) -> list[Ref]:
    """ConfigMaps, Secrets, interceptors and backend JWTs a spec names anywhere in it."""
    found: list[Ref] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("configMapRef", "secretRef") and isinstance(item, dict) and item.get("name"):
                found.append(("ConfigMap" if key == "configMapRef" else "Secret", item["name"]))
            elif key in ("configMapRefs", "secretRefs") and isinstance(item, list):
                kind = "ConfigMap" if key == "configMapRefs" else "Secret"
                found += [(kind, r["name"]) for r in item if isinstance(r, dict) and r.get("name")]
            elif key in ("requestInterceptors", "responseInterceptors") and isinstance(item, list):
                found += [("InterceptorService", r["name"]) for r in item if isinstance(r, dict) and r.get("name")]
            elif key == "backendJwtPolicy" and isinstance(item, dict) and item.get("name"):
                found.append(("BackendJWT", item["name"]))
            else:
                found += _named_refs(item)
    elif isinstance(value, list):
        for item in value:
            found += _named_refs(item)
    return found


class GatewayOperator:
    """Writes API.status.deploymentStatus the way APK's operator decides to (debounced per API).

    Like APK (``processAPIState`` in its data store), it resolves the API and everything it
    references (routes, backends, extension-ref filters, policies targeting the API or its routes,
    interceptors, and the ConfigMaps and Secrets they name) and redeploys, writing a new status,
    only when that set changed: an object added or gone, a new UID, or a higher generation. An API
    with a missing reference cannot be built and gets no status. ConfigMaps and Secrets must exist
    but, having no generation, never count: a change of their content alone brings nothing.
    """

    def __init__(self, emulator: KubeEmulator) -> None:
        self.emulator = emulator
        self.pending: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # (namespace, API name) -> {(kind, name): (uid, generation)} as last deployed.
        self.deployed: dict[tuple[str, str], dict[Ref, tuple[str, int]]] = {}
        # (namespace, kind, name) -> APIs whose last resolution named it.
        self.referrers: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        # (namespace, target kind, target name) -> policies whose targetRef names it.
        self.targeted_by: dict[tuple[str, str, str], set[Ref]] = {}
        self._targets: dict[tuple[str, str, str], tuple[str, str, str]] = {}
        # APIs whose acceptance waits for ``KubeEmulator.release_operator`` (namespace, name).
        self.held: set[tuple[str, str]] = set()

    def on_change(self, rt: ResourceType, event: Event, subresource: str) -> None:
        if subresource == "status" or rt.kind not in _WATCHED_KINDS:
            return
        meta = event.obj["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        if rt.kind in _POLICY_KINDS:
            self._index_target(rt.kind, namespace, name, None if event.type == "DELETED" else event.obj)
        if rt.kind == "API" and rt.group == "dp.wso2.com":
            key = (namespace, name)
            if event.type == "DELETED":
                if (handle := self.pending.pop(key, None)) is not None:
                    handle.cancel()
                self.deployed.pop(key, None)
                return
            self._schedule(key)
            return
        affected = set(self.referrers.get((namespace, rt.kind, name), ()))
        target = (event.obj.get("spec") or {}).get("targetRef") or {}
        if rt.kind in _POLICY_KINDS and target.get("name"):
            if target.get("kind") == "API":
                affected.add((namespace, target["name"]))
            else:
                affected |= self.referrers.get((namespace, str(target.get("kind")), target["name"]), set())
        for key in affected:
            self._schedule(key)

    def _index_target(self, kind: str, namespace: str, name: str, obj: Obj | None) -> None:
        me = (namespace, kind, name)
        if (old := self._targets.pop(me, None)) is not None:
            self.targeted_by.get(old, set()).discard((kind, name))
        target = ((obj or {}).get("spec") or {}).get("targetRef") or {}
        if obj is not None and target.get("name"):
            where = (namespace, str(target.get("kind")), str(target["name"]))
            self._targets[me] = where
            self.targeted_by.setdefault(where, set()).add((kind, name))

    def _schedule(self, key: tuple[str, str]) -> None:
        if (handle := self.pending.pop(key, None)) is not None:
            handle.cancel()
        if not self.emulator.gateway_operator:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a write made outside the server (not supported for watches or the operator)
            return
        self.pending[key] = loop.call_later(self.emulator.operator_delay, self._deploy, *key)

    def release(self, namespace: str) -> None:
        for key in sorted(k for k in self.held if k[0] == namespace):
            self.held.discard(key)
            self._schedule(key)

    def cancel_all(self) -> None:
        for handle in self.pending.values():
            handle.cancel()
        self.pending.clear()

    def _resolve(self, namespace: str, api: Obj) -> tuple[dict[Ref, tuple[str, int]], list[Ref], bool]:
        """(generations of what counts, every reference, whether all of them exist)."""
        store, registry = self.emulator.store, self.emulator.registry
        state: dict[Ref, tuple[str, int]] = {}
        named: list[Ref] = []
        complete = True

        def fetch(kind: str, name: str) -> Obj | None:
            nonlocal complete
            named.append((kind, name))
            try:
                obj = store.get(registry.by_kind(kind if kind != "API" else "API.dp.wso2.com"), namespace, name)
            except KeyError:
                obj = None
            if obj is None:
                complete = False
            elif kind not in _UNVERSIONED:
                state[(kind, name)] = (obj["metadata"]["uid"], obj["metadata"].get("generation", 0))
            return obj

        def with_policies(kind: str, name: str) -> None:
            for ref in sorted(self.targeted_by.get((namespace, kind, name), ())):
                if (policy := fetch(*ref)) is not None:
                    for sub in _named_refs(policy.get("spec") or {}):
                        fetch(*sub)

        spec = api.get("spec") or {}
        name = api["metadata"]["name"]
        state[("API", name)] = (api["metadata"]["uid"], api["metadata"].get("generation", 0))
        if spec.get("definitionFileRef"):
            fetch("ConfigMap", spec["definitionFileRef"])
        with_policies("API", name)
        route_kind = _ROUTE_KINDS.get(spec.get("apiType", "REST"), "HTTPRoute")
        for environment in ("production", "sandbox"):
            for entry in spec.get(environment) or []:
                for route_name in entry.get("routeRefs") or []:
                    route = fetch(route_kind, route_name)
                    if route is None:
                        continue
                    with_policies(route_kind, route_name)
                    for rule in (route.get("spec") or {}).get("rules") or []:
                        for backend_ref in rule.get("backendRefs") or []:
                            if backend_ref.get("name") and (backend := fetch("Backend", backend_ref["name"])):
                                for sub in _named_refs(backend.get("spec") or {}):
                                    fetch(*sub)
                        for rule_filter in rule.get("filters") or []:
                            ext = rule_filter.get("extensionRef") or {}
                            if ext.get("kind") in _EXTENSION_KINDS and ext.get("name"):
                                if (found := fetch(ext["kind"], ext["name"])) is not None:
                                    for sub in _named_refs(found.get("spec") or {}):
                                        fetch(*sub)
        return state, named, complete

    def _deploy(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.pending.pop(key, None)
        rt = self.emulator.registry.by_kind("API.dp.wso2.com")
        store = self.emulator.store
        obj = store.get(rt, namespace, name)
        if obj is None or not self.emulator.gateway_operator:
            return
        if namespace in self.emulator.operator_holds:
            self.held.add(key)  # a slow operator: nothing is written until the hold is released
            return
        state, named, complete = self._resolve(namespace, obj)
        for kind, ref_name in named:
            self.referrers.setdefault((namespace, kind, ref_name), set()).add(key)
        if not complete:
            return  # APK cannot build the API: no status, the agent's readiness timeout tells
        previous = self.deployed.get(key)
        if previous == state:
            return  # no generation moved: APK does not redeploy and writes nothing
        self.deployed[key] = state
        status = copy.deepcopy(obj.get("status") or {})
        now = now_rfc3339()
        if name in self.emulator.operator_rejects:
            state_ = {"accepted": False, "status": "FAILED",
                      "message": "API could not be deployed to the gateway: rejected by the emulated operator."}
        elif previous is not None:
            state_ = {"accepted": True, "status": "UPDATED", "message": "API update is deployed to the gateway."}
        else:
            state_ = {"accepted": True, "status": "CREATED", "message": "API is deployed to the gateway."}
        events = list((status.get("deploymentStatus") or {}).get("events") or [])
        events.append(f"[{now}] {state_['status']}: {state_['message']}")
        status["deploymentStatus"] = {**state_, "transitionTime": now, "events": events[-5:]}
        body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                "metadata": {"name": name, "namespace": namespace,
                             "resourceVersion": obj["metadata"]["resourceVersion"]},
                "status": status}
        store.update(rt, rt.versions[0], namespace, name, body, OPERATOR_MANAGER, "status")


class KubeEmulator:
    """An in-memory kube-apiserver that the official `kubernetes` client talks to unmodified."""

    def __init__(self, crd_dir: Path | None = None, *, gateway_operator: bool = False,
                 operator_delay: float = 0.05) -> None:
        self.crd_dir = Path(crd_dir) if crd_dir is not None else default_crd_dir()
        self.registry: Registry = load_registry(self.crd_dir)
        self.store = Store(self.registry)
        self.gateway_operator = gateway_operator
        self.operator_delay = operator_delay
        self.operator_rejects: set[str] = set()
        # Namespaces whose APIs the operator holds: it accepts them only once released.
        self.operator_holds: set[str] = set()
        self.url = ""
        self._faults: dict[str, Fault] = {}
        self._fault_ids = itertools.count(1)
        self._log: deque[tuple[str, str]] = deque(maxlen=10_000)
        self._access_log: deque[Access] = deque(maxlen=100_000)
        self._operator = GatewayOperator(self)
        self.store.listeners.append(self._operator.on_change)
        self._watch_queues: set[asyncio.Queue[tuple[str, Obj] | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread with its own event loop; returns the base URL."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(host, port))
            except BaseException as e:  # surfaced to the caller of start()
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="kube-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self.url

    async def _serve(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self._app(), handler_cancellation=True, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host if host not in ('0.0.0.0', '') else '127.0.0.1'}:{bound_port}"

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)
        self._thread = None
        self._loop = None

    async def _shutdown(self) -> None:
        self._operator.cancel_all()
        for queue in list(self._watch_queues):
            queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()

    def __enter__(self) -> KubeEmulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig for `kubernetes.config.load_kube_config` (plain http, any bearer token accepted)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kube-emulator", "preferences": {},
            "clusters": [{"name": "kube-emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "kube-emulator", "user": {"token": "kube-emulator"}}],
            "contexts": [{"name": "kube-emulator",
                          "context": {"cluster": "kube-emulator", "user": "kube-emulator", "namespace": namespace}}],
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # ---- test controls -----------------------------------------------------------------------------

    def inject_fault(self, *, verb: str | None = None, kind: str | None = None, name: str | None = None,
                     status: int | None = 500, reason: str = "InternalError", message: str = "injected fault",
                     times: int | None = None, delay: float = 0.0, retry_after: int | None = None) -> str:
        """Make matching API requests fail with a metav1.Status error; times=None lasts until cleared.

        ``delay`` seconds pass before the answer (with ``status=None`` the request then proceeds: a
        slow API server). ``retry_after`` adds a ``Retry-After`` header and ``details.retryAfterSeconds``.
        A 410 on ``watch`` arrives as the real server sends an expired resourceVersion: an ERROR event
        in a 200 stream.
        """
        if verb is not None and verb not in FAULT_VERBS:
            raise ValueError(f"verb must be one of {sorted(FAULT_VERBS)}")
        if kind is not None:
            self.registry.by_kind(kind)
        fault = Fault(f"fault-{next(self._fault_ids)}", verb, kind, name, status, reason, message, times,
                      float(delay), retry_after)
        with self.store.lock:
            self._faults[fault.id] = fault
        return fault.id

    def hold_operator(self, namespace: str) -> None:
        """The operator accepts no API of ``namespace`` (writes no status) until :meth:`release_operator`."""
        self.operator_holds.add(namespace)

    def release_operator(self, namespace: str) -> None:
        """End a hold: every API of ``namespace`` the operator held is deployed (after ``operator_delay``)."""
        self.operator_holds.discard(namespace)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._operator.release, namespace)

    def clear_faults(self, fault_id: str | None = None) -> None:
        with self.store.lock:
            if fault_id is None:
                self._faults.clear()
            else:
                self._faults.pop(fault_id, None)

    def faults(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [asdict(f) for f in self._faults.values()]

    def objects(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
        rt = self.registry.by_kind(kind)
        pred = sel.label_selector(label_selector)
        with self.store.lock:
            return copy.deepcopy(self.store.list(rt, namespace, pred))

    def get_object(self, kind: str, namespace: str, name: str) -> dict | None:
        rt = self.registry.by_kind(kind)
        with self.store.lock:
            return copy.deepcopy(self.store.get(rt, namespace if rt.namespaced else None, name))

    @property
    def request_log(self) -> list[tuple[str, str]]:
        """(method, path with query) of the last 10,000 requests, oldest first."""
        return list(self._log)

    @property
    def access_log(self) -> list[Access]:
        """What RBAC would have checked for each resource request (the last 100,000), oldest first.

        Discovery and other non-resource paths are not in it. A server-side apply of an object
        that does not exist yet needs ``create`` besides ``patch``, as on a real API server, so
        it is logged as both.
        """
        with self.store.lock:
            return list(self._access_log)

    def clear_access_log(self) -> None:
        with self.store.lock:
            self._access_log.clear()

    def _record_access(self, method: str, verb: str, route: Route, name: str | None) -> None:
        rt = route.rt
        resource = f"{rt.plural}/{route.subresource}" if route.subresource else rt.plural
        if verb in ("list", "watch", "deletecollection"):
            verbs = [verb]
        else:
            verbs = [_RBAC_VERBS[method]]
        with self.store.lock:
            if verb == "apply" and name is not None and self.store.get(rt, route.namespace, name) is None:
                verbs.append("create")
            for rbac_verb in verbs:
                self._access_log.append(Access(rbac_verb, rt.group, resource, route.namespace, name))

    def _take_fault(self, verb: str, rt: ResourceType, name: str | None) -> Fault | None:
        with self.store.lock:
            for fault in self._faults.values():
                if fault.matches(verb, rt, name):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            del self._faults[fault.id]
                    return fault
        return None

    @staticmethod
    def _fault_error(fault: Fault, rt: ResourceType, name: str | None) -> ApiError:
        assert fault.status is not None
        details: Obj = {"kind": rt.plural}
        if name:
            details["name"] = name
        if rt.group:
            details["group"] = rt.group
        if fault.retry_after is not None:
            details["retryAfterSeconds"] = fault.retry_after
        return ApiError(fault.status, fault.reason, fault.message, details)

    # ---- HTTP --------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        @web.middleware
        async def log_requests(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                               ) -> web.StreamResponse:
            self._log.append((request.method, request.path_qs))
            return await handler(request)

        app = web.Application(middlewares=[log_requests], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/_emulator/{what:.*}", self._control)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _control(self, request: web.Request) -> web.Response:
        what = request.match_info["what"].strip("/")
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return _error(bad_request("the request body is not valid JSON"))
        if not isinstance(body, dict):
            return _error(bad_request("the request body must be a JSON object"))
        if what == "faults" and request.method == "POST":
            try:
                return _json({"id": self.inject_fault(**body)}, 201)
            except (TypeError, ValueError, KeyError) as e:
                return _error(bad_request(str(e)))
        if what == "faults" and request.method == "DELETE":
            self.clear_faults()
            return _json({"faults": []})
        if what.startswith("faults/") and request.method == "DELETE":
            self.clear_faults(what.split("/", 1)[1])
            return _json({"faults": self.faults()})
        if what == "faults" and request.method == "GET":
            return _json({"faults": self.faults()})
        if what == "operator" and request.method in ("PUT", "POST"):
            if "enabled" in body:
                self.gateway_operator = bool(body["enabled"])
            if "delay" in body:
                self.operator_delay = float(body["delay"])
            if "rejects" in body:
                self.operator_rejects = set(body["rejects"])
            if "holds" in body:
                for namespace in self.operator_holds - set(body["holds"]):
                    self.release_operator(namespace)
                self.operator_holds |= set(body["holds"])
        if what == "operator" and request.method in ("GET", "PUT", "POST"):
            return _json({"enabled": self.gateway_operator, "delay": self.operator_delay,
                          "rejects": sorted(self.operator_rejects), "holds": sorted(self.operator_holds)})
        if what == "objects" and request.method == "GET":
            q = request.query
            try:
                return _json({"items": self.objects(q["kind"], q.get("namespace"), q.get("labelSelector"))})
            except KeyError as e:
                return _error(bad_request(str(e)))
        if what == "requests" and request.method == "GET":
            return _json({"requests": [list(r) for r in self._log]})
        return _error(ApiError(404, "NotFound", f"no emulator control {request.method} /_emulator/{what}"))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except ApiError as e:
            return _error(e)
        except SelectorError as e:
            return _error(bad_request(str(e)))
        except Exception as e:  # an emulator bug still answers like an apiserver, with a Status body
            log.exception("kube emulator failed on %s %s", request.method, request.path_qs)
            return _error(ApiError(500, "InternalError", f"kube emulator error: {e!r}"))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        segs = [s for s in request.path.split("/") if s]
        method = request.method
        if method == "GET" and segs in (["healthz"], ["readyz"], ["livez"]):
            return web.Response(text="ok")
        if method == "GET":
            doc = self._discovery(request, segs)
            if doc is not None:
                return _json(doc)
        route = self._route(segs)
        if route is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        q = request.query
        is_watch = q.get("watch") in ("true", "1", "True")
        verb = self._verb(method, route, request, is_watch)
        raw = await request.read() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        body = self._parse_body(raw, request.content_type, verb)
        name = route.name
        if name is None and isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            name = body["metadata"].get("name")
        self._record_access(method, verb, route, name)
        if (fault := self._take_fault(verb, route.rt, name)) is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                error = self._fault_error(fault, route.rt, name)
                if verb == "watch" and fault.status == 410:
                    return await self._expired_watch(request, error)
                response = _error(error)
                if fault.retry_after is not None:
                    response.headers["Retry-After"] = str(fault.retry_after)
                return response
        if verb == "watch":
            return await self._watch(request, route)
        return self._perform(request, route, verb, body)

    def _discovery(self, request: web.Request, segs: list[str]) -> Obj | None:
        if segs in (["version"], ["version", ""]):
            return VERSION_INFO
        if segs == ["api"]:
            host = request.host
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]}
        if segs == ["apis"]:
            return self.registry.api_group_list()
        if len(segs) == 2 and segs[0] == "apis":
            if (group := self.registry.api_group(segs[1])) is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            return group
        if (len(segs) == 2 and segs[0] == "api") or (len(segs) == 3 and segs[0] == "apis"):
            group, version = ("", segs[1]) if segs[0] == "api" else (segs[1], segs[2])
            if (resources := self.registry.resource_list(group, version)) is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            return resources
        return None

    def _route(self, segs: list[str]) -> Route | None:
        if len(segs) >= 3 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 4 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return None
        namespace: str | None = None
        ns_subresource = group == "" and len(rest) == 3 and rest[0] == "namespaces" and rest[2] in ("status",
                                                                                                  "finalize")
        if rest[0] == "namespaces" and len(rest) >= 3 and not ns_subresource:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            return None
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else ""
        rt = self.registry.lookup(group, version, plural)
        if rt is None or (namespace is not None and not rt.namespaced):
            return None
        if rt.namespaced and namespace is None and name is not None:
            return None
        if sub and not (sub == "status" and rt.has_status):
            return None
        return Route(rt, version, namespace, name, sub)

    @staticmethod
    def _verb(method: str, route: Route, request: web.Request, is_watch: bool) -> str:
        if route.subresource:
            return "status"
        if route.name is None:
            verbs = {"GET": "watch" if is_watch else "list", "POST": "create", "DELETE": "deletecollection"}
        else:
            kind = PATCH_TYPES.get(request.content_type, "merge")
            verbs = {"GET": "get", "PUT": "update", "PATCH": "apply" if kind == "apply" else "patch",
                     "DELETE": "delete"}
        if method not in verbs:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                                                    f"resource ({method})", {})
        return verbs[method]

    @staticmethod
    def _parse_body(raw: bytes, content_type: str, verb: str) -> Any:
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            if content_type != "application/apply-patch+yaml":
                raise bad_request("the request body is not valid JSON") from None
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise bad_request(f"error decoding YAML: {e}") from None

    def _perform(self, request: web.Request, route: Route, verb: str, body: Any) -> web.Response:
        store, rt, q = self.store, route.rt, request.query
        manager = q.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0] or "unknown"
        ns, name, sub = route.namespace, route.name, route.subresource
        if request.method == "GET" and name is None:
            return _json(self._list(route, q))
        if request.method == "GET":
            assert name is not None
            return _json(route.render(store.require(rt, ns, name)))
        if request.method == "POST":
            return _json(route.render(store.create(rt, route.version, ns, body, manager)), 201)
        if request.method == "DELETE" and name is None:
            pred = combine(label_selector(q.get("labelSelector")), field_selector(q.get("fieldSelector")))
            gone = [store.delete(rt, o["metadata"].get("namespace"), o["metadata"]["name"])
                    for o in store.list(rt, ns, pred)]
            return _json({"kind": rt.list_kind, "apiVersion": route.gv,
                          "metadata": {"resourceVersion": str(store.rv)}, "items": [route.render(o) for o in gone]})
        assert name is not None
        if request.method == "DELETE":
            gone = store.delete(rt, ns, name, body if isinstance(body, dict) else None)
            if rt.builtin and rt.kind != "Namespace":
                details = {"name": name, "kind": rt.plural, "uid": gone["metadata"]["uid"]}
                return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": details})
            return _json(route.render(gone))
        if request.method == "PUT":
            return _json(route.render(store.update(rt, route.version, ns, name, body, manager, sub)))
        patch_type = PATCH_TYPES.get(request.content_type)
        if patch_type is None:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                        f"accepted media types include: {', '.join(PATCH_TYPES)}", {})
        if patch_type == "apply":
            if not q.get("fieldManager"):
                raise bad_request("PATCH " + request.path + ": fieldManager is required for apply requests")
            force = q.get("force", "false").lower() in ("true", "1")
            obj, created = store.apply(rt, route.version, ns, name, body, q["fieldManager"], force, sub)
            return _json(route.render(obj), 201 if created else 200)
        return _json(route.render(store.patch(rt, route.version, ns, name, patch_type, body, manager, sub)))

    def _list(self, route: Route, q: Any) -> Obj:
        pred = combine(label_selector(q.get("labelSelector")), field_selector(q.get("fieldSelector")))
        items = self.store.list(route.rt, route.namespace, pred, field_selector_name(q.get("fieldSelector")))
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if token := q.get("continue"):
            try:
                start = tuple(json.loads(base64.urlsafe_b64decode(token)))
            except ValueError:
                raise ApiError(400, "BadRequest", "continue key is not valid") from None
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start]
        limit = int(q.get("limit") or 0)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            key = [last.get("namespace", ""), last["name"]]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(key).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {"kind": route.rt.list_kind, "apiVersion": route.gv, "metadata": meta,
                "items": [route.render(o) for o in items]}

    async def _watch(self, request: web.Request, route: Route) -> web.StreamResponse:
        """Chunked JSON-lines stream; history replay and registration happen before any await, so no gap."""
        q = request.query
        pred = combine(label_selector(q.get("labelSelector")), field_selector(q.get("fieldSelector")))
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        queue: asyncio.Queue[tuple[str, Obj] | None] = asyncio.Queue()
        watcher = Watcher(route.namespace, pred, lambda etype, obj: queue.put_nowait((etype, obj)))
        rv = q.get("resourceVersion") or ""
        send_initial = q.get("sendInitialEvents") == "true"
        initial: list[tuple[str, Obj]] = []
        expired: Obj | None = None
        if rv in ("", "0") or send_initial:
            initial = [("ADDED", o) for o in self.store.list(route.rt, route.namespace, pred)]
        else:
            try:
                since = int(rv)
            except ValueError:
                raise bad_request(f"invalid resource version: {rv!r}") from None
            events = self.store.events_since(route.rt, since)
            if events is None:
                floor = self.store.kinds[route.rt.key].floor
                expired = ApiError(410, "Expired", f"too old resource version: {since} ({floor})").status()
            else:
                initial = [(t, e.obj) for e in events if (t := watcher.translate(e)) is not None]
        if send_initial:
            bookmark = {"kind": route.rt.kind, "apiVersion": route.gv, "metadata": {
                "resourceVersion": str(self.store.rv), "annotations": {"k8s.io/initial-events-end": "true"}}}
        kind_store = self.store.kinds[route.rt.key]
        if expired is None:
            kind_store.watchers.add(watcher)
            self._watch_queues.add(queue)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if expired is not None:
                await response.write(json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n")
                return response
            lines = [self._event_line(route, t, o) for t, o in initial]
            if send_initial:
                lines.append(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n")
            if lines:
                await response.write(b"".join(lines))
            deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
            while True:
                remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                batch = [item]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                lines = [self._event_line(route, *i) for i in batch if i is not None]
                if lines:
                    await response.write(b"".join(lines))
                if None in batch:
                    break
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            kind_store.watchers.discard(watcher)
            self._watch_queues.discard(queue)
        return response

    @staticmethod
    async def _expired_watch(request: web.Request, error: ApiError) -> web.StreamResponse:
        """What the real server streams for a resourceVersion too old to watch from."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(json.dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n")
        return response

    @staticmethod
    def _event_line(route: Route, etype: str, obj: Obj) -> bytes:
        return json.dumps({"type": etype, "object": route.render(obj)}, separators=(",", ":")).encode() + b"\n"
