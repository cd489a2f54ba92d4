"""A WSO2 API Manager (control plane) simulator for tests, benchmarks and the demo.

It serves the internal data REST API the agent calls and publishes notification events
on a STOMP broker, both shaped as control-plane.md describes, from an in-memory truth
that tests drive (``deploy``/``undeploy`` for APIs; ``create_application``, ``add_key``,
``subscribe``, ``add_subscription_policy`` and their updates and deletions for consumers)
and inspect (``deployment_reports``, ``requests``, ``published``). Failure injection lets
tests see how the agent copes with a flaky CP.

Consumers (applications, key mappings, subscriptions, tiers) are held per organization
(tenant domain) and served by the internal lists exactly as
``../shared/reference/applications-subscriptions.md`` (sections 1 and 2) describes: the
control plane's own field names, its filters (and the filters it ignores), its two tenant
headers. Every change publishes the event the real CP sends for it, unless ``publish=False``
(the truth then changes while "the agent is down").

Run it standalone for the demo::

    python -m harness.control_plane --port 9443 --broker stomp://127.0.0.1:61613 \\
        --sample pizzashack --labels Default
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import copy
import json
import logging
import secrets
import signal
import string
import threading
import time
import uuid as uuidlib
from collections import deque
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
SUPER_TENANT_ID = -1234
ALL_TENANTS = "ALL"

APPLICATION_EVENTS = frozenset({"APPLICATION_CREATE", "APPLICATION_UPDATE", "APPLICATION_DELETE"})
KEY_MAPPING_EVENTS = frozenset({"APPLICATION_REGISTRATION_CREATE", "REMOVE_APPLICATION_KEYMAPPING"})
SUBSCRIPTION_EVENTS = frozenset({"SUBSCRIPTIONS_CREATE", "SUBSCRIPTIONS_UPDATE", "SUBSCRIPTIONS_DELETE"})
POLICY_EVENTS = frozenset({"POLICY_CREATE", "POLICY_UPDATE", "POLICY_DELETE"})
SUBSCRIPTION_STATES = frozenset(
    {"UNBLOCKED", "BLOCKED", "PROD_ONLY_BLOCKED", "ON_HOLD", "TIER_UPDATE_PENDING", "REJECTED"}
)
KEY_TYPES = frozenset({"PRODUCTION", "SANDBOX"})
# Subscription fields only newer control planes send (``legacy_subscription_fields`` drops them).
NEWER_SUBSCRIPTION_FIELDS = ("apiName", "apiVersion", "apiOrganization", "applicationOrganization")
# Which consumer kind an event of each type is about, and the aliases ``consumer_event`` accepts.
_CONSUMER_KINDS = {
    "application": APPLICATION_EVENTS,
    "key_mapping": KEY_MAPPING_EVENTS,
    "subscription": SUBSCRIPTION_EVENTS,
    "subscription_policy": POLICY_EVENTS,
    "application_policy": POLICY_EVENTS,
    "api_policy": POLICY_EVENTS,
}
_KIND_ALIASES = {"key": "key_mapping", "tier": "subscription_policy", "policy": "subscription_policy"}
_POLICY_TYPES = {"subscription_policy": "SUBSCRIPTION", "application_policy": "APPLICATION", "api_policy": "API"}
# The quota member of ``defaultLimit`` for each ``quotaType``.
_QUOTA_MEMBERS = {
    "requestCount": "requestCount",
    "bandwidthVolume": "bandwidth",
    "eventCount": "eventCount",
    "aiApiQuota": "aiApiQuota",
}
_UNLIMITED_REQUESTS = 2147483647
_POLICY_CHANGES = frozenset(
    {
        "request_count", "time_unit", "unit_time", "quota_type", "burst", "stop_on_quota_reach",
        "bandwidth", "ai_quota", "graphql_max_depth", "graphql_max_complexity", "display_name",
    }
)  # fmt: skip
_APPLICATION_CHANGES = {
    "name": "name",
    "owner": "subName",
    "policy": "policy",
    "token_type": "tokenType",
    "attributes": "attributes",
    "group_ids": "groupIds",
}
# The list endpoints: which tenant header selects the organization on each, and whether ALL works.
_LIST_TENANT_HEADER = {
    "subscriptions": "x-wso2-tenant",
    "applications": "x-wso2-tenant",
    "application-key-mappings": "x-wso2-tenant",
    "subscription-policies": "xWSO2Tenant",
    "application-policies": "xWSO2Tenant",
    "api-policies": "xWSO2Tenant",
}

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


@dataclass
class ConsumerTruth:
    """What the control plane holds about one organization's consumers.

    Every item is kept in the shape the internal list serves it (the CP's field names), so a
    test may read, append or assign items directly; the public methods of the simulator keep
    ids and cross-references consistent and publish events, direct edits do neither.
    """

    organization: str
    tenant_id: int
    applications: list[dict[str, Any]] = field(default_factory=list)
    key_mappings: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    subscription_policies: list[dict[str, Any]] = field(default_factory=list)
    application_policies: list[dict[str, Any]] = field(default_factory=list)
    api_policies: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "tenantId": self.tenant_id,
            "applications": copy.deepcopy(self.applications),
            "keyMappings": copy.deepcopy(self.key_mappings),
            "subscriptions": copy.deepcopy(self.subscriptions),
            "subscriptionPolicies": copy.deepcopy(self.subscription_policies),
            "applicationPolicies": copy.deepcopy(self.application_policies),
            "apiPolicies": copy.deepcopy(self.api_policies),
        }


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
        self.env_properties: dict[str, Any] = {}
        # How "nothing deployed for that filter" is answered: 204 in some CP versions, 404 with
        # the error code NO_API_ARTIFACT_FOUND in others.
        self.not_deployed_answer: Literal["204", "404"] = "204"
        # The body notify-api-deployment-status takes: one report object, ``{count, list}``, or either.
        self.report_shape: Literal["object", "list", "any"] = "any"
        # Older control planes: subscriptions (list items and events) without apiName, apiVersion,
        # apiOrganization and applicationOrganization.
        self.legacy_subscription_fields = False
        # List endpoints (path suffixes, e.g. "subscriptions") that answer an empty list whatever
        # the truth: some CP versions do so for a filter they do not support.
        self.empty_lists: set[str] = set()
        # Like API Manager's event publisher, keep events the broker cannot take (it is down) and
        # send them, in order, once it answers; off: ``publish`` raises ConnectionError instead.
        self.buffer_events = False

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._apis: dict[str, _KnownApi] = {}
        self._next_api_id = 1
        self._api_ids: dict[str, int] = {}  # every API UUID the CP has an id for, deployed or only subscribed to
        self._next_app_id = 1
        self._next_subscription_id = 1
        self._next_policy_id = {"SUBSCRIPTION": 1, "APPLICATION": 1, "API": 1}
        self._tenant_ids: dict[str, int] = {SUPER_TENANT: SUPER_TENANT_ID}
        self._consumers: dict[str, ConsumerTruth] = {}
        self._organization(SUPER_TENANT)
        self._failures: list[_Failure] = []
        self._outbox: deque[str] = deque()
        self._outbox_changed = threading.Condition()
        self._outbox_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._publisher = _StompPublisher(broker_url, broker_username, broker_password) if broker_url else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ carbon.super's consumer lists
    # Kept as attributes for tests that assign or append items directly (no events, no ids).

    @property
    def subscriptions(self) -> list[dict[str, Any]]:
        return self._consumers[SUPER_TENANT].subscriptions

    @subscriptions.setter
    def subscriptions(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._consumers[SUPER_TENANT].subscriptions = items

    @property
    def applications(self) -> list[dict[str, Any]]:
        return self._consumers[SUPER_TENANT].applications

    @applications.setter
    def applications(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._consumers[SUPER_TENANT].applications = items

    @property
    def key_mappings(self) -> list[dict[str, Any]]:
        return self._consumers[SUPER_TENANT].key_mappings

    @key_mappings.setter
    def key_mappings(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._consumers[SUPER_TENANT].key_mappings = items

    @property
    def subscription_policies(self) -> list[dict[str, Any]]:
        return self._consumers[SUPER_TENANT].subscription_policies

    @subscription_policies.setter
    def subscription_policies(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._consumers[SUPER_TENANT].subscription_policies = items

    @property
    def application_policies(self) -> list[dict[str, Any]]:
        return self._consumers[SUPER_TENANT].application_policies

    @application_policies.setter
    def application_policies(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._consumers[SUPER_TENANT].application_policies = items

    @property
    def api_policies(self) -> list[dict[str, Any]]:
        return self._consumers[SUPER_TENANT].api_policies

    @api_policies.setter
    def api_policies(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._consumers[SUPER_TENANT].api_policies = items

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
        self._closing.set()
        with self._outbox_changed:
            draining, self._outbox_thread = self._outbox_thread, None
        if draining is not None:
            draining.join(timeout=10)
        self._closing.clear()
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
        app.router.add_get(INTERNAL_PREFIX + "application-policies", self._application_policies)
        app.router.add_get(INTERNAL_PREFIX + "api-policies", self._api_policies)
        app.router.add_post("/api/am/publisher/v4/apis/import", self._import_api)
        app.router.add_post("/_sim/deploy", self._sim_deploy)
        app.router.add_post("/_sim/undeploy", self._sim_undeploy)
        app.router.add_post("/_sim/publish", self._sim_publish)
        app.router.add_post("/_sim/consumers", self._sim_consumers)
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
            api = _KnownApi(api_id=self._api_id(project.uuid), project=project, organization=organization)
            self._apis[project.uuid] = api
        return api

    def _api_id(self, api_uuid: str) -> int:
        """The CP's integer id of an API, allocated on first sight (deploy, import or subscription)."""
        api_id = self._api_ids.get(api_uuid)
        if api_id is None:
            api_id = self._api_ids[api_uuid] = self._next_api_id
            self._next_api_id += 1
        return api_id

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

    # ------------------------------------------------------------------ consumers: truth

    def tenant_id(self, organization: str) -> int:
        """The tenant id events of ``organization`` carry: -1234 for carbon.super, 1, 2, ... for others."""
        with self._lock:
            tenant_id = self._tenant_ids.get(organization)
            if tenant_id is None:
                tenant_id = self._tenant_ids[organization] = len(self._tenant_ids)
            return tenant_id

    def consumer_truth(self, organization: str = SUPER_TENANT) -> ConsumerTruth:
        """The live consumer truth of ``organization`` (created, with its default tiers, on first use)."""
        with self._lock:
            return self._organization(organization)

    def _organization(self, organization: str) -> ConsumerTruth:
        truth = self._consumers.get(organization)
        if truth is None:
            tenant_id = self.tenant_id(organization)
            truth = ConsumerTruth(organization=organization, tenant_id=tenant_id)
            # Every tenant starts with the default Unlimited tiers, as APIM creates them.
            truth.subscription_policies.append(
                _default_subscription_policy("Unlimited", organization, tenant_id, self._policy_id("SUBSCRIPTION"))
            )
            truth.application_policies.append(
                _default_application_policy("Unlimited", organization, tenant_id, self._policy_id("APPLICATION"))
            )
            self._consumers[organization] = truth
        return truth

    def _policy_id(self, policy_type: str) -> int:
        policy_id = self._next_policy_id[policy_type]
        self._next_policy_id[policy_type] += 1
        return policy_id

    def create_application(
        self,
        name: str,
        *,
        owner: str = "admin",
        policy: str = "Unlimited",
        attributes: Mapping[str, str] | None = None,
        uuid: str | None = None,
        token_type: str = "JWT",
        group_ids: Iterable[str] = (),
        organization: str = SUPER_TENANT,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Create an application; publishes ``APPLICATION_CREATE``; returns its list item."""
        with self._lock:
            truth = self._organization(organization)
            uuid = uuid or str(uuidlib.uuid4())
            if any(a.get("uuid") == uuid for t in self._consumers.values() for a in t.applications):
                raise ValueError(f"application {uuid} already exists")
            app_id = self._next_app_id
            self._next_app_id += 1
            item = {
                "uuid": uuid,
                "id": app_id,
                "name": name,
                "subName": owner,
                "policy": policy,
                "tokenType": token_type,
                "groupIds": [{"groupId": group, "applicationId": app_id} for group in group_ids],
                "attributes": dict(attributes or {}),
                "organization": organization,
            }
            truth.applications.append(item)
            result = copy.deepcopy(item)
        self._announce(publish, "application", result, "APPLICATION_CREATE", organization)
        return result

    def update_application(
        self, uuid: str, *, organization: str = SUPER_TENANT, publish: bool = True, **changes: Any
    ) -> dict[str, Any]:
        """Change an application (``name``, ``owner``, ``policy``, ``token_type``, ``attributes``,
        ``group_ids``); publishes ``APPLICATION_UPDATE``; returns its list item."""
        unknown = set(changes) - set(_APPLICATION_CHANGES)
        if unknown:
            raise TypeError(f"update_application() cannot change {sorted(unknown)}")
        with self._lock:
            item = self._find(self._organization(organization).applications, "uuid", uuid, "application")
            for arg, value in changes.items():
                if arg == "group_ids":
                    value = [{"groupId": group, "applicationId": item.get("id")} for group in value]
                elif arg == "attributes":
                    value = dict(value or {})
                item[_APPLICATION_CHANGES[arg]] = value
            result = copy.deepcopy(item)
        self._announce(publish, "application", result, "APPLICATION_UPDATE", organization)
        return result

    def delete_application(
        self, uuid: str, *, organization: str = SUPER_TENANT, publish: bool = True
    ) -> dict[str, Any]:
        """Delete an application with its key mappings and subscriptions; returns its list item.

        Like APIM, only ``APPLICATION_DELETE`` is published: the key mappings and subscriptions
        go from the truth (and the lists) without ``REMOVE_APPLICATION_KEYMAPPING`` or
        ``SUBSCRIPTIONS_DELETE`` events.
        """
        with self._lock:
            truth = self._organization(organization)
            item = self._find(truth.applications, "uuid", uuid, "application")
            truth.applications.remove(item)
            truth.key_mappings[:] = [m for m in truth.key_mappings if m.get("applicationUUID") != uuid]
            truth.subscriptions[:] = [s for s in truth.subscriptions if s.get("applicationUUID") != uuid]
            result = copy.deepcopy(item)
        self._announce(publish, "application", result, "APPLICATION_DELETE", organization)
        return result

    def add_key(
        self,
        application_uuid: str,
        *,
        key_type: str = "PRODUCTION",
        consumer_key: str | None = None,
        key_manager: str = "Resident Key Manager",
        organization: str = SUPER_TENANT,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Map a consumer key (OAuth client id) to an application; publishes
        ``APPLICATION_REGISTRATION_CREATE``; returns the key-mapping list item.

        One key per (application, key type, key manager), as in APIM; the consumer key is a
        random 28-character one unless given.
        """
        if key_type not in KEY_TYPES:
            raise ValueError(f"key type must be one of {sorted(KEY_TYPES)}, got {key_type!r}")
        with self._lock:
            truth = self._organization(organization)
            app = self._find(truth.applications, "uuid", application_uuid, "application")
            for mapping in truth.key_mappings:
                if (
                    mapping.get("applicationUUID") == application_uuid
                    and mapping.get("keyType") == key_type
                    and mapping.get("keyManager") == key_manager
                ):
                    raise ValueError(f"application {application_uuid} already has a {key_type} key of {key_manager}")
            item = {
                "applicationId": app.get("id"),
                "applicationUUID": app.get("uuid"),
                "consumerKey": consumer_key or _consumer_key(),
                "keyType": key_type,
                "keyManager": key_manager,
            }
            truth.key_mappings.append(item)
            result = copy.deepcopy(item)
        self._announce(publish, "key_mapping", result, "APPLICATION_REGISTRATION_CREATE", organization)
        return result

    def remove_key(
        self, application_uuid: str, consumer_key: str, *, organization: str = SUPER_TENANT, publish: bool = True
    ) -> dict[str, Any]:
        """Remove a key mapping; publishes ``REMOVE_APPLICATION_KEYMAPPING``; returns the removed item."""
        with self._lock:
            truth = self._organization(organization)
            for item in truth.key_mappings:
                if item.get("applicationUUID") == application_uuid and item.get("consumerKey") == consumer_key:
                    truth.key_mappings.remove(item)
                    result = copy.deepcopy(item)
                    break
            else:
                raise KeyError(f"application {application_uuid} has no key {consumer_key}")
        self._announce(publish, "key_mapping", result, "REMOVE_APPLICATION_KEYMAPPING", organization)
        return result

    def subscribe(
        self,
        application_uuid: str,
        api_uuid: str,
        *,
        policy: str = "Unlimited",
        state: str = "UNBLOCKED",
        uuid: str | None = None,
        api_name: str | None = None,
        api_version: str | None = None,
        organization: str = SUPER_TENANT,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Subscribe an application of ``organization`` to an API; publishes ``SUBSCRIPTIONS_CREATE``;
        returns the subscription list item.

        ``apiId`` is the API's id (allocated now if the simulator has not seen the API yet);
        ``apiName``/``apiVersion`` default to those of the API if the simulator knows it (deployed
        or imported), else they stay null until it does. The tier need not exist.
        """
        _check_state(state)
        with self._lock:
            truth = self._organization(organization)
            app = self._find(truth.applications, "uuid", application_uuid, "application")
            for existing in truth.subscriptions:
                if existing.get("applicationUUID") == application_uuid and existing.get("apiUUID") == api_uuid:
                    raise ValueError(f"application {application_uuid} is already subscribed to API {api_uuid}")
            known = self._apis.get(api_uuid)
            subscription_id = self._next_subscription_id
            self._next_subscription_id += 1
            item = {
                "subscriptionUUID": uuid or str(uuidlib.uuid4()),
                "subscriptionId": subscription_id,
                "policyId": policy,
                "apiUUID": api_uuid,
                "apiId": self._api_id(api_uuid),
                "applicationUUID": app.get("uuid"),
                "appId": app.get("id"),
                "subscriptionState": state,
                "apiName": api_name if api_name is not None else (known.project.name if known else None),
                "apiVersion": api_version if api_version is not None else (known.project.version if known else None),
                "apiOrganization": known.organization if known else None,
                "applicationOrganization": organization,
            }
            truth.subscriptions.append(item)
            result = self._render_subscription(item)
        self._announce(publish, "subscription", result, "SUBSCRIPTIONS_CREATE", organization)
        return result

    def update_subscription(
        self,
        uuid: str,
        *,
        policy: str | None = None,
        state: str | None = None,
        organization: str = SUPER_TENANT,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Change a subscription's tier and/or state; publishes ``SUBSCRIPTIONS_UPDATE``."""
        if state is not None:
            _check_state(state)
        with self._lock:
            item = self._find(self._organization(organization).subscriptions, "subscriptionUUID", uuid, "subscription")
            if policy is not None:
                item["policyId"] = policy
            if state is not None:
                item["subscriptionState"] = state
            result = self._render_subscription(item)
        self._announce(publish, "subscription", result, "SUBSCRIPTIONS_UPDATE", organization)
        return result

    def unsubscribe(self, uuid: str, *, organization: str = SUPER_TENANT, publish: bool = True) -> dict[str, Any]:
        """Remove a subscription; publishes ``SUBSCRIPTIONS_DELETE``; returns the removed item."""
        with self._lock:
            truth = self._organization(organization)
            item = self._find(truth.subscriptions, "subscriptionUUID", uuid, "subscription")
            truth.subscriptions.remove(item)
            result = self._render_subscription(item)
        self._announce(publish, "subscription", result, "SUBSCRIPTIONS_DELETE", organization)
        return result

    def add_subscription_policy(
        self,
        name: str,
        *,
        request_count: int = 100,
        time_unit: str = "min",
        unit_time: int = 1,
        quota_type: str = "requestCount",
        burst: tuple[int, str] | None = None,
        stop_on_quota_reach: bool = True,
        bandwidth: tuple[int, str] | None = None,
        ai_quota: Mapping[str, int] | None = None,
        graphql_max_depth: int = 0,
        graphql_max_complexity: int = 0,
        organization: str = SUPER_TENANT,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Create a subscription tier; publishes ``POLICY_CREATE`` (``policyType: SUBSCRIPTION``,
        without the quota, as the CP does); returns its list item.

        ``request_count`` per ``unit_time`` ``time_unit`` is the quota (the event count for
        ``eventCount`` tiers, the request count of ``aiApiQuota`` tiers); ``burst=(count, unit)``
        the burst limit (``rateLimitCount``/``rateLimitTimeUnit``); ``bandwidth=(amount, "MB")``
        makes a ``bandwidthVolume`` tier and ``ai_quota={"totalTokenCount": ..,
        "promptTokenCount": .., "completionTokenCount": ..}`` an ``aiApiQuota`` one when
        ``quota_type`` is left at its default.
        """
        if quota_type == "requestCount" and bandwidth is not None:
            quota_type = "bandwidthVolume"
        elif quota_type == "requestCount" and ai_quota is not None:
            quota_type = "aiApiQuota"
        params = {
            "request_count": request_count, "time_unit": time_unit, "unit_time": unit_time,
            "quota_type": quota_type, "burst": burst, "stop_on_quota_reach": stop_on_quota_reach,
            "bandwidth": bandwidth, "ai_quota": ai_quota, "graphql_max_depth": graphql_max_depth,
            "graphql_max_complexity": graphql_max_complexity, "display_name": name,
        }  # fmt: skip
        with self._lock:
            truth = self._organization(organization)
            if any(p.get("name") == name for p in truth.subscription_policies):
                raise ValueError(f"subscription tier {name!r} already exists in {organization}")
            item = _subscription_policy_item(
                name, organization, truth.tenant_id, self._policy_id("SUBSCRIPTION"), params
            )
            truth.subscription_policies.append(item)
            result = copy.deepcopy(item)
        self._announce(publish, "subscription_policy", result, "POLICY_CREATE", organization)
        return result

    def update_subscription_policy(
        self, name: str, *, organization: str = SUPER_TENANT, publish: bool = True, **changes: Any
    ) -> dict[str, Any]:
        """Change a subscription tier (the keyword arguments of ``add_subscription_policy``);
        publishes ``POLICY_UPDATE``; returns its list item. The tier keeps its id."""
        unknown = set(changes) - _POLICY_CHANGES
        if unknown:
            raise TypeError(f"update_subscription_policy() cannot change {sorted(unknown)}")
        if "quota_type" not in changes:
            if changes.get("bandwidth") is not None:
                changes["quota_type"] = "bandwidthVolume"
            elif changes.get("ai_quota") is not None:
                changes["quota_type"] = "aiApiQuota"
        with self._lock:
            truth = self._organization(organization)
            item = self._find(truth.subscription_policies, "name", name, "subscription tier")
            params = {**_subscription_policy_params(item), **changes}
            updated = _subscription_policy_item(
                name, organization, truth.tenant_id, item.get("id") or self._policy_id("SUBSCRIPTION"), params
            )
            item.clear()
            item.update(updated)
            result = copy.deepcopy(item)
        self._announce(publish, "subscription_policy", result, "POLICY_UPDATE", organization)
        return result

    def delete_subscription_policy(
        self, name: str, *, organization: str = SUPER_TENANT, publish: bool = True
    ) -> dict[str, Any]:
        """Delete a subscription tier; publishes ``POLICY_DELETE``; returns the removed item.

        Subscriptions on the tier are left alone (they keep naming it)."""
        with self._lock:
            truth = self._organization(organization)
            item = self._find(truth.subscription_policies, "name", name, "subscription tier")
            truth.subscription_policies.remove(item)
            result = copy.deepcopy(item)
        self._announce(publish, "subscription_policy", result, "POLICY_DELETE", organization)
        return result

    def consumer_event(self, kind: str, item: Mapping[str, Any], event_type: str) -> dict[str, Any]:
        """The kind-specific fields of the event the CP sends about ``item`` (a list item).

        ``kind`` is ``application``, ``key_mapping`` (``key``), ``subscription``,
        ``subscription_policy`` (``tier``), ``application_policy`` or ``api_policy``. Pass the
        result to ``publish`` (with the item's organization) to send an event without changing
        the truth: a late, duplicated or out-of-order one, or one about an item already gone.
        """
        kind = _KIND_ALIASES.get(kind, kind)
        expected = _CONSUMER_KINDS.get(kind)
        if expected is None:
            raise ValueError(f"unknown consumer kind {kind!r}; one of {sorted(_CONSUMER_KINDS)}")
        if event_type not in expected:
            raise ValueError(f"{event_type} is not an event about a {kind}; one of {sorted(expected)}")
        if kind == "application":
            return {
                "applicationId": item.get("id"),
                "uuid": item.get("uuid"),
                "applicationName": item.get("name"),
                "tokenType": item.get("tokenType"),
                "applicationPolicy": item.get("policy"),
                "groupId": ",".join(_group_names(item.get("groupIds"))),
                "attributes": dict(item.get("attributes") or {}),
                "subscriber": item.get("subName"),
            }
        if kind == "key_mapping":
            return {
                "applicationId": item.get("applicationId"),
                "applicationUUID": item.get("applicationUUID"),
                "consumerKey": item.get("consumerKey"),
                "keyType": item.get("keyType"),
                "keyManager": item.get("keyManager"),
            }
        if kind == "subscription":
            with self._lock:
                rendered = self._render_subscription(item)
            fields = {
                "subscriptionId": rendered.get("subscriptionId"),
                "subscriptionUUID": rendered.get("subscriptionUUID"),
                "apiId": rendered.get("apiId"),
                "apiUUID": rendered.get("apiUUID"),
                "applicationId": rendered.get("appId"),
                "applicationUUID": rendered.get("applicationUUID"),
                "policyId": rendered.get("policyId"),
                "subscriptionState": rendered.get("subscriptionState"),
            }
            if not self.legacy_subscription_fields:
                fields["apiName"] = rendered.get("apiName")
                fields["apiVersion"] = rendered.get("apiVersion")
            return fields
        fields = {
            "policyId": item.get("id"),
            "policyName": item.get("name"),
            "quotaType": item.get("quotaType") or (item.get("defaultLimit") or {}).get("quotaType"),
            "policyType": _POLICY_TYPES[kind],
        }
        if kind == "subscription_policy":
            fields.update(
                {
                    "rateLimitCount": item.get("rateLimitCount"),
                    "rateLimitTimeUnit": item.get("rateLimitTimeUnit"),
                    "stopOnQuotaReach": item.get("stopOnQuotaReach"),
                    "graphQLMaxDepth": item.get("graphQLMaxDepth"),
                    "graphQLMaxComplexity": item.get("graphQLMaxComplexity"),
                    "subscriberCount": 0,
                }
            )
        elif kind == "api_policy":
            groups = [g.get("conditionGroupId") for g in item.get("conditionGroups") or [] if isinstance(g, dict)]
            fields.update({"addedConditionGroupIds": groups, "deletedConditionGroupIds": []})
        return fields

    def _announce(self, publish: bool, kind: str, item: dict[str, Any], event_type: str, organization: str) -> None:
        if publish:
            self.publish(event_type, self.consumer_event(kind, item, event_type), organization=organization)

    @staticmethod
    def _find(items: list[dict[str, Any]], key: str, value: str, what: str) -> dict[str, Any]:
        for item in items:
            if item.get(key) == value:
                return item
        raise KeyError(f"unknown {what} {value}")

    def _render_subscription(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """A subscription as the list serves it: API names filled in once the API is known."""
        rendered = copy.deepcopy(dict(item))
        known = self._apis.get(str(rendered.get("apiUUID") or ""))
        if known is not None:
            if rendered.get("apiName") is None and "apiName" in rendered:
                rendered["apiName"] = known.project.name
            if rendered.get("apiVersion") is None and "apiVersion" in rendered:
                rendered["apiVersion"] = known.project.version
            if rendered.get("apiOrganization") is None and "apiOrganization" in rendered:
                rendered["apiOrganization"] = known.organization
        if self.legacy_subscription_fields:
            for name in NEWER_SUBSCRIPTION_FIELDS:
                rendered.pop(name, None)
        return rendered

    # ------------------------------------------------------------------ events

    def publish(
        self,
        event_type: str,
        fields: Mapping[str, Any],
        *,
        organization: str = SUPER_TENANT,
        tenant_id: int | None = None,
        event_id: str | None = None,
        timestamp_ms: int | None = None,
    ) -> str:
        """Publish one notification envelope on the topic; returns its ``eventId``.

        ``tenant_id`` defaults to the organization's (``tenant_id(organization)``).
        """
        event_id = event_id or str(uuidlib.uuid4())
        tenant_id = self.tenant_id(organization) if tenant_id is None else tenant_id
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
            self._send_event(body)
        return event_id

    @property
    def outbox_size(self) -> int:
        """Events kept while the broker is down (``buffer_events``), not yet sent."""
        with self._outbox_changed:
            return len(self._outbox)

    def wait_outbox_empty(self, timeout: float = 30.0) -> None:
        """Block until every kept event has been sent; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._outbox_changed:
            while self._outbox:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._outbox)} event(s) still unsent after {timeout:g}s")
                self._outbox_changed.wait(remaining)

    _EVENT_HEADERS = {"persistent": "true", "content-type": "application/json"}

    def _send_event(self, body: str) -> None:
        assert self._publisher is not None
        with self._outbox_changed:
            if self.buffer_events and self._outbox:  # behind events still waiting: keep the order
                self._outbox.append(body)
                self._start_draining()
                return
        try:
            self._publisher.send(self.topic, body, self._EVENT_HEADERS)
        except ConnectionError as exc:
            if not self.buffer_events:
                raise
            log.warning("broker unavailable (%s); event kept and re-sent when it answers", exc)
            with self._outbox_changed:
                self._outbox.append(body)
                self._start_draining()

    def _start_draining(self) -> None:
        """With ``_outbox_changed`` held: a thread sends the kept events unless one already does."""
        if self._outbox_thread is None:
            self._outbox_thread = threading.Thread(target=self._drain_outbox, name="cp-outbox", daemon=True)
            self._outbox_thread.start()

    def _drain_outbox(self) -> None:
        """Send kept events oldest first, retrying with backoff (at most 2 s apart) until all went."""
        assert self._publisher is not None
        delay = 0.2
        while not self._closing.is_set():
            with self._outbox_changed:
                if not self._outbox:
                    self._outbox_thread = None
                    return
                body = self._outbox[0]
            try:
                self._publisher.send(self.topic, body, self._EVENT_HEADERS)
            except ConnectionError:
                self._closing.wait(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.2
            with self._outbox_changed:
                self._outbox.popleft()
                self._outbox_changed.notify_all()

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

    def _tenant(self, request: web.Request, endpoint: str) -> str:
        """The organization a list request selects: its endpoint's tenant header, else carbon.super."""
        return request.headers.get(_LIST_TENANT_HEADER[endpoint]) or SUPER_TENANT

    def _selected(self, request: web.Request, endpoint: str) -> list[ConsumerTruth]:
        """The organizations' truths a list request reads (``ALL`` only where the CP supports it)."""
        tenant = self._tenant(request, endpoint)
        if tenant.upper() == ALL_TENANTS and _LIST_TENANT_HEADER[endpoint] == "x-wso2-tenant":
            return list(self._consumers.values())
        truth = self._consumers.get(tenant)
        return [truth] if truth is not None else []

    def _list_answer(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        """``{count, list, pagination: null}``, or an empty one where ``empty_lists`` says so."""
        if any(request.path.endswith(suffix) for suffix in self.empty_lists):
            items = []
        return web.json_response({"count": len(items), "list": items, "pagination": None})

    async def _subscriptions(self, request: web.Request) -> web.StreamResponse:
        """Filters only by a whole pair, ``apiUUID``+``applicationUUID`` or ``apiId``+``appId``, and
        then, like the CP, across organizations; one id of a pair alone is ignored."""
        query = request.query
        api_uuid, app_uuid = query.get("apiUUID"), query.get("applicationUUID")
        api_id, app_id = _int_param(query, "apiId"), _int_param(query, "appId")
        with self._lock:
            if api_uuid and app_uuid:
                items = [
                    s
                    for truth in self._consumers.values()
                    for s in truth.subscriptions
                    if s.get("apiUUID") == api_uuid and s.get("applicationUUID") == app_uuid
                ][:1]
            elif api_id is not None and app_id is not None:
                items = [
                    s
                    for truth in self._consumers.values()
                    for s in truth.subscriptions
                    if s.get("apiId") == api_id and s.get("appId") == app_id
                ][:1]
            else:
                items = [s for truth in self._selected(request, "subscriptions") for s in truth.subscriptions]
            return self._list_answer(request, [self._render_subscription(s) for s in items])

    async def _applications(self, request: web.Request) -> web.StreamResponse:
        """Filters by ``appId`` (a positive id; across organizations, like the CP)."""
        app_id = _int_param(request.query, "appId")
        with self._lock:
            if app_id is not None and app_id > 0:
                items = [a for truth in self._consumers.values() for a in truth.applications if a.get("id") == app_id]
            else:
                items = [a for truth in self._selected(request, "applications") for a in truth.applications]
            return self._list_answer(request, copy.deepcopy(items))

    async def _key_mappings(self, request: web.Request) -> web.StreamResponse:
        """Filters by ``consumerKey`` (at most one answer), narrowed by ``keymanager`` (the key
        manager's name); ``keymanager`` alone is ignored, like the CP does."""
        consumer_key, key_manager = request.query.get("consumerKey"), request.query.get("keymanager")
        with self._lock:
            items = [m for truth in self._selected(request, "application-key-mappings") for m in truth.key_mappings]
            if consumer_key:
                items = [
                    m
                    for m in items
                    if m.get("consumerKey") == consumer_key
                    and (key_manager is None or m.get("keyManager") == key_manager)
                ][:1]
            return self._list_answer(request, copy.deepcopy(items))

    async def _subscription_policies(self, request: web.Request) -> web.StreamResponse:
        return self._policies(request, "subscription-policies", lambda truth: truth.subscription_policies)

    async def _application_policies(self, request: web.Request) -> web.StreamResponse:
        return self._policies(request, "application-policies", lambda truth: truth.application_policies)

    async def _api_policies(self, request: web.Request) -> web.StreamResponse:
        return self._policies(request, "api-policies", lambda truth: truth.api_policies)

    def _policies(
        self, request: web.Request, endpoint: str, policies: Callable[[ConsumerTruth], list[dict[str, Any]]]
    ) -> web.Response:
        """Policies of the organization ``xWSO2Tenant`` names, optionally of one ``policyName``."""
        name = request.query.get("policyName")
        with self._lock:
            items = [
                p
                for truth in self._selected(request, endpoint)
                for p in policies(truth)
                if not name or p.get("name") == name
            ]
            return self._list_answer(request, copy.deepcopy(items))

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
        """``{eventType, fields? | uuid?, organization?, tenantId?}``; ``fields`` default to the API's own."""
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
            tenant_id=int(spec["tenantId"]) if spec.get("tenantId") is not None else None,
        )
        return web.json_response({"eventId": event_id})

    _SIM_CONSUMER_ACTIONS = frozenset(
        {
            "create_application", "update_application", "delete_application", "add_key", "remove_key",
            "subscribe", "update_subscription", "unsubscribe", "add_subscription_policy",
            "update_subscription_policy", "delete_subscription_policy",
        }
    )  # fmt: skip

    async def _sim_consumers(self, request: web.Request) -> web.StreamResponse:
        """``{action, args?: [...], kwargs?: {...}}``: one of the consumer methods (``subscribe``, ...)."""
        spec = await _json_object(request)
        action = str(spec.get("action", ""))
        if action not in self._SIM_CONSUMER_ACTIONS:
            raise _BadRequest(f"action must be one of {sorted(self._SIM_CONSUMER_ACTIONS)}")
        args = list(spec.get("args") or [])
        kwargs = dict(spec.get("kwargs") or {})
        for key in ("burst", "bandwidth"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        item = await asyncio.to_thread(getattr(self, action), *args, **kwargs)
        return web.json_response(item)

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
            # Never an API UUID: the consumer truth per organization, as the lists hold it.
            state["consumers"] = {org: truth.as_json() for org, truth in self._consumers.items()}
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


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise _BadRequest(f"query parameter {name} must be an integer, got {value!r}") from exc


def _check_state(state: str) -> None:
    if state not in SUBSCRIPTION_STATES:
        raise ValueError(f"subscription state must be one of {sorted(SUBSCRIPTION_STATES)}, got {state!r}")


def _consumer_key() -> str:
    """A consumer key shaped like APIM's (28 letters and digits)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(28))


def _group_names(group_ids: Any) -> list[str]:
    """Group names of an application's ``groupIds`` (``[{groupId, applicationId}]``, or plain names)."""
    names = []
    for group in group_ids or []:
        name = group.get("groupId") if isinstance(group, dict) else group
        if name:
            names.append(str(name))
    return names


def _default_subscription_policy(
    name: str, organization: str = SUPER_TENANT, tenant_id: int = SUPER_TENANT_ID, policy_id: int = 1
) -> dict[str, Any]:
    return {
        "id": policy_id,
        "tenantId": tenant_id,
        "name": name,
        "displayName": name,
        "tenantDomain": organization,
        "quotaType": "requestCount",
        "rateLimitCount": -1,
        "rateLimitTimeUnit": "NA",
        "stopOnQuotaReach": True,
        "graphQLMaxComplexity": 0,
        "graphQLMaxDepth": 0,
        "defaultLimit": {
            "quotaType": "requestCount",
            "requestCount": {"requestCount": _UNLIMITED_REQUESTS, "timeUnit": "min", "unitTime": 1},
        },
    }


def _default_application_policy(name: str, organization: str, tenant_id: int, policy_id: int) -> dict[str, Any]:
    return {
        "id": policy_id,
        "tenantId": tenant_id,
        "name": name,
        "tenantDomain": organization,
        "quotaType": "requestCount",
        "defaultLimit": {
            "quotaType": "requestCount",
            "requestCount": {"requestCount": _UNLIMITED_REQUESTS, "timeUnit": "min", "unitTime": 1},
        },
        "burstLimit": {"rateLimitCount": 0, "rateLimitTimeUnit": None},
    }


def _subscription_policy_item(
    name: str, organization: str, tenant_id: int, policy_id: int, params: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``subscription-policies`` item from ``add_subscription_policy``'s arguments."""
    quota_type = str(params.get("quota_type") or "requestCount")
    member = _QUOTA_MEMBERS.get(quota_type)
    if member is None:
        raise ValueError(f"quota type must be one of {sorted(_QUOTA_MEMBERS)}, got {quota_type!r}")
    limit: dict[str, Any] = {"timeUnit": params.get("time_unit", "min"), "unitTime": int(params.get("unit_time", 1))}
    count = int(params.get("request_count", 100))
    if quota_type == "requestCount":
        limit["requestCount"] = count
    elif quota_type == "eventCount":
        limit["eventCount"] = count
    elif quota_type == "bandwidthVolume":
        bandwidth = params.get("bandwidth")
        if not bandwidth:
            raise ValueError("a bandwidthVolume tier needs bandwidth=(amount, unit)")
        amount, unit = bandwidth
        limit.update({"dataAmount": int(amount), "dataUnit": str(unit)})
    else:
        limit["requestCount"] = count
        for key, value in dict(params.get("ai_quota") or {}).items():
            limit[str(key)] = value
    burst = params.get("burst")
    burst_count, burst_unit = (int(burst[0]), str(burst[1])) if burst else (0, None)
    return {
        "id": policy_id,
        "tenantId": tenant_id,
        "name": name,
        "displayName": params.get("display_name") or name,
        "tenantDomain": organization,
        "quotaType": quota_type,
        "rateLimitCount": burst_count,
        "rateLimitTimeUnit": burst_unit,
        "stopOnQuotaReach": bool(params.get("stop_on_quota_reach", True)),
        "graphQLMaxComplexity": int(params.get("graphql_max_complexity", 0)),
        "graphQLMaxDepth": int(params.get("graphql_max_depth", 0)),
        "defaultLimit": {"quotaType": quota_type, member: limit},
    }


def _subscription_policy_params(item: Mapping[str, Any]) -> dict[str, Any]:
    """``add_subscription_policy``'s arguments back from a list item (the inverse of the above)."""
    default_limit = item.get("defaultLimit") or {}
    quota_type = str(item.get("quotaType") or default_limit.get("quotaType") or "requestCount")
    limit = default_limit.get(_QUOTA_MEMBERS.get(quota_type, "requestCount")) or {}
    params: dict[str, Any] = {
        "quota_type": quota_type,
        "time_unit": limit.get("timeUnit", "min"),
        "unit_time": limit.get("unitTime", 1),
        "request_count": limit.get("eventCount" if quota_type == "eventCount" else "requestCount", 100),
        "stop_on_quota_reach": item.get("stopOnQuotaReach", True),
        "graphql_max_depth": item.get("graphQLMaxDepth", 0),
        "graphql_max_complexity": item.get("graphQLMaxComplexity", 0),
        "display_name": item.get("displayName"),
        "burst": None,
        "bandwidth": None,
        "ai_quota": None,
    }
    rate_count = item.get("rateLimitCount")
    if isinstance(rate_count, int) and rate_count > 0 and item.get("rateLimitTimeUnit"):
        params["burst"] = (rate_count, str(item["rateLimitTimeUnit"]))
    if quota_type == "bandwidthVolume" and "dataAmount" in limit:
        params["bandwidth"] = (limit["dataAmount"], limit.get("dataUnit", "MB"))
    if quota_type == "aiApiQuota":
        params["ai_quota"] = {
            key: value for key, value in limit.items() if key not in ("timeUnit", "unitTime", "requestCount")
        }
    return params


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
