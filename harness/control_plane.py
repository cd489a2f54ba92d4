"""A WSO2 API Manager (control plane) simulator for tests, benchmarks and the demo.

It serves the internal data REST API the agent calls and publishes notification events
on a STOMP broker, both shaped as control-plane.md describes, from an in-memory truth
that tests drive (``deploy``/``undeploy``) and inspect (``deployment_reports``,
``requests``). Failure injection lets tests see how the agent copes with a flaky CP.

Run it standalone for the demo::

    python -m harness.control_plane --port 9443 --broker stomp://127.0.0.1:61613 \\
        --sample pizzashack --labels Default
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import signal
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import stomp
from aiohttp import BodyPartReader, web

from harness.api_projects import (
    ApiProjectFiles,
    Deployment,
    apis_zip,
    gateway_environment,
    project_from_zip,
    sample_project,
    with_changes,
)

log = logging.getLogger("harness.control_plane")

INTERNAL_PREFIX = "/internal/data/v1/"
DEPLOY_EVENTS = frozenset({"DEPLOY_API_IN_GATEWAY", "REMOVE_API_FROM_GATEWAY"})
API_EVENTS = frozenset({"API_CREATE", "API_UPDATE", "API_DELETE", "API_LIFECYCLE_CHANGE"})
SUPER_TENANT = "carbon.super"

ReportPredicate = Callable[[dict[str, Any]], bool]


@dataclass
class _Failure:
    path_suffix: str
    status: int | None
    remaining: int | None
    delay: float


@dataclass
class _LabelDeployment:
    """What one label of one organization runs for one API."""

    project: ApiProjectFiles
    vhost: str
    deployed_at_ms: int


@dataclass
class _KnownApi:
    api_id: int
    project: ApiProjectFiles
    organization: str
    labels: dict[str, _LabelDeployment] = field(default_factory=dict)
    # Labels of the latest deploy/undeploy, so a REMOVE built after the fact still names them.
    last_labels: list[str] = field(default_factory=list)


class _ReceiptListener(stomp.ConnectionListener):
    """Tracks broker receipts and connection loss for one connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, threading.Event] = {}
        self.lost = threading.Event()

    def expect(self, receipt: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._pending[receipt] = event
        return event

    def forget(self, receipt: str) -> None:
        with self._lock:
            self._pending.pop(receipt, None)

    def on_receipt(self, frame: stomp.utils.Frame) -> None:
        with self._lock:
            event = self._pending.pop(frame.headers.get("receipt-id", ""), None)
        if event is not None:
            event.set()

    def on_disconnected(self) -> None:
        self.lost.set()
        with self._lock:
            pending = list(self._pending.values())
        for event in pending:  # wake waiters; they see ``lost`` and retry
            event.set()


class _StompPublisher:
    """One long-lived STOMP 1.2 connection, reopened on demand, shared by all publishers.

    Every send asks for a receipt, so a returned ``send`` means the broker has the message:
    tests can then assert on delivery without sleeping, and a silently dead socket is noticed.
    """

    RECEIPT_TIMEOUT = 5.0

    def __init__(self, broker_url: str, username: str, password: str) -> None:
        parts = urlsplit(broker_url)
        if parts.scheme not in ("stomp", "stomp+ssl") or not parts.hostname or not parts.port:
            raise ValueError(f"broker URL must look like stomp://host:port, got {broker_url!r}")
        self._host_and_port = (parts.hostname, parts.port)
        self._ssl = parts.scheme == "stomp+ssl"
        self._username = username
        self._password = password
        self._lock = threading.Lock()
        self._conn: stomp.Connection12 | None = None
        self._listener = _ReceiptListener()

    def send(self, destination: str, body: str | bytes, headers: Mapping[str, str]) -> None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    conn = self._connected()
                    receipt = str(uuidlib.uuid4())
                    confirmed = self._listener.expect(receipt)
                    conn.send(destination=destination, body=body, headers={**headers, "receipt": receipt})
                    if not confirmed.wait(self.RECEIPT_TIMEOUT) or self._listener.lost.is_set():
                        self._listener.forget(receipt)
                        # ConnectionError is an OSError: the handler below reconnects and resends.
                        raise ConnectionError("no receipt from the broker")
                    return
                except (stomp.exception.StompException, OSError) as exc:
                    self._drop()
                    if attempt == 2:
                        raise ConnectionError(
                            f"cannot publish to {self._host_and_port}: {exc or type(exc).__name__}"
                        ) from exc

    def try_connect(self) -> bool:
        with self._lock:
            try:
                self._connected()
                return True
            except (stomp.exception.StompException, OSError):
                self._drop()
                return False

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connected(self) -> stomp.Connection12:
        if self._conn is not None and self._conn.is_connected() and not self._listener.lost.is_set():
            return self._conn
        self._drop()
        conn = stomp.Connection12(
            [self._host_and_port],
            heartbeats=(0, 0),
            reconnect_attempts_max=1,
            reconnect_sleep_initial=0.05,
            timeout=5,
        )
        if self._ssl:
            conn.set_ssl(for_hosts=[self._host_and_port])
        self._listener = _ReceiptListener()
        conn.set_listener("receipts", self._listener)
        conn.connect(self._username, self._password, wait=True)
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.is_connected():
            try:
                conn.disconnect()
            except (stomp.exception.StompException, OSError):
                pass


class ControlPlaneSimulator:
    """The control plane's truth plus its REST API (aiohttp, own thread and loop) and events.

    ``broker_url=None`` disables the broker: events are then only recorded in ``published``.
    """

    def __init__(
        self,
        *,
        username: str = "admin",
        password: str = "admin",
        broker_url: str | None = "stomp://127.0.0.1:61613",
        topic: str = "/topic/notification",
        broker_username: str = "",
        broker_password: str = "",
    ) -> None:
        self.username = username
        self.password = password
        self.broker_url = broker_url
        self.topic = topic
        self.url = ""
        # Observations, in arrival order.
        self.deployment_reports: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.published: list[dict[str, Any]] = []  # decoded events, whether or not a broker took them
        self.imported: list[ApiProjectFiles] = []
        # State served by the list endpoints; tests assign or append.
        self.subscriptions: list[dict[str, Any]] = []
        self.applications: list[dict[str, Any]] = []
        self.key_mappings: list[dict[str, Any]] = []
        self.subscription_policies: list[dict[str, Any]] = [_default_subscription_policy("Unlimited")]
        self.api_policies: list[dict[str, Any]] = []
        self.env_properties: dict[str, Any] = {}
        # How "nothing deployed for that filter" is answered: 204 in some CP versions, 404 with
        # the error code NO_API_ARTIFACT_FOUND in others.
        self.not_deployed_answer: Literal["204", "404"] = "204"
        # The body notify-api-deployment-status takes: one report object, ``{count, list}``, or either.
        self.report_shape: Literal["object", "list", "any"] = "any"

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._apis: dict[str, _KnownApi] = {}
        self._next_api_id = 1
        self._failures: list[_Failure] = []
        self._publisher = _StompPublisher(broker_url, broker_username, broker_password) if broker_url else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = any free port) and return the base URL, ending in ``/``."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(host, port))
            except BaseException as exc:  # reported to the caller of start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="control-plane-sim", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._loop = None
            raise failure[0]
        if self._publisher is not None and not self._publisher.try_connect():
            log.warning("broker %s not reachable yet; will connect on first publish", self.broker_url)
        return self.url

    def stop(self) -> None:
        """Stop serving and close the broker connection; safe to call twice."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = None
        self._thread = None
        if self._publisher is not None:
            self._publisher.close()

    def __enter__(self) -> ControlPlaneSimulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _serve(self, host: str, port: int) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        app.router.add_get(INTERNAL_PREFIX + "runtime-artifacts", self._runtime_artifacts)
        app.router.add_post(INTERNAL_PREFIX + "notify-api-deployment-status", self._notify_status)
        app.router.add_get(INTERNAL_PREFIX + "subscriptions", self._subscriptions)
        app.router.add_get(INTERNAL_PREFIX + "applications", self._applications)
        app.router.add_get(INTERNAL_PREFIX + "application-key-mappings", self._key_mappings)
        app.router.add_get(INTERNAL_PREFIX + "subscription-policies", self._subscription_policies)
        app.router.add_get(INTERNAL_PREFIX + "api-policies", self._api_policies)
        app.router.add_post("/api/am/publisher/v4/apis/import", self._import_api)
        app.router.add_post("/_sim/deploy", self._sim_deploy)
        app.router.add_post("/_sim/undeploy", self._sim_undeploy)
        app.router.add_post("/_sim/publish", self._sim_publish)
        app.router.add_get("/_sim/reports", self._sim_reports)
        app.router.add_get("/_sim/requests", self._sim_requests)
        app.router.add_get("/_sim/state", self._sim_state)
        app.router.add_post("/_sim/failures", self._sim_failures)
        app.router.add_delete("/_sim/failures", self._sim_clear_failures)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}/"

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ truth

    def deploy(
        self,
        project: ApiProjectFiles,
        *,
        labels: Iterable[str] = ("Default",),
        vhost: str = "gw.wso2.com",
        organization: str = SUPER_TENANT,
        publish: bool = True,
        announce_removal: bool = False,
    ) -> str:
        """Make ``project`` the deployed revision of its API on ``labels``; returns the event id.

        With ``announce_removal`` a ``REMOVE_API_FROM_GATEWAY`` for the replaced revision is
        published first, as the real CP does on a redeploy.
        """
        labels = _label_list(labels)
        now = int(time.time() * 1000)
        with self._lock:
            api = self._register(project, organization)
            replaced = [label for label in labels if label in api.labels]
            for label in labels:
                api.labels[label] = _LabelDeployment(project=project, vhost=vhost, deployed_at_ms=now)
            api.project = project
            api.last_labels = sorted(api.labels)
            self._changed.notify_all()
        if publish and announce_removal and replaced:
            self.publish(
                "REMOVE_API_FROM_GATEWAY",
                self._deploy_fields(api, replaced),
                organization=organization,
            )
        event_id = str(uuidlib.uuid4())
        if publish:
            self.publish(
                "DEPLOY_API_IN_GATEWAY",
                self._deploy_fields(api, labels),
                organization=organization,
                event_id=event_id,
            )
        return event_id

    def undeploy(
        self,
        api_uuid: str,
        *,
        labels: Iterable[str] = ("Default",),
        organization: str = SUPER_TENANT,
        publish: bool = True,
    ) -> str:
        """Remove the API from ``labels``; publishes ``REMOVE_API_FROM_GATEWAY``; returns the event id."""
        labels = _label_list(labels)
        with self._lock:
            api = self._known(api_uuid)
            for label in labels:
                api.labels.pop(label, None)
            api.last_labels = sorted(api.labels) or list(labels)
            self._changed.notify_all()
        event_id = str(uuidlib.uuid4())
        if publish:
            self.publish(
                "REMOVE_API_FROM_GATEWAY",
                self._deploy_fields(api, labels),
                organization=organization,
                event_id=event_id,
            )
        return event_id

    def deployed(self, api_uuid: str) -> dict[str, str]:
        """``{label: revision}`` currently deployed for an API (empty if none)."""
        with self._lock:
            api = self._apis.get(api_uuid)
            return {label: d.project.revision for label, d in api.labels.items()} if api else {}

    def api_event_fields(self, api_uuid: str, event_type: str) -> dict[str, Any]:
        """Kind-specific event fields for a known API (DEPLOY/REMOVE or API_* kinds).

        ``gatewayLabels`` are the labels the API runs on, or, once undeployed everywhere,
        the labels it was last removed from.
        """
        with self._lock:
            api = self._known(api_uuid)
            if event_type in DEPLOY_EVENTS:
                return self._deploy_fields(api, sorted(api.labels) or api.last_labels)
            if event_type in API_EVENTS:
                project = api.project
                return {
                    "apiId": api.api_id,
                    "uuid": project.uuid,
                    "apiName": project.name,
                    "apiVersion": project.version,
                    "apiContext": project.context,
                    "apiProvider": project.provider,
                    "apiType": project.api_type,
                    "apiStatus": project.lifecycle_status,
                }
        raise ValueError(f"no API fields for event type {event_type!r}")

    def _register(self, project: ApiProjectFiles, organization: str) -> _KnownApi:
        api = self._apis.get(project.uuid)
        if api is None:
            api = _KnownApi(api_id=self._next_api_id, project=project, organization=organization)
            self._next_api_id += 1
            self._apis[project.uuid] = api
        return api

    def _known(self, api_uuid: str) -> _KnownApi:
        api = self._apis.get(api_uuid)
        if api is None:
            raise KeyError(f"unknown API {api_uuid}")
        return api

    @staticmethod
    def _deploy_fields(api: _KnownApi, labels: list[str]) -> dict[str, Any]:
        project = api.project
        return {
            "apiId": api.api_id,
            "uuid": project.uuid,
            "name": project.name,
            "version": project.version,
            "context": project.context,
            "provider": project.provider,
            "apiType": project.api_type,
            "gatewayLabels": list(labels),
        }

    # ------------------------------------------------------------------ events

    def publish(
        self,
        event_type: str,
        fields: Mapping[str, Any],
        *,
        organization: str = SUPER_TENANT,
        tenant_id: int = -1234,
        event_id: str | None = None,
        timestamp_ms: int | None = None,
    ) -> str:
        """Publish one notification envelope on the topic; returns its ``eventId``."""
        event_id = event_id or str(uuidlib.uuid4())
        timestamp_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        event = {
            "eventId": event_id,
            "timeStamp": timestamp_ms,
            "type": event_type,
            "tenantId": tenant_id,
            "tenantDomain": organization,
            **dict(fields),
        }
        body = json.dumps(
            {
                "event": {
                    "payloadData": {
                        "eventType": event_type,
                        "timeStamp": timestamp_ms,
                        "event": base64.b64encode(json.dumps(event).encode("utf-8")).decode("ascii"),
                    }
                }
            }
        )
        with self._lock:
            self.published.append(event)
        if self._publisher is not None:
            self._publisher.send(self.topic, body, {"persistent": "true", "content-type": "application/json"})
        return event_id

    def publish_raw(self, body: str | bytes, headers: Mapping[str, str] | None = None) -> None:
        """Send an arbitrary body on the topic (malformed-message tests)."""
        if self._publisher is None:
            raise RuntimeError("no broker configured")
        self._publisher.send(self.topic, body, dict(headers) if headers is not None else {"persistent": "true"})

    # ------------------------------------------------------------------ failures and waiting

    def fail_requests(
        self, path_suffix: str, *, status: int | None = 500, times: int | None = None, delay: float = 0
    ) -> None:
        """Answer requests whose path ends with ``path_suffix`` with ``status`` after ``delay`` s.

        ``times=None`` fails forever; ``status=None`` only delays, then answers normally.
        """
        with self._lock:
            self._failures.append(_Failure(path_suffix, status, times, delay))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def wait_for_report(self, predicate: ReportPredicate | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Block until a deployment-status report matching ``predicate`` exists; return it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self._find_report(predicate)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching deployment report within {timeout}s: {self.deployment_reports}")
                self._changed.wait(remaining)

    async def wait_for_report_async(
        self, predicate: ReportPredicate | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """``wait_for_report`` for code running on an event loop it must not block."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = self._find_report(predicate)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching deployment report within {timeout}s: {self.deployment_reports}")
            await asyncio.sleep(0.02)

    def _find_report(self, predicate: ReportPredicate | None) -> dict[str, Any] | None:
        for report in self.deployment_reports:
            if predicate is None or predicate(report):
                return report
        return None

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if path.endswith(failure.path_suffix):
                    if failure.remaining is not None:
                        failure.remaining -= 1
                        if failure.remaining <= 0:
                            self._failures.remove(failure)
                    return failure
        return None

    # ------------------------------------------------------------------ HTTP: plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await _json_errors(handler, request)
        entry = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        }
        with self._lock:
            self.requests.append(entry)
        response = await self._answer(request, handler)
        entry["status"] = response.status
        return response

    async def _answer(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        failure = self._take_failure(request.path)
        if failure is not None:
            if failure.delay:
                await asyncio.sleep(failure.delay)
            if failure.status is not None:
                return _error(failure.status, "Injected failure", f"simulated failure for {request.path}")
        if not self._authorized(request.headers.get("Authorization", "")):
            response = _error(401, "Unauthenticated", "Authentication failed: missing or invalid credentials")
            response.headers["WWW-Authenticate"] = 'Basic realm="WSO2 API Manager"'
            return response
        return await _json_errors(handler, request)

    def _authorized(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.username and password == self.password

    # ------------------------------------------------------------------ HTTP: internal data API

    async def _runtime_artifacts(self, request: web.Request) -> web.StreamResponse:
        if not request.query.get("type"):
            return _error(400, "Bad Request", "Missing required query parameter: type")
        labels = _decode_labels(request.query.get("gatewayLabel"))
        if labels is None:
            return _error(400, "Bad Request", "Invalid gatewayLabel: expected base64 of 'label1|label2'")
        api_filter = request.query.get("apiId")
        tenant = request.headers.get("x-wso2-tenant") or SUPER_TENANT
        with self._lock:
            selected = self._deployments_for(set(labels), api_filter, tenant)
            env_properties = dict(self.env_properties)
        if not selected:
            if self.not_deployed_answer == "404":
                return web.json_response(
                    {
                        "code": "NO_API_ARTIFACT_FOUND",
                        "message": "No API artifacts found for the given filter",
                        "description": f"No API artifacts found on {', '.join(labels)}",
                        "moreInfo": "",
                        "error": [],
                    },
                    status=404,
                )
            return web.Response(status=204)
        body = apis_zip(selected, env_properties=env_properties or None)
        return web.Response(
            body=body,
            content_type="application/zip",
            headers={"Content-Disposition": 'attachment; filename="apis.zip"'},
        )

    def _deployments_for(self, labels: set[str], api_filter: str | None, tenant: str) -> list[Deployment]:
        """One ``Deployment`` per (API, revision) running on any of ``labels``."""
        result: list[Deployment] = []
        for api in self._apis.values():
            if api_filter and api.project.uuid != api_filter:
                continue
            if tenant.upper() != "ALL" and api.organization != tenant:
                continue
            by_revision: dict[str, tuple[ApiProjectFiles, list[dict[str, Any]]]] = {}
            for label, deployed in sorted(api.labels.items()):
                if label not in labels:
                    continue
                _, envs = by_revision.setdefault(deployed.project.revision, (deployed.project, []))
                envs.append(gateway_environment(label, vhost=deployed.vhost, deployed_at_ms=deployed.deployed_at_ms))
            for project, envs in by_revision.values():
                result.append(Deployment(project=project, environments=envs, organization=api.organization))
        return result

    async def _notify_status(self, request: web.Request) -> web.StreamResponse:
        try:
            report = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "Bad Request", "Request body is not valid JSON")
        if not isinstance(report, dict):
            return _error(400, "Bad Request", "Request body must be a JSON object")
        is_list = isinstance(report.get("list"), list)
        if self.report_shape == "object" and is_list or self.report_shape == "list" and not is_list:
            expected = "a single report object" if self.report_shape == "object" else "{count, list: [...]}"
            return _error(400, "Bad Request", f"this control plane takes {expected}")
        items = report["list"] if is_list else [report]
        if not all(isinstance(item, dict) for item in items):
            return _error(400, "Bad Request", "every report must be a JSON object")
        with self._lock:
            self.deployment_reports.extend(items)
            self._changed.notify_all()
        return web.json_response({"status": "received"})

    async def _subscriptions(self, request: web.Request) -> web.StreamResponse:
        api_uuid = request.query.get("apiUUID")
        with self._lock:
            items = [s for s in self.subscriptions if not api_uuid or s.get("apiUUID") == api_uuid]
        return web.json_response({"list": items})

    async def _applications(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            return web.json_response({"list": list(self.applications)})

    async def _key_mappings(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            return web.json_response({"list": list(self.key_mappings)})

    async def _subscription_policies(self, request: web.Request) -> web.StreamResponse:
        return self._policies(self.subscription_policies, request.query.get("policyName"))

    async def _api_policies(self, request: web.Request) -> web.StreamResponse:
        return self._policies(self.api_policies, request.query.get("policyName"))

    def _policies(self, policies: list[dict[str, Any]], name: str | None) -> web.Response:
        with self._lock:
            items = [p for p in policies if not name or p.get("name") == name]
        return web.json_response({"count": len(items), "list": items})

    async def _import_api(self, request: web.Request) -> web.StreamResponse:
        """Publisher import of a gateway-created API (multipart field ``file``)."""
        if not request.content_type.startswith("multipart/"):
            return _error(400, "Bad Request", "Expected multipart/form-data with a 'file' part")
        content: bytes | None = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                content = await part.read(decode=False)
        if content is None:
            return _error(400, "Bad Request", "Missing 'file' part")
        try:
            project = project_from_zip(content)
        except (ValueError, KeyError, OSError) as exc:
            return _error(400, "Bad Request", f"Invalid API project: {exc}")
        with self._lock:
            self.imported.append(project)
            api = self._register(project, project.organization)
            api.project = project
        return web.json_response(
            {
                "id": project.uuid,
                "name": project.name,
                "version": project.version,
                "context": project.context,
                "provider": project.provider,
                "lifeCycleStatus": project.lifecycle_status,
                "type": project.api_type,
                "initiatedFromGateway": bool(project.data.get("initiatedFromGateway")),
            }
        )

    # ------------------------------------------------------------------ HTTP: simulator control

    async def _sim_deploy(self, request: web.Request) -> web.StreamResponse:
        """``{sample | files: {path: base64}, revision?, data?, labels?, vhost?, organization?, publish?}``."""
        spec = await _json_object(request)
        if "sample" in spec:
            project = sample_project(str(spec["sample"]))
        elif "files" in spec:
            project = ApiProjectFiles.from_files(
                {path: base64.b64decode(content) for path, content in dict(spec["files"]).items()}
            )
        else:
            raise _BadRequest("give 'sample' or 'files'")
        if spec.get("revision") is not None or spec.get("data"):
            revision = spec.get("revision")
            project = with_changes(
                project,
                revision_id=str(revision) if revision is not None else None,
                data_updates=spec.get("data"),
            )
        kwargs = _deploy_kwargs(spec)
        event_id = await asyncio.to_thread(self.deploy, project, **kwargs)
        return web.json_response({"eventId": event_id, "uuid": project.uuid, "revision": project.revision})

    async def _sim_undeploy(self, request: web.Request) -> web.StreamResponse:
        """``{uuid, labels?, organization?, publish?}``."""
        spec = await _json_object(request)
        kwargs = _deploy_kwargs(spec)
        kwargs.pop("vhost", None)
        kwargs.pop("announce_removal", None)
        try:
            event_id = await asyncio.to_thread(self.undeploy, str(spec["uuid"]), **kwargs)
        except KeyError as exc:
            raise _BadRequest(str(exc)) from exc
        return web.json_response({"eventId": event_id})

    async def _sim_publish(self, request: web.Request) -> web.StreamResponse:
        """``{eventType, fields?, organization?, tenantId?}``; ``fields`` default to the API's own."""
        spec = await _json_object(request)
        event_type = str(spec["eventType"])
        fields = spec.get("fields")
        if fields is None:
            fields = self.api_event_fields(str(spec["uuid"]), event_type)
        event_id = await asyncio.to_thread(
            self.publish,
            event_type,
            dict(fields),
            organization=str(spec.get("organization", SUPER_TENANT)),
            tenant_id=int(spec.get("tenantId", -1234)),
        )
        return web.json_response({"eventId": event_id})

    async def _sim_reports(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            return web.json_response(list(self.deployment_reports))

    async def _sim_requests(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            return web.json_response(list(self.requests))

    async def _sim_state(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            state = {
                uuid: {
                    "apiId": api.api_id,
                    "name": api.project.name,
                    "version": api.project.version,
                    "organization": api.organization,
                    "deployed": {label: d.project.revision for label, d in api.labels.items()},
                }
                for uuid, api in self._apis.items()
            }
        return web.json_response(state)

    async def _sim_failures(self, request: web.Request) -> web.StreamResponse:
        """``{path_suffix, status?, times?, delay?}``."""
        spec = await _json_object(request)
        self.fail_requests(
            str(spec["path_suffix"]),
            status=spec.get("status", 500),
            times=spec.get("times"),
            delay=float(spec.get("delay", 0)),
        )
        return web.json_response({"ok": True})

    async def _sim_clear_failures(self, request: web.Request) -> web.StreamResponse:
        self.clear_failures()
        return web.json_response({"ok": True})


class _BadRequest(Exception):
    """A malformed request to a simulator endpoint."""


async def _json_errors(handler: Callable[[web.Request], Any], request: web.Request) -> web.StreamResponse:
    """Turn client mistakes into the CP's JSON error shape instead of aiohttp's HTML page."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException:
        raise
    except (_BadRequest, KeyError, ValueError, TypeError) as exc:
        return _error(400, "Bad Request", str(exc))
    except ConnectionError as exc:
        return _error(502, "Bad Gateway", str(exc))


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise _BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return body


def _deploy_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "labels": _label_list(spec.get("labels") or ["Default"]),
        "organization": str(spec.get("organization", SUPER_TENANT)),
        "publish": bool(spec.get("publish", True)),
        "announce_removal": bool(spec.get("announce_removal", False)),
    }
    if spec.get("vhost"):
        kwargs["vhost"] = str(spec["vhost"])
    return kwargs


def _label_list(labels: Iterable[str] | str) -> list[str]:
    if isinstance(labels, str):
        labels = [part for part in labels.split(",")]
    result = [label.strip() for label in labels if label and label.strip()]
    if not result:
        raise ValueError("at least one gateway label is required")
    return result


def _decode_labels(value: str | None) -> list[str] | None:
    """Decode ``gatewayLabel`` (base64 of ``l1|l2``); ``None`` when absent or invalid."""
    if not value:
        return None
    # A client that does not percent-encode '+' has it turned into a space by query parsing.
    cleaned = value.replace(" ", "+").strip()
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        text = base64.b64decode(cleaned, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    labels = [label for label in text.split("|") if label]
    return labels or None


def _error(status: int, message: str, description: str) -> web.Response:
    """The internal API's ``ErrorDTO`` shape."""
    return web.json_response(
        {"code": status, "message": message, "description": description, "moreInfo": "", "error": []},
        status=status,
    )


def _default_subscription_policy(name: str) -> dict[str, Any]:
    return {
        "id": 1,
        "tenantId": -1234,
        "name": name,
        "displayName": name,
        "tenantDomain": SUPER_TENANT,
        "quotaType": "requestCount",
        "rateLimitCount": -1,
        "rateLimitTimeUnit": "NA",
        "stopOnQuotaReach": True,
        "graphQLMaxComplexity": 0,
        "graphQLMaxDepth": 0,
        "defaultLimit": {
            "quotaType": "requestCount",
            "requestCount": {"requestCount": 2147483647, "timeUnit": "min", "unitTime": 1},
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the simulator in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m harness.control_plane", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--broker", default="stomp://127.0.0.1:61613", help="STOMP URL, or 'none'")
    parser.add_argument("--topic", default="/topic/notification")
    parser.add_argument("--broker-username", default="")
    parser.add_argument("--broker-password", default="")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--sample", action="append", default=[], help="sample to deploy at start (repeatable)")
    parser.add_argument("--labels", default="Default", help="comma-separated gateway labels for --sample")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    sim = ControlPlaneSimulator(
        username=args.username,
        password=args.password,
        broker_url=None if args.broker.lower() == "none" else args.broker,
        topic=args.topic,
        broker_username=args.broker_username,
        broker_password=args.broker_password,
    )
    url = sim.start(args.host, args.port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        for name in args.sample:
            project = sample_project(name)
            try:
                sim.deploy(project, labels=_label_list(args.labels))
                log.info("deployed sample %s (%s) on %s", name, project.uuid, args.labels)
            except ConnectionError as exc:
                log.warning("sample %s recorded but its event was not published: %s", name, exc)
        print(f"control plane simulator listening on {url}", flush=True)
        stop.wait()
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
