"""Soak: a thousand mixed control-plane events, in a seeded random but valid order, through the real
broker and a real listener process into a real worker process, with faults throughout.

The faults: the API server answers 5xx, 429, 409 or stalls beyond the agent's request timeout on a
share of requests; the control plane's artifact fetches and lists answer 5xx or stall; events are
published again verbatim (same event id); malformed messages are mixed in; the worker is SIGKILLed
and replaced, and the listener is SIGKILLed and replaced, while events keep coming.

At the end the test checks, from what it published and from the control plane's truth (not from the
agent's bookkeeping): the cluster is the control plane's state (every deployed API accepted at its
latest revision with exactly the resources its artifact translates to, nothing of removed APIs,
the consumer resources ``desired_consumer_resources`` makes of the control plane's lists); every
published event reached its workflow (Temporal's history of signals), was processed exactly once
(one deployment child per event, ``events_processed``), the repeats had no effect, and every
malformed message is in the dead-letter queue with its reason.

``SOAK_SEED`` picks the order (printed; random otherwise), ``SOAK_EVENTS`` the number of events
(1,000). The figures go to ``.run/soak.json``; docs/reliability.md ("Soak") has one run's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import stomp
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from agent.settings import Settings
from harness.activemq import ActiveMQ
from harness.api_projects import ApiProjectFiles, rest_api_project
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from harness.processes import REPO, AgentCommand, free_port
from intake.listener import REASON_HEADER
from models.api_workflow import ApiWorkflowStatus
from models.consumer_workflow import ConsumerWorkflowStatus
from models.consumers import ConsumerState, CpApplication, CpKeyMapping, CpSubscription, CpSubscriptionPolicy
from models.naming import API_KEY_LABEL, API_UUID_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, REVISION_LABEL
from models.resources import MANAGED_KINDS, resource_id
from tests.faults.conftest import AgentFactory, killed, started, startup_sync_done
from tests.integration.test_full_sync import assert_consumers_match, consumer_objects, run_sync, view
from translation.artifacts import parse_runtime_artifacts
from translation.consumers import ConsumerOptions, desired_consumer_resources, mapping_name
from translation.translate import TranslationOptions, translate

pytestmark = [pytest.mark.faults, pytest.mark.soak, pytest.mark.timeout(600)]

ORG = "carbon.super"
LABELS = ["Default"]
API_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{API_KEY_LABEL}"
ROUNDS = 10
WORKER_KILL_ROUND = 3  # the worker is SIGKILLed after this round, and replaced after the next one
LISTENER_KILL_ROUND = 6
SETTLE_TIMEOUT = 240.0

Resource = dict[str, Any]


# ---------------------------------------------------------------------- the workload


def workflow_of(event: dict[str, Any]) -> str:
    """The workflow an event is for, from the event alone (the routing the control plane implies)."""
    kind = event["type"]
    org = event["tenantDomain"]
    if kind in ("DEPLOY_API_IN_GATEWAY", "REMOVE_API_FROM_GATEWAY"):
        return f"api:{org}:{event['uuid']}"
    if kind.startswith("APPLICATION_") and kind != "APPLICATION_REGISTRATION_CREATE":
        return f"application:{org}:{event['uuid']}"
    if kind in ("APPLICATION_REGISTRATION_CREATE", "REMOVE_APPLICATION_KEYMAPPING"):
        return f"application:{org}:{event['applicationUUID']}"
    if kind.startswith("SUBSCRIPTIONS_"):
        return f"subscription:{org}:{event['subscriptionUUID']}"
    if kind.startswith("POLICY_"):
        return f"tier:{org}:{event['policyName']}"
    raise AssertionError(f"no workflow for {kind}")


@dataclass
class Workload:
    """The control plane's entities as the test made them, and what it published."""

    cp: ControlPlaneSimulator
    rng: random.Random
    apis: dict[str, ApiProjectFiles] = field(default_factory=dict)  # every API ever deployed, latest revision
    deployed: set[str] = field(default_factory=set)
    revisions: Counter[str] = field(default_factory=Counter)
    apps: list[str] = field(default_factory=list)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # app -> key type -> consumer key
    subs: dict[str, tuple[str, str]] = field(default_factory=dict)  # subscription -> (app, API)
    tiers: list[str] = field(default_factory=list)  # custom subscription tiers
    next_tier: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    republished: Counter[str] = field(default_factory=Counter)  # event type -> repeats published
    malformed: list[bytes] = field(default_factory=list)
    # ``Kind/name`` of the Subscriptions and ApplicationMappings of deleted applications: APIM sends no
    # event for them, so only a full sync removes them (README, "Applications, subscriptions and tiers").
    orphaned: set[str] = field(default_factory=set)

    # ---- APIs

    def _project(self, api_uuid: str, index: int) -> ApiProjectFiles:
        revision = self.revisions[api_uuid] = self.revisions[api_uuid] + 1
        rng = self.rng
        return rest_api_project(
            uuid=api_uuid,
            name=f"SoakApi{index:02d}",
            version="1.0.0",
            context=f"/soak{index:02d}",
            revision_id=str(revision),
            production_url=f"http://backend-{rng.randrange(5)}.example:8080/v{revision}",
            # Revisions with and without a sandbox endpoint: the route set grows and shrinks (prune).
            sandbox_url=f"http://sandbox.example:8080/v{revision}" if rng.random() < 0.5 else None,
        )

    def deploy_new(self) -> None:
        api_uuid = str(uuid.uuid4())
        self.apis[api_uuid] = project = self._project(api_uuid, len(self.apis))
        self.cp.deploy(project, labels=LABELS)
        self.deployed.add(api_uuid)

    def redeploy(self) -> None:
        """A new revision of an API, deployed or removed before."""
        api_uuid = self.rng.choice(sorted(self.apis))
        index = int(self.apis[api_uuid].name.removeprefix("SoakApi"))
        self.apis[api_uuid] = project = self._project(api_uuid, index)
        self.cp.deploy(project, labels=LABELS)
        self.deployed.add(api_uuid)

    def undeploy(self) -> None:
        api_uuid = self.rng.choice(sorted(self.deployed))
        self.cp.undeploy(api_uuid, labels=LABELS)
        self.deployed.discard(api_uuid)

    # ---- applications and keys

    def create_app(self) -> None:
        app = self.cp.create_application(
            f"Soak app {len(self.apps)}", owner=f"owner{self.rng.randrange(5)}", attributes={"n": str(len(self.apps))}
        )
        self.apps.append(app["uuid"])
        self.keys[app["uuid"]] = {}

    def update_app(self) -> None:
        app = self.rng.choice(self.apps)
        self.cp.update_application(
            app, name=f"Renamed {self.rng.randrange(1000)}", attributes={"team": self.rng.choice(["a", "b", "c"])}
        )

    def delete_app(self) -> None:
        app = self.rng.choice(self.apps)
        for sub, (owner, _) in self.subs.items():
            if owner == app:
                self.orphaned |= {f"Subscription/{sub}", f"ApplicationMapping/{mapping_name(app, sub)}"}
        self.cp.delete_application(app)  # its keys and subscriptions go too, without events of their own
        self.apps.remove(app)
        del self.keys[app]
        self.subs = {s: (a, api) for s, (a, api) in self.subs.items() if a != app}

    def add_key(self) -> bool:
        candidates = [(a, t) for a in self.apps for t in ("PRODUCTION", "SANDBOX") if t not in self.keys[a]]
        if not candidates:
            return False
        app, key_type = self.rng.choice(candidates)
        self.keys[app][key_type] = self.cp.add_key(app, key_type=key_type)["consumerKey"]
        return True

    def remove_key(self) -> bool:
        candidates = [(a, t) for a in self.apps for t in self.keys[a]]
        if not candidates:
            return False
        app, key_type = self.rng.choice(candidates)
        self.cp.remove_key(app, self.keys[app].pop(key_type))
        return True

    # ---- subscriptions

    def _tier(self) -> str:
        return self.rng.choice(["Unlimited", *self.tiers])

    def subscribe(self) -> bool:
        taken = set(self.subs.values())
        candidates = [(a, api) for a in self.apps for api in sorted(self.apis) if (a, api) not in taken]
        if not candidates:
            return False
        app, api = self.rng.choice(candidates)
        state = "BLOCKED" if self.rng.random() < 0.1 else "UNBLOCKED"
        sub = self.cp.subscribe(app, api, policy=self._tier(), state=state)
        self.subs[sub["subscriptionUUID"]] = (app, api)
        return True

    def update_subscription(self) -> None:
        sub = self.rng.choice(sorted(self.subs))
        change = self.rng.choice(["block", "unblock", "tier", "prod-only"])
        if change == "tier":
            self.cp.update_subscription(sub, policy=self._tier())
        else:
            state = {"block": "BLOCKED", "unblock": "UNBLOCKED", "prod-only": "PROD_ONLY_BLOCKED"}[change]
            self.cp.update_subscription(sub, state=state)

    def unsubscribe(self) -> None:
        sub = self.rng.choice(sorted(self.subs))
        self.cp.unsubscribe(sub)
        del self.subs[sub]

    # ---- tiers

    def create_tier(self) -> None:
        name = f"SoakTier{self.next_tier}"
        self.next_tier += 1
        self.cp.add_subscription_policy(
            name, request_count=self.rng.choice([10, 100, 1000]), time_unit=self.rng.choice(["min", "hour"])
        )
        self.tiers.append(name)

    def update_tier(self) -> None:
        self.cp.update_subscription_policy(self.rng.choice(self.tiers), request_count=self.rng.randrange(1, 5000))

    def delete_tier(self) -> None:
        name = self.rng.choice(self.tiers)
        self.cp.delete_subscription_policy(name)  # subscriptions keep naming it, as in APIM
        self.tiers.remove(name)

    # ---- one random, valid operation

    def step(self) -> None:
        n_apis, n_deployed = len(self.apis), len(self.deployed)
        choices: list[tuple[str, float]] = [
            ("deploy_new", 3.0 if n_apis < 20 else 0.0),
            ("redeploy", 2.5 if n_apis else 0.0),
            ("undeploy", 1.0 if n_deployed > 3 else 0.0),
            ("create_app", 3.0 if len(self.apps) < 60 else 0.3),
            ("update_app", 1.5 if self.apps else 0.0),
            ("delete_app", 0.4 if len(self.apps) > 10 else 0.0),
            ("add_key", 2.5 if self.apps else 0.0),
            ("remove_key", 0.8 if self.apps else 0.0),
            ("subscribe", 4.0 if self.apps and self.apis else 0.0),
            ("update_subscription", 3.0 if self.subs else 0.0),
            ("unsubscribe", 0.8 if len(self.subs) > 10 else 0.0),
            ("create_tier", 1.0 if len(self.tiers) < 6 else 0.0),
            ("update_tier", 0.8 if self.tiers else 0.0),
            ("delete_tier", 0.3 if len(self.tiers) > 3 else 0.0),
        ]
        while True:
            names, weights = zip(*[(n, w) for n, w in choices if w > 0], strict=True)
            name = self.rng.choices(names, weights)[0]
            if getattr(self, name)() is not False:
                self.operations[name] += 1
                return
            choices = [(n, w) for n, w in choices if n != name]

    def republish(self) -> None:
        """An event published before, again, byte for byte the same event (its id and timestamp)."""
        original = self.rng.choice([e for e in self.cp.published])
        envelope = {"eventId", "timeStamp", "type", "tenantId", "tenantDomain"}
        self.cp.publish(
            original["type"],
            {k: v for k, v in original.items() if k not in envelope},
            organization=original["tenantDomain"],
            tenant_id=original["tenantId"],
            event_id=original["eventId"],
            timestamp_ms=original["timeStamp"],
        )
        self.republished[original["type"]] += 1

    def publish_garbage(self) -> None:
        n = len(self.malformed)
        bad_json = base64.b64encode(f"not json {n}".encode()).decode()
        array = base64.b64encode(json.dumps([n]).encode()).decode()
        body = self.rng.choice(
            [
                f"{{this is not json {n}".encode(),
                b"\xff\xfe not UTF-8 " + str(n).encode(),
                json.dumps({"event": {"payloadData": {"eventType": "DEPLOY_API_IN_GATEWAY", "event": bad_json}}}),
                json.dumps({"event": {"payloadData": {"eventType": "SUBSCRIPTIONS_CREATE", "event": array}}}),
                json.dumps({"not": "an envelope", "n": n}),
            ]
        )
        body = body if isinstance(body, bytes) else body.encode()
        self.cp.publish_raw(body)
        self.malformed.append(body)


# ---------------------------------------------------------------------- faults


@dataclass
class Faults:
    """Transient faults, never more than one of a kind pending at once, so no request meets more in
    a row than the agent's attempts absorb."""

    kube: KubeEmulator
    cp: ControlPlaneSimulator
    rng: random.Random
    injected: Counter[str] = field(default_factory=Counter)  # kind of fault -> failing answers armed
    _kube_ids: list[str] = field(default_factory=list)

    KUBE_FAULTS = (
        ("apply", "API", 409, "Conflict"),
        ("apply", "HTTPRoute", 503, "ServiceUnavailable"),
        ("apply", "Backend", 429, "TooManyRequests"),
        ("apply", "APIPolicy", 500, "InternalError"),
        ("apply", "Application", 503, "ServiceUnavailable"),
        ("apply", "Subscription", 409, "Conflict"),
        ("apply", "ApplicationMapping", 500, "InternalError"),
        ("apply", "RateLimitPolicy", 429, "TooManyRequests"),
        ("get", "API", 500, "InternalError"),
        ("list", "HTTPRoute", None, "timeout"),
        ("list", "Subscription", None, "timeout"),
        ("get", "Application", None, "timeout"),
        ("delete", "HTTPRoute", 503, "ServiceUnavailable"),
    )
    CP_FAULTS = (
        ("runtime-artifacts", 503),
        ("runtime-artifacts", 500),
        ("runtime-artifacts", None),  # slower than the agent's timeout
        ("subscriptions", 503),
        ("applications", None),
        ("application-key-mappings", 500),
        ("subscription-policies", 503),
    )

    def inject(self, count: int) -> None:
        pending = {(f["verb"], f["kind"]) for f in self.kube.faults()}
        for verb, kind, status, reason in self.rng.sample(self.KUBE_FAULTS, count):
            if (verb, kind) in pending:
                continue
            times = self.rng.randint(1, 2)
            self._kube_ids.append(
                self.kube.inject_fault(
                    verb=verb,
                    kind=kind,
                    status=status,
                    reason=reason,
                    times=times,
                    retry_after=1 if status == 429 else None,
                    delay=3.0 if status is None else 0.0,  # the agent's request timeout is 1 s
                )
            )
            self.injected[f"api-server {status or 'timeout'}"] += times
        with self.cp._lock:
            pending_cp = {f.path_suffix for f in self.cp._failures}
        for suffix, status in self.rng.sample(self.CP_FAULTS, max(1, count // 2)):
            if suffix in pending_cp:
                continue
            times = self.rng.randint(1, 2) if status else 1
            # A stall beyond the agent's 3 s control-plane timeout.
            self.cp.fail_requests(suffix, status=status, times=times, delay=4.0 if status is None else 0.0)
            pending_cp.add(suffix)
            what = "artifact fetch" if suffix == "runtime-artifacts" else "list"
            self.injected[f"control-plane {what} {status or 'timeout'}"] += times

    def unmet(self) -> int:
        """Failing answers armed but not (yet) given."""
        kube = sum(f["times"] or 0 for f in self.kube.faults())
        with self.cp._lock:
            cp = sum(f.remaining or 0 for f in self.cp._failures)
        return kube + cp


# ---------------------------------------------------------------------- what the cluster must be


def cp_get(cp: ControlPlaneSimulator, endpoint: str, **params: str) -> httpx.Response:
    response = httpx.get(
        cp.url + "internal/data/v1/" + endpoint,
        params=params,
        auth=(cp.username, cp.password),
        headers={"x-wso2-tenant": ORG, "xWSO2Tenant": ORG},
        timeout=30,
    )
    response.raise_for_status()
    return response


def desired_api_resources(cp: ControlPlaneSimulator, settings: Settings) -> dict[str, dict[str, Resource]]:
    """API UUID -> ``Kind/name`` -> resource, for every API the control plane has on the agent's
    labels: its runtime artifacts, as the control plane serves them, translated."""
    label = base64.b64encode("|".join(settings.gateway_labels).encode()).decode()
    response = cp_get(cp, "runtime-artifacts", type="Envoy", gatewayLabel=label)
    if response.status_code == 204:
        return {}
    options = TranslationOptions(
        namespace=settings.namespace,
        gateway_name=settings.gateway_name,
        gateway_namespace=settings.effective_gateway_namespace,
        gateway_listener=settings.gateway_listener,
        gateway_http_listener=settings.gateway_http_listener,
        gateway_labels=settings.gateway_labels,
        gateway_id=settings.effective_gateway_id,
        key_managers=settings.gateway_key_managers,
    )
    wanted: dict[str, dict[str, Resource]] = {}
    for deployed in parse_runtime_artifacts(response.content).apis:
        resources = translate(deployed, options).resources
        wanted[deployed.project.data.id] = {resource_id(r): r for r in resources}
    return wanted


def live_api_resources(kube: KubeEmulator, settings: Settings) -> dict[str, dict[str, Resource]]:
    found: dict[str, dict[str, Resource]] = {}
    for spec in MANAGED_KINDS:
        for obj in kube.objects(spec.kind, namespace=settings.namespace, label_selector=API_SELECTOR):
            found.setdefault(obj["metadata"]["labels"][API_UUID_LABEL], {})[resource_id(obj)] = obj
    return found


def api_view(obj: Resource) -> dict[str, Any]:
    return {**view(obj), **{k: obj.get(k) for k in ("data", "binaryData")}}


def api_differences(
    wanted: dict[str, dict[str, Resource]], live: dict[str, dict[str, Resource]], revisions: dict[str, str]
) -> list[str]:
    """What keeps the cluster's APIs from being the control plane's (empty: nothing)."""
    problems = [
        f"API {u}: resources of an API the control plane does not deploy" for u in sorted(set(live) - set(wanted))
    ]
    for api_uuid, resources in sorted(wanted.items()):
        have = live.get(api_uuid, {})
        if sorted(have) != sorted(resources):
            problems.append(
                f"API {api_uuid}: missing {sorted(set(resources) - set(have))}, "
                f"extra {sorted(set(have) - set(resources))}"
            )
            continue
        for rid, obj in resources.items():
            if api_view(have[rid]) != api_view(obj):
                problems.append(f"API {api_uuid}: {rid} differs")
        for rid, obj in have.items():
            if obj["metadata"]["labels"].get(REVISION_LABEL) != revisions[api_uuid]:
                problems.append(f"API {api_uuid}: {rid} is at revision {obj['metadata']['labels'].get(REVISION_LABEL)}")
            if rid.startswith("API/") and not ((obj.get("status") or {}).get("deploymentStatus") or {}).get("accepted"):
                problems.append(f"API {api_uuid}: not accepted")
    return problems


def desired_consumers(
    cp: ControlPlaneSimulator, settings: Settings, apis: dict[str, ApiProjectFiles]
) -> dict[str, Resource]:
    state = ConsumerState(
        organization=ORG,
        applications=[CpApplication.model_validate(i) for i in cp_get(cp, "applications").json()["list"]],
        key_mappings=[CpKeyMapping.model_validate(i) for i in cp_get(cp, "application-key-mappings").json()["list"]],
        subscriptions=[CpSubscription.model_validate(i) for i in cp_get(cp, "subscriptions").json()["list"]],
        subscription_policies=[
            CpSubscriptionPolicy.model_validate(i) for i in cp_get(cp, "subscription-policies").json()["list"]
        ],
    )
    options = ConsumerOptions(
        application_namespace=settings.effective_application_namespace, tier_namespace=settings.namespace
    )
    names = {u: (p.name, p.version) for u, p in apis.items()}
    translation = desired_consumer_resources(state, names, options)
    assert not translation.problems, translation.problems
    return {resource_id(r): r for r in translation.resources}


def consumer_differences(live: dict[str, Resource], wanted: dict[str, Resource]) -> list[str]:
    problems = [f"missing {rid}" for rid in sorted(set(wanted) - set(live))]
    problems += [f"extra {rid}" for rid in sorted(set(live) - set(wanted))]
    problems += [f"{rid} differs" for rid in sorted(set(wanted) & set(live)) if view(live[rid]) != view(wanted[rid])]
    return problems


# ---------------------------------------------------------------------- what the workflows did


async def statuses(
    client: Client, workflow_ids: list[str]
) -> dict[str, ApiWorkflowStatus | ConsumerWorkflowStatus | None]:
    async def one(workflow_id: str) -> ApiWorkflowStatus | ConsumerWorkflowStatus | None:
        result_type = ApiWorkflowStatus if workflow_id.startswith("api:") else ConsumerWorkflowStatus
        try:
            return await client.get_workflow_handle(workflow_id).query("status", result_type=result_type)
        except RPCError:
            return None

    found = await asyncio.gather(*(one(w) for w in workflow_ids))
    return dict(zip(workflow_ids, found, strict=True))


def settled(status: Any, expected: int) -> bool:
    return (
        status is not None
        and status.events_processed >= expected
        and status.current_event is None
        and status.pending_events == 0
    )


@dataclass
class History:
    signalled: list[str]  # the event ids of every submit_event signal, in order
    children: int  # deployment children started
    continued: bool  # the history is of a run after continue-as-new (earlier runs not read)


async def history_of(client: Client, workflow_id: str) -> History:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    signalled, children, continued = [], 0, False
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            continued = bool(event.workflow_execution_started_event_attributes.continued_execution_run_id)
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attributes = event.workflow_execution_signaled_event_attributes
            if attributes.signal_name == "submit_event":
                signalled.append(json.loads(attributes.input.payloads[0].data)["event_id"])
        elif event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            children += 1
    return History(signalled, children, continued)


def scrape_duplicates(port: int) -> float:
    """``gateway_agent_workflow_events_total{outcome="duplicate"}`` summed, from a worker's /metrics."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_agent_workflow_events_total{") and 'outcome="duplicate"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def read_dead_letters(
    broker: ActiveMQ, destination: str, expected: int, timeout: float = 30.0
) -> list[tuple[dict, bytes]]:
    """Everything on the dead-letter queue: at least ``expected`` messages, then until 2 s pass without one."""
    received: queue.Queue[tuple[dict, bytes]] = queue.Queue()

    class Collect(stomp.ConnectionListener):
        def on_message(self, frame: stomp.utils.Frame) -> None:
            received.put((dict(frame.headers), frame.body))

    host, port = broker.stomp_url.removeprefix("stomp://").split(":")
    conn = stomp.Connection12([(host, int(port))], auto_decode=False)
    conn.set_listener("collect", Collect())
    conn.connect(wait=True)
    conn.subscribe(destination, id="dlq", ack="auto")
    letters: list[tuple[dict, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            wait = 2.0 if len(letters) >= expected else max(0.1, deadline - time.monotonic())
            try:
                letters.append(received.get(timeout=wait))
            except queue.Empty:
                return letters
    finally:
        conn.disconnect()


# ---------------------------------------------------------------------- the soak


async def test_soak_a_thousand_events_with_faults_converge_and_every_event_is_accounted_for(
    fault_settings: Settings,
    fault_client: Client,
    agent_command: AgentFactory,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
    broker: ActiveMQ,
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("SOAK_SEED") or random.randrange(2**32))
    total_events = int(os.environ.get("SOAK_EVENTS", "1000"))
    print(f"\nsoak: seed {seed} (SOAK_SEED={seed} repeats this order), {total_events} events")
    rng = random.Random(seed)
    settings = fault_settings.model_copy(
        update={
            "activity_max_attempts": 8,
            "activity_initial_retry_seconds": 0.2,
            "kube_request_timeout_seconds": 1.0,
            "cp_timeout_seconds": 3.0,
            "readiness_timeout_seconds": 60.0,
        }
    )
    cp, client = control_plane, fault_client
    work = Workload(cp, rng)
    faults = Faults(kube, cp, rng)
    started_at = time.monotonic()
    duplicates_counted = 0.0

    metrics_port = free_port()
    worker = await started(agent_command("worker", settings.model_copy(update={"metrics_port": metrics_port})))
    await startup_sync_done(client)
    listener = await started(agent_command("listen", settings))
    kills = {"worker SIGKILL": 0, "listener SIGKILL": 0}
    replacement: AgentCommand | None = None
    try:
        per_round = total_events // ROUNDS
        for round_ in range(ROUNDS):
            faults.inject(count=4)
            for _ in range(per_round):
                work.step()
                roll = rng.random()
                if roll < 0.05:
                    work.republish()
                elif roll < 0.07:
                    work.publish_garbage()
            if round_ == WORKER_KILL_ROUND:
                duplicates_counted += await asyncio.to_thread(scrape_duplicates, metrics_port)
                await killed(worker)  # deployments in flight; the next round is published with no worker
                kills["worker SIGKILL"] += 1
            elif round_ == WORKER_KILL_ROUND + 1:
                metrics_port = free_port()
                worker = await started(
                    agent_command("worker", settings.model_copy(update={"metrics_port": metrics_port}))
                )
            if round_ == LISTENER_KILL_ROUND:
                await killed(listener)  # whatever it held un-acked is redelivered to the next one
                kills["listener SIGKILL"] += 1
                replacement = await started(agent_command("listen", settings))
            await asyncio.sleep(1.0)
        published_at = time.monotonic()

        # ---- every event's workflow settles (bounded; polls)
        per_workflow: dict[str, Counter[str]] = {}
        for event in cp.published:
            per_workflow.setdefault(workflow_of(event), Counter())[event["eventId"]] += 1
        expected = {w: len(ids) for w, ids in per_workflow.items()}
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            found = await statuses(client, sorted(expected))
            waiting = [w for w, s in found.items() if not settled(s, expected[w])]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(waiting)} workflows did not settle: {[(w, found[w]) for w in waiting[:3]]}")
            await asyncio.sleep(1.0)
        settled_at = time.monotonic()
        duplicates_counted += await asyncio.to_thread(scrape_duplicates, metrics_port)
        histories = dict(zip(expected, await asyncio.gather(*(history_of(client, w) for w in expected)), strict=True))
        letters = await asyncio.to_thread(
            read_dead_letters, broker, settings.dead_letter_destination, len(work.malformed)
        )

        # ---- did the events alone bring the cluster to the control plane's state?
        revisions = {u: p.revision for u, p in work.apis.items()}
        wanted_apis = desired_api_resources(cp, settings)
        wanted_consumers = desired_consumers(cp, settings, work.apis)
        after_events = api_differences(wanted_apis, live_api_resources(kube, settings), revisions)
        after_events += consumer_differences(consumer_objects(kube, settings), wanted_consumers)
        # The only difference events cannot remove: what deleted applications leave (no events for it).
        unexplained = [d for d in after_events if d.removeprefix("extra ") not in work.orphaned]
        assert not unexplained, unexplained[:10]
        sync = None
        if after_events:
            print(f"soak: after the events alone {len(after_events)} differences, e.g. {after_events[:5]}")
            kube.clear_faults()
            cp.clear_failures()
            sync = await run_sync(client, settings)
            assert not sync.created and not sync.updated and not sync.apis, sync.headline()
            assert {c.resource for c in sync.deleted} == {d.removeprefix("extra ") for d in after_events}
        finished_at = time.monotonic()
    finally:
        kube.clear_faults()
        cp.clear_failures()

    # ---- the cluster is the control plane's state
    assert set(wanted_apis) == work.deployed
    assert not api_differences(wanted_apis, live_api_resources(kube, settings), revisions)
    assert_consumers_match(kube, settings, wanted_consumers)

    # ---- every event accounted for: reached its workflow, processed once, repeats without effect
    published = Counter(e["eventId"] for e in cp.published)
    unique = len(published)
    republished = sum(work.republished.values())
    assert sum(published.values()) == unique + republished
    redelivered = processed_twice = 0
    handed_by_sync = 0  # events a full sync (the restarted worker's startup sync) handed to API workflows
    for workflow_id, ids in per_workflow.items():
        history, status = histories[workflow_id], found[workflow_id]
        assert not history.continued, f"{workflow_id} continued as new: its earlier runs are not read"
        signalled = Counter(i for i in history.signalled if not i.startswith("sync:"))
        from_sync = len({i for i in history.signalled if i.startswith("sync:")})
        handed_by_sync += from_sync
        assert set(signalled) == set(ids), (
            f"{workflow_id}: lost {set(ids) - set(signalled)}, foreign {set(signalled) - set(ids)}"
        )
        assert all(signalled[i] >= n for i, n in ids.items()), f"{workflow_id}: a repeat never reached it"
        redelivered += sum(signalled.values()) - sum(ids.values())
        assert status is not None
        processed_twice += max(0, history.children - len(ids) - from_sync)
        assert status.events_processed == len(ids) + from_sync, (workflow_id, status, len(ids))
        assert history.children == len(ids) + from_sync, f"{workflow_id}: {history.children} deployments"
        assert status.last_error is None, (workflow_id, status.last_error)
    lost = unique - sum(1 for w, ids in per_workflow.items() for i in ids if i in set(histories[w].signalled))

    # Reports: at most one per API event (all faults were transient, so no FAILURE), and each API's
    # last report is its final state. Reporting is at-least-once: a report whose answer was lost (the
    # worker killed after sending it, a timed-out answer) is sent again, the same; such a surplus
    # must be repeats of the report before (``resent``), any other surplus is a duplicated effect.
    reports_by_api: dict[str, list[dict]] = {}
    for report in cp.deployment_reports:
        reports_by_api.setdefault(report["apiId"], []).append(report)
    failures = [r for r in cp.deployment_reports if r["deploymentStatus"] != "SUCCESS"]
    assert not failures, failures[:3]
    duplicate_reports = resent = 0
    report_details: dict[str, Any] = {}
    worker_logs = [line for log in sorted(tmp_path.glob("worker-*.log")) for line in log.read_text().splitlines()]
    report_failures = [line for line in worker_logs if "reporting to the control plane:" in line]
    for api_uuid in work.apis:
        reports = reports_by_api.get(api_uuid, [])
        events = found[f"api:{ORG}:{api_uuid}"].events_processed  # checked above: published + handed by sync
        surplus = max(0, len(reports) - events)
        shown = [(r["action"], r["revisionId"], r["deploymentStatus"]) for r in reports]
        repeats = sum(1 for a, b in zip(shown, shown[1:], strict=False) if a == b)
        resent += min(surplus, repeats)
        duplicate_reports += surplus - min(surplus, repeats)
        if surplus:
            report_details[api_uuid] = {
                "events": events,
                "reports": [(r["action"], r["revisionId"], r["deploymentStatus"], r["timeStamp"]) for r in reports],
                "worker log": [line[:300] for line in worker_logs if api_uuid in line and "report" in line],
            }
        last = reports[-1]
        if api_uuid in work.deployed:
            assert (last["action"], last["revisionId"]) == ("DEPLOY", revisions[api_uuid]), (api_uuid, last)
        else:
            assert last["action"] == "UNDEPLOY", (api_uuid, last)

    # Malformed messages: each dead-lettered once, with a reason; nothing else was.
    assert sorted(body for _, body in letters) == sorted(work.malformed)
    assert all(headers.get(REASON_HEADER) for headers, _ in letters)

    kinds = Counter(e["type"] for e in {e["eventId"]: e for e in cp.published}.values())
    figures = {
        "seed": seed,
        "events_published": sum(published.values()) + len(work.malformed),
        "events_unique": unique,
        "events_by_type": dict(sorted(kinds.items())),
        "operations": dict(sorted(work.operations.items())),
        "workflows": len(per_workflow),
        "repeats_published": republished,
        "repeats_by_type": dict(sorted(work.republished.items())),
        "redeliveries": redelivered,  # signals beyond those published: the broker redelivered
        "duplicates_counted_by_worker_metrics": duplicates_counted,
        "events_handed_over_by_the_startup_sync": handed_by_sync,
        "malformed_published": len(work.malformed),
        "dead_lettered": len(letters),
        "dead_letter_reasons": dict(Counter(h[REASON_HEADER].split(" (")[0][:60] for h, _ in letters).most_common()),
        "faults_armed": dict(sorted(faults.injected.items())),
        "faults_armed_total": sum(faults.injected.values()),
        "faults_unmet_at_end": faults.unmet(),
        "process_kills": kills,
        "lost": lost,
        "processed_twice": processed_twice,
        "duplicate_reports": duplicate_reports,
        "reports_resent_identically": resent,
        "duplicate_report_details": report_details,
        "report_attempts_failed_in_worker_logs": len(report_failures),
        "failure_reports": len(failures),
        "reports": len(cp.deployment_reports),
        "apis_deployed_at_end": len(work.deployed),
        "apis_removed_at_end": len(work.apis) - len(work.deployed),
        "consumer_resources_at_end": dict(Counter(r.split("/")[0] for r in wanted_consumers)),
        "converged_by_events_alone": not after_events,
        "left_by_deleted_applications_after_events": dict(Counter(d.split()[1].split("/")[0] for d in after_events)),
        "full_sync": sync.headline() if sync is not None else None,
        "seconds_publishing": round(published_at - started_at, 1),
        "seconds_to_settle_after_publishing": round(settled_at - published_at, 1),
        "seconds_total": round(finished_at - started_at, 1),
    }
    out = REPO / ".run" / "soak.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print("soak figures:", json.dumps(figures, indent=2))
    assert lost == 0
    assert duplicate_reports == 0, report_details
    assert replacement is not None and replacement.running() and worker.running()
