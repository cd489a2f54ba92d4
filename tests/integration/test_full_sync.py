"""The full sync: the cluster ends at the control plane's state after the agent was down, and a
control plane that fails, times out or answers empty lists makes it delete nothing.

Every change to the control plane's truth here is made with ``publish=False``: no event reaches
the agent, so only the sync can bring the cluster to the control plane's state. Expectations
are computed independently of the sync: from the control plane's own lists (read over HTTP, as
the agent would) through ``desired_consumer_resources``, and from listings of the cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s_client
from kubernetes.dynamic import DynamicClient
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from agent.settings import Settings
from harness.api_projects import ApiProjectFiles, rest_api_project
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from models.consumer_workflow import SyncChange, SyncResult
from models.consumers import ConsumerState, CpApplication, CpKeyMapping, CpSubscription, CpSubscriptionPolicy
from models.naming import API_KEY_LABEL, API_UUID_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, consumer_selector
from models.resources import CONSUMER_KINDS, MANAGED_KINDS, TIER_KINDS, resource_id
from tests.integration.conftest import REPO, running_agent
from tests.integration.helpers import eventually, settled_status, workflow_status
from translation.consumers import ConsumerOptions, desired_consumer_resources, mapping_name, tier_resource_name
from worker import sync_input
from workflows.full_sync import FullSync

ORG = "carbon.super"
LABELS = ["Default"]
TIERS = ("Gold", "Silver", "Bronze", "Unlimited")
API_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{API_KEY_LABEL}"

Resource = dict[str, Any]


# ---------------------------------------------------------------------- running a sync


async def run_sync(client: Client, settings: Settings, **overrides: object) -> SyncResult:
    return await client.execute_workflow(
        FullSync.run,
        sync_input(settings, "test", **overrides),
        id=f"sync-test-{uuid.uuid4().hex[:10]}",
        task_queue=settings.task_queue,
    )


async def aborted_sync(client: Client, settings: Settings, **overrides: object) -> SyncResult:
    """A sync that must fail with ``SyncAborted``: the SyncResult its failure carries."""
    with pytest.raises(WorkflowFailureError) as failed:
        await run_sync(client, settings, **overrides)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == "SyncAborted", (cause.type, cause.message)
    assert cause.details, "the SyncAborted failure carries no SyncResult"
    result = SyncResult.model_validate(cause.details[0])
    assert result.aborted and result.reason, result
    assert cause.message == result.headline()
    return result


def rids(changes: Iterable[SyncChange]) -> list[str]:
    return sorted(c.resource for c in changes)


def assert_no_changes(result: SyncResult) -> None:
    summary = result.model_dump(include={"created", "updated", "deleted", "apis", "drifted", "held_back"})
    assert not any(summary.values()), summary
    assert not result.aborted and not result.problems, result


# ---------------------------------------------------------------------- the control plane's truth


@dataclass
class World:
    """What a test put in the control plane, for choosing entities to change."""

    apis: dict[str, ApiProjectFiles] = field(default_factory=dict)  # deployed, by UUID
    apps: list[str] = field(default_factory=list)
    subs: list[dict[str, Any]] = field(default_factory=list)  # the simulator's list items

    def deployed(self) -> dict[str, tuple[str, str]]:
        return {u: (p.name, p.version) for u, p in self.apis.items()}


def new_api(index: int) -> ApiProjectFiles:
    return rest_api_project(
        uuid=str(uuid.uuid4()), name=f"SyncApi{index:03d}", version="1.0.0", context=f"/sync{index:03d}"
    )


def add_tiers(cp: ControlPlaneSimulator) -> None:
    cp.add_subscription_policy("Gold", request_count=1000, time_unit="min", publish=False)
    cp.add_subscription_policy("Silver", request_count=100, time_unit="min", unit_time=60, publish=False)
    cp.add_subscription_policy("Bronze", request_count=5000, time_unit="day", burst=(10, "sec"), publish=False)


def populate(cp: ControlPlaneSimulator, *, apis: int, apps: int, subs: int, blocked_every: int = 0) -> World:
    """``apis`` APIs, ``apps`` applications with a PRODUCTION key each, and ``subs`` subscriptions
    spread over the tiers (every ``blocked_every``-th one BLOCKED), all without events."""
    world = World()
    add_tiers(cp)
    for i in range(apis):
        project = new_api(i)
        cp.deploy(project, labels=LABELS, publish=False)
        world.apis[project.uuid] = project
    uuids = list(world.apis)
    for i in range(apps):
        app = cp.create_application(f"App {i}", owner=f"owner{i % 7}", attributes={"index": str(i)}, publish=False)
        cp.add_key(app["uuid"], key_type="PRODUCTION", publish=False)
        world.apps.append(app["uuid"])
    assert subs <= apps * min(apis, 3)
    for n in range(subs):
        # Application n % apps, in round n // apps, on a distinct API per round.
        app_index, round_ = n % apps, n // apps
        api = uuids[(app_index + round_ * 17) % apis]
        state = "BLOCKED" if blocked_every and n % blocked_every == 0 else "UNBLOCKED"
        world.subs.append(
            cp.subscribe(world.apps[app_index], api, policy=TIERS[n % len(TIERS)], state=state, publish=False)
        )
    return world


def cp_list(cp: ControlPlaneSimulator, endpoint: str) -> list[dict[str, Any]]:
    response = httpx.get(
        cp.url + "internal/data/v1/" + endpoint,
        auth=(cp.username, cp.password),
        headers={"x-wso2-tenant": ORG, "xWSO2Tenant": ORG},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["list"]


def cp_state(cp: ControlPlaneSimulator) -> ConsumerState:
    """The consumers as the control plane's lists serve them now."""
    return ConsumerState(
        organization=ORG,
        applications=[CpApplication.model_validate(i) for i in cp_list(cp, "applications")],
        key_mappings=[CpKeyMapping.model_validate(i) for i in cp_list(cp, "application-key-mappings")],
        subscriptions=[CpSubscription.model_validate(i) for i in cp_list(cp, "subscriptions")],
        subscription_policies=[CpSubscriptionPolicy.model_validate(i) for i in cp_list(cp, "subscription-policies")],
    )


def desired(cp: ControlPlaneSimulator, settings: Settings, world: World) -> dict[str, Resource]:
    """``Kind/name`` → the consumer resource the control plane's state calls for."""
    options = ConsumerOptions(
        application_namespace=settings.effective_application_namespace, tier_namespace=settings.namespace
    )
    translation = desired_consumer_resources(cp_state(cp), world.deployed(), options)
    assert not translation.problems, translation.problems
    return {resource_id(r): r for r in translation.resources}


# ---------------------------------------------------------------------- the cluster


def consumer_objects(kube: KubeEmulator, settings: Settings) -> dict[str, Resource]:
    """Every consumer object carrying the agent's labels, by ``Kind/name``."""
    found: dict[str, Resource] = {}
    for spec in CONSUMER_KINDS:
        ns = settings.namespace if spec.kind in TIER_KINDS else settings.effective_application_namespace
        for obj in kube.objects(spec.kind, namespace=ns, label_selector=consumer_selector()):
            found[f"{spec.kind}/{obj['metadata']['name']}"] = obj
    return found


def api_objects(kube: KubeEmulator, settings: Settings) -> dict[str, Resource]:
    """Every object of an API the agent owns in the API namespace, by ``Kind/name``."""
    found: dict[str, Resource] = {}
    for spec in MANAGED_KINDS:
        for obj in kube.objects(spec.kind, namespace=settings.namespace, label_selector=API_SELECTOR):
            found[f"{spec.kind}/{obj['metadata']['name']}"] = obj
    return found


def fingerprint(kube: KubeEmulator, settings: Settings) -> dict[str, tuple[str, str]]:
    """``Kind/name`` → (uid, resourceVersion) of everything the agent owns: any write changes it."""
    objects = {**consumer_objects(kube, settings), **api_objects(kube, settings)}
    return {rid: (o["metadata"]["uid"], o["metadata"]["resourceVersion"]) for rid, o in objects.items()}


def view(obj: Resource) -> dict[str, Any]:
    """What the agent decides about an object: its spec, labels and annotations."""
    meta = obj["metadata"]
    return {"spec": obj.get("spec"), "labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}}


def expected_changes(before: dict[str, Resource], wanted: dict[str, Resource]) -> tuple[list, list, list]:
    """(created, updated, deleted) ``Kind/name`` lists that take ``before`` to ``wanted``."""
    created = sorted(set(wanted) - set(before))
    deleted = sorted(set(before) - set(wanted))
    updated = sorted(rid for rid in set(wanted) & set(before) if view(before[rid]) != view(wanted[rid]))
    return created, updated, deleted


def assert_consumers_match(kube: KubeEmulator, settings: Settings, wanted: dict[str, Resource]) -> None:
    live = consumer_objects(kube, settings)
    assert sorted(live) == sorted(wanted), (
        f"missing: {sorted(set(wanted) - set(live))[:10]}, extra: {sorted(set(live) - set(wanted))[:10]}"
    )
    differing = [rid for rid in wanted if view(live[rid]) != view(wanted[rid])]
    assert not differing, [(rid, view(live[rid]), view(wanted[rid])) for rid in differing[:3]]


def accepted_apis(kube: KubeEmulator, settings: Settings) -> set[str]:
    return {
        o["metadata"]["labels"][API_UUID_LABEL]
        for o in kube.objects("API", namespace=settings.namespace, label_selector=API_SELECTOR)
        if ((o.get("status") or {}).get("deploymentStatus") or {}).get("accepted") is True
    }


def api_uuids_in_cluster(kube: KubeEmulator, settings: Settings) -> set[str]:
    return {o["metadata"]["labels"][API_UUID_LABEL] for o in api_objects(kube, settings).values()}


async def apis_converged(
    client: Client, kube: KubeEmulator, settings: Settings, world: World, processed: dict[str, int], timeout: float
) -> None:
    """Every deployed API accepted, nothing of any other API left, and each API workflow named in
    ``processed`` idle after that many events."""
    deployed = set(world.apis)
    await eventually(
        lambda: accepted_apis(kube, settings) == deployed and api_uuids_in_cluster(kube, settings) == deployed,
        timeout=timeout,
        what=f"the {len(deployed)} deployed APIs accepted, and no other API's resources",
    )
    statuses = await asyncio.gather(
        *(settled_status(client, ORG, u, processed=n, timeout=timeout) for u, n in processed.items())
    )
    for api_uuid, status in zip(processed, statuses, strict=True):
        assert status.last_error is None and status.deployed == (api_uuid in deployed), (api_uuid, status)


def kind_of(kind: str, api_version: str) -> Any:
    return kind, api_version


class HandEdits:
    """Edits "by hand" through the API server, as kubectl would (another field manager)."""

    def __init__(self, kube_api_client: k8s_client.ApiClient, namespace: str) -> None:
        self._dynamic = DynamicClient(kube_api_client)
        self._namespace = namespace

    def patch(self, api_version: str, kind: str, name: str, body: dict[str, Any]) -> None:
        resource = self._dynamic.resources.get(api_version=api_version, kind=kind)
        resource.patch(name=name, namespace=self._namespace, body=body, content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, name: str) -> None:
        self._dynamic.resources.get(api_version=api_version, kind=kind).delete(name=name, namespace=self._namespace)


# ---------------------------------------------------------------------- 1. the agent was down


@pytest.mark.timeout(600)
async def test_after_downtime_one_sync_brings_the_cluster_exactly_to_the_control_planes_state(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
) -> None:
    cp, ns = control_plane, settings.namespace
    started = time.monotonic()
    world = populate(cp, apis=50, apps=200, subs=500, blocked_every=100)
    wanted = desired(cp, settings, world)
    kinds = sorted(rid.split("/")[0] for rid in wanted)
    # 3 tiers (Unlimited has no resource), 200 applications, 500 subscriptions, 495 active ones mapped.
    assert [kinds.count(k) for k in ("RateLimitPolicy", "Application", "Subscription", "ApplicationMapping")] == [
        3, 200, 500, 495,
    ]  # fmt: skip

    async with running_agent(settings, temporal_client, kube_api_client) as agent:
        first = await run_sync(agent.client, settings)
        assert rids(first.created) == sorted(wanted) and not first.updated and not first.deleted, first.headline()
        assert rids(first.apis) == sorted(f"API/{u}" for u in world.apis)
        assert not first.held_back and not first.problems and not first.drifted
        assert_consumers_match(kube, settings, wanted)
        await apis_converged(agent.client, kube, settings, world, dict.fromkeys(world.apis, 1), timeout=120)
    setup_seconds = time.monotonic() - started

    # ---- the agent is down: the control plane and the cluster change behind its back
    apps, subs = world.apps, world.subs
    added_apps = []
    for i in range(10):
        app = cp.create_application(f"Late app {i}", attributes={"late": "yes"}, publish=False)
        cp.add_key(app["uuid"], key_type="PRODUCTION", publish=False)
        added_apps.append(app["uuid"])
    cp.add_key(added_apps[0], key_type="SANDBOX", publish=False)
    cp.add_key(apps[22], key_type="SANDBOX", publish=False)  # an existing application gets a second key
    cp.remove_key(apps[21], cp.key_mappings[21]["consumerKey"], publish=False)  # and one loses its key
    assert not any(m["applicationUUID"] == apps[21] for m in cp.key_mappings)
    cp.update_application(apps[20], name="Renamed app", attributes={"team": "blue", "index": "20"}, publish=False)
    for app_uuid in apps[10:13]:  # its key and subscriptions go with it
        cp.delete_application(app_uuid, publish=False)
    for sub in subs[1:4]:
        cp.update_subscription(sub["subscriptionUUID"], state="BLOCKED", publish=False)
    assert subs[100]["subscriptionState"] == "BLOCKED"
    cp.update_subscription(subs[100]["subscriptionUUID"], state="UNBLOCKED", publish=False)
    cp.update_subscription_policy("Gold", request_count=2000, publish=False)
    late_api = new_api(50)
    cp.deploy(late_api, labels=LABELS, publish=False)
    removed = list(world.apis)[-2:]
    for api_uuid in removed:
        cp.undeploy(api_uuid, labels=LABELS, publish=False)
        del world.apis[api_uuid]
    world.apis[late_api.uuid] = late_api
    for i, app_uuid in enumerate(added_apps):
        cp.subscribe(app_uuid, late_api.uuid, policy=TIERS[i % 4], publish=False)
        cp.subscribe(app_uuid, list(world.apis)[i], policy="Gold", publish=False)
    for app_uuid in apps[40:45]:
        cp.subscribe(app_uuid, late_api.uuid, policy="Silver", publish=False)

    edits = HandEdits(kube_api_client, settings.effective_application_namespace)
    edits.patch("cp.wso2.com/v1alpha2", "Application", apps[30], {"spec": {"name": "hand edited", "owner": "mallory"}})
    hand_sub = subs[5]["subscriptionUUID"]
    edits.patch(
        "cp.wso2.com/v1alpha3",
        "Subscription",
        hand_sub,
        {"spec": {"subscriptionStatus": "BLOCKED", "api": {"name": "Elsewhere", "version": "9.9.9"}}},
    )
    lost_mapping = mapping_name(apps[6], subs[6]["subscriptionUUID"])
    edits.delete("cp.wso2.com/v1alpha2", "ApplicationMapping", lost_mapping)
    assert kube.get_object("Application", ns, apps[30])["spec"]["name"] == "hand edited"
    assert kube.get_object("ApplicationMapping", ns, lost_mapping) is None

    before = consumer_objects(kube, settings)
    wanted = desired(cp, settings, world)
    created, updated, deleted = expected_changes(before, wanted)
    # What the changes above must come to, so the comparison below is not vacuous.
    assert f"Application/{apps[30]}" in updated and f"Subscription/{hand_sub}" in updated
    assert f"ApplicationMapping/{lost_mapping}" in created
    assert f"RateLimitPolicy/{tier_resource_name('Gold', ORG)}" in updated
    assert {f"Application/{a}" for a in apps[20:23]} <= set(updated)
    assert {f"Application/{a}" for a in apps[10:13]} <= set(deleted)
    assert {f"Application/{a}" for a in added_apps} <= set(created)
    assert sum(r.startswith("Subscription/") for r in created) == 25
    # The deleted applications' subscriptions (applications 0-99 have 3 of the 500, the others 2).
    assert sum(r.startswith("Subscription/") for r in deleted) == 9
    mapped_away = {f"ApplicationMapping/{mapping_name(s['applicationUUID'], s['subscriptionUUID'])}" for s in subs[1:4]}
    assert mapped_away <= set(deleted)
    assert f"ApplicationMapping/{mapping_name(apps[100], subs[100]['subscriptionUUID'])}" in created

    # ---- the agent comes back: one sync
    async with running_agent(settings, temporal_client, kube_api_client) as agent:
        sync_started = time.monotonic()
        result = await run_sync(agent.client, settings, allow_mass_delete=False)
        sync_seconds = time.monotonic() - sync_started
        assert not result.aborted and not result.held_back and not result.problems, result.headline()
        assert rids(result.created) == created
        assert rids(result.updated) == updated
        assert rids(result.deleted) == deleted
        assert not result.drifted
        assert rids(result.apis) == sorted(f"API/{u}" for u in [late_api.uuid, *removed])
        assert all(c.organization == ORG for c in [*result.created, *result.updated, *result.deleted, *result.apis])

        assert_consumers_match(kube, settings, wanted)
        assert kube.get_object("Application", ns, apps[30])["spec"]["name"] == "App 30"
        assert kube.get_object("Subscription", ns, hand_sub)["spec"]["api"]["version"] == "1.0.0"
        assert kube.get_object("ApplicationMapping", ns, lost_mapping) is not None

        processed = {late_api.uuid: 1, **dict.fromkeys(removed, 2)}
        await apis_converged(agent.client, kube, settings, world, processed, timeout=60)

        again = await run_sync(agent.client, settings)
        assert_no_changes(again)
        assert again.unchanged == len(wanted) + len(world.apis)
    print(
        f"\nfull sync scenario: setup and first sync {setup_seconds:.1f}s, sync after downtime {sync_seconds:.1f}s, "
        f"total {time.monotonic() - started:.1f}s; {result.headline()}"
    )


# ---------------------------------------------------------------------- 2. safety


async def small_world(
    cp: ControlPlaneSimulator, client: Client, kube: KubeEmulator, settings: Settings, *, apis: int = 2, apps: int = 5
) -> World:
    """A synced little world: ``apps`` applications each subscribed to every one of ``apis`` APIs."""
    world = populate(cp, apis=apis, apps=apps, subs=apps * apis)
    result = await run_sync(client, settings)
    assert result.created and not result.held_back, result.headline()
    await apis_converged(client, kube, settings, world, dict.fromkeys(world.apis, 1), timeout=30)
    assert_consumers_match(kube, settings, desired(cp, settings, world))
    return world


@pytest.mark.faults
async def test_a_failing_slow_or_garbled_control_plane_aborts_the_sync_and_nothing_changes(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
) -> None:
    cp = control_plane
    settings = settings.model_copy(update={"cp_timeout_seconds": 1.0})
    async with running_agent(settings, temporal_client, kube_api_client) as agent:
        world = await small_world(cp, agent.client, kube, settings)
        # Drift a successful sync would act on: a deletion, a creation, an update, an API gone.
        cp.unsubscribe(world.subs[0]["subscriptionUUID"], publish=False)
        app = cp.create_application("Newcomer", publish=False)
        cp.subscribe(app["uuid"], next(iter(world.apis)), policy="Gold", publish=False)
        cp.update_subscription_policy("Silver", request_count=7, publish=False)
        gone = list(world.apis)[-1]
        cp.undeploy(gone, labels=LABELS, publish=False)
        before = fingerprint(kube, settings)

        cases: list[tuple[str, str, dict[str, Any], str]] = [
            ("a 500 on subscriptions", "subscriptions", {"status": 500}, "subscriptions"),
            ("a 503 on applications", "applications", {"status": 503}, "applications"),
            ("a 500 on key mappings", "application-key-mappings", {"status": 500}, "application-key-mappings"),
            ("a 500 on the tiers", "subscription-policies", {"status": 500}, "subscription-policies"),
            ("a 500 on the runtime artifacts", "runtime-artifacts", {"status": 500}, "runtime-artifacts"),
            ("a timeout on subscriptions", "subscriptions", {"status": None, "delay": 2.5}, "subscriptions"),
            # An error body with a 200: not a {count, list}.
            ("an unparseable subscriptions answer", "subscriptions", {"status": 200}, "subscriptions"),
        ]
        for what, suffix, failure, named in cases:
            cp.fail_requests(suffix, **failure)
            result = await aborted_sync(agent.client, settings)
            cp.clear_failures()
            assert named in result.reason, (what, result.reason)
            assert not (result.created or result.updated or result.deleted or result.apis), (what, result)
            assert fingerprint(kube, settings) == before, f"{what}: the cluster changed"
            if failure.get("delay"):
                assert "Timeout" in result.reason, result.reason

        # An item the reference does not allow (a subscription without its UUID).
        cp.subscriptions.append({"subscriptionUUID": "", "policyId": "Gold", "apiUUID": gone})
        result = await aborted_sync(agent.client, settings)
        assert "subscriptions of carbon.super" in result.reason and "not understood" in result.reason, result.reason
        assert fingerprint(kube, settings) == before
        cp.subscriptions.pop()

        # The control plane answers again: the same drift converges.
        result = await run_sync(agent.client, settings)
        del world.apis[gone]
        assert rids(result.apis) == [f"API/{gone}"]
        assert f"Subscription/{world.subs[0]['subscriptionUUID']}" in rids(result.deleted)
        assert f"Application/{app['uuid']}" in rids(result.created)
        assert f"RateLimitPolicy/{tier_resource_name('Silver', ORG)}" in rids(result.updated)
        assert_consumers_match(kube, settings, desired(cp, settings, world))
        await apis_converged(agent.client, kube, settings, world, {gone: 2}, timeout=30)


async def test_an_empty_list_holds_back_deletions_unless_mass_delete_is_allowed(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
) -> None:
    cp = control_plane
    async with running_agent(settings, temporal_client, kube_api_client) as agent:
        world = await small_world(cp, agent.client, kube, settings)
        synced = consumer_objects(kube, settings)
        subscriptions = sorted(r for r in synced if r.startswith(("Subscription/", "ApplicationMapping/")))
        assert len(subscriptions) == 20
        before = fingerprint(kube, settings)

        # Subscriptions: the control plane lists none, the cluster has 10 (and their 10 mappings).
        cp.empty_lists.add("subscriptions")
        held = await run_sync(agent.client, settings)
        assert not held.deleted and not held.created and not held.updated, held.headline()
        assert len(held.held_back) == 2, held.held_back
        for kind in ("Subscription", "ApplicationMapping"):
            [why] = [h for h in held.held_back if f"no {kind} entity" in h]
            assert "--allow-mass-delete" in why and "cluster has 10" in why
        assert rids(c for c in held.drifted if c.action == "delete") == subscriptions
        assert fingerprint(kube, settings) == before

        allowed = await run_sync(agent.client, settings, allow_mass_delete=True)
        assert rids(allowed.deleted) == subscriptions and not allowed.held_back, allowed.headline()
        assert not any(r.startswith(("Subscription/", "ApplicationMapping/")) for r in consumer_objects(kube, settings))
        cp.empty_lists.clear()
        back = await run_sync(agent.client, settings)
        assert rids(back.created) == subscriptions
        assert_consumers_match(kube, settings, desired(cp, settings, world))

        # Key mappings: an empty list would strip every application of its key.
        before = fingerprint(kube, settings)
        cp.empty_lists.add("application-key-mappings")
        kept = await run_sync(agent.client, settings)
        assert not kept.updated and not kept.deleted, kept.headline()
        [why] = kept.held_back
        assert "no key mappings" in why and "5 application(s)" in why
        assert fingerprint(kube, settings) == before
        cp.empty_lists.clear()

        # APIs: every API undeployed at once is an empty answer too.
        for api_uuid in list(world.apis):
            cp.undeploy(api_uuid, labels=LABELS, publish=False)
        undeployed = list(world.apis)
        world.apis.clear()
        held = await run_sync(agent.client, settings)
        assert not held.apis, held.headline()
        [why] = held.held_back
        assert "no API entity" in why
        assert rids(held.drifted) == sorted(f"API/{u}" for u in undeployed)
        assert fingerprint(kube, settings) == before
        for api_uuid in undeployed:
            status = await workflow_status(agent.client, ORG, api_uuid)
            assert status is not None and status.events_processed == 1 and not status.pending_events

        allowed = await run_sync(agent.client, settings, allow_mass_delete=True)
        assert rids(allowed.apis) == sorted(f"API/{u}" for u in undeployed) and not allowed.held_back
        await apis_converged(agent.client, kube, settings, world, dict.fromkeys(undeployed, 2), timeout=30)
        assert api_objects(kube, settings) == {}


async def test_deleting_more_than_the_ratio_is_held_back_unless_mass_delete_is_allowed(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
) -> None:
    cp = control_plane
    async with running_agent(settings, temporal_client, kube_api_client) as agent:
        world = await small_world(cp, agent.client, kube, settings, apis=2, apps=10)
        # One application less is well under the ratio: it goes at once.
        cp.delete_application(world.apps[9], publish=False)
        small = await run_sync(agent.client, settings)
        assert f"Application/{world.apps[9]}" in rids(small.deleted) and not small.held_back, small.headline()
        assert len(small.deleted) == 5  # the application, its 2 subscriptions and their 2 mappings

        # 6 of the 9 left (67%), with their subscriptions and mappings.
        for app_uuid in world.apps[:6]:
            cp.delete_application(app_uuid, publish=False)
        before = fingerprint(kube, settings)
        live = consumer_objects(kube, settings)
        wanted = desired(cp, settings, world)
        _, _, deleting = expected_changes(live, wanted)
        assert len(deleting) == 6 + 12 + 12

        held = await run_sync(agent.client, settings)
        assert not held.deleted and not held.created and not held.updated, held.headline()
        assert len(held.held_back) == 3, held.held_back
        for kind, count, existing in (("Application", 6, 9), ("Subscription", 12, 18), ("ApplicationMapping", 12, 18)):
            [why] = [h for h in held.held_back if f" {kind} objects" in h]
            assert f"deleting {count} of {existing} {kind} objects (67%)" in why and "--allow-mass-delete" in why
        assert rids(held.drifted) == deleting
        assert fingerprint(kube, settings) == before

        # A higher ratio lets them go, and so does allow_mass_delete.
        report = await run_sync(agent.client, settings, max_delete_ratio=0.7, mode="report")
        assert rids(report.deleted) == deleting and not report.held_back
        allowed = await run_sync(agent.client, settings, allow_mass_delete=True)
        assert rids(allowed.deleted) == deleting and not allowed.held_back, allowed.headline()
        assert_consumers_match(kube, settings, wanted)
        assert_no_changes(await run_sync(agent.client, settings))


# ---------------------------------------------------------------------- 3. report mode, dry run


async def test_report_mode_and_dry_run_change_nothing_and_list_the_drift(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
) -> None:
    cp = control_plane
    async with running_agent(settings, temporal_client, kube_api_client) as agent:
        world = await small_world(cp, agent.client, kube, settings, apis=3, apps=5)
        cp.delete_application(world.apps[0], publish=False)
        newcomer = cp.create_application("Newcomer", publish=False)
        cp.add_key(newcomer["uuid"], publish=False)
        cp.update_subscription_policy("Bronze", request_count=42, publish=False)
        HandEdits(kube_api_client, settings.namespace).patch(
            "cp.wso2.com/v1alpha2", "Application", world.apps[1], {"spec": {"owner": "mallory"}}
        )
        gone = list(world.apis)[0]
        cp.undeploy(gone, labels=LABELS, publish=False)
        del world.apis[gone]

        before_objects = consumer_objects(kube, settings)
        before = fingerprint(kube, settings)
        wanted = desired(cp, settings, world)
        created, updated, deleted = expected_changes(before_objects, wanted)
        assert f"Application/{world.apps[1]}" in updated and f"Application/{newcomer['uuid']}" in created
        assert len(deleted) == 1 + 3 + 3

        for overrides in ({"mode": "report"}, {"dry_run": True}, {"mode": "report", "dry_run": True}):
            result = await run_sync(agent.client, settings, **overrides)
            assert not result.aborted and not result.held_back, (overrides, result.headline())
            assert (result.mode == "report") == ("mode" in overrides) and result.dry_run == ("dry_run" in overrides)
            assert (rids(result.created), rids(result.updated), rids(result.deleted)) == (created, updated, deleted)
            by_action = {a: rids(c for c in result.drifted if c.action == a) for a in ("create", "update", "delete")}
            assert by_action == {"create": created, "update": updated, "delete": deleted}, overrides
            assert rids(result.apis) == [f"API/{gone}"]
            assert result.headline().startswith("sync would change:")
            assert fingerprint(kube, settings) == before, f"{overrides}: the cluster changed"
            # Not handed to the API's workflow either.
            status = await workflow_status(agent.client, ORG, gone)
            assert status is not None and status.events_processed == 1 and not status.pending_events
            assert status.current_event is None, overrides

        applied = await run_sync(agent.client, settings)
        assert (rids(applied.created), rids(applied.updated), rids(applied.deleted)) == (created, updated, deleted)
        assert_consumers_match(kube, settings, wanted)
        await apis_converged(agent.client, kube, settings, world, {gone: 2}, timeout=30)


# ---------------------------------------------------------------------- 4. the CLI


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("gateway-agent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


async def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_AGENT_")}
    env.update(
        {
            "GATEWAY_AGENT_TEMPORAL_ADDRESS": settings.temporal_address,
            "GATEWAY_AGENT_TEMPORAL_NAMESPACE": settings.temporal_namespace,
            "GATEWAY_AGENT_TASK_QUEUE": settings.task_queue,
            "GATEWAY_AGENT_CP_URL": settings.cp_url,
            "GATEWAY_AGENT_NAMESPACE": settings.namespace,
            "GATEWAY_AGENT_ACTIVITY_MAX_ATTEMPTS": str(settings.activity_max_attempts),
            "GATEWAY_AGENT_ACTIVITY_INITIAL_RETRY_SECONDS": str(settings.activity_initial_retry_seconds),
        }
    )
    cmd = [*cli_command(), *args]
    return await asyncio.to_thread(subprocess.run, cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


async def test_the_sync_command_prints_the_diff_as_json_and_exits_1_when_aborted(
    settings: Settings,
    temporal_client: Client,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
    kube: KubeEmulator,
) -> None:
    cp = control_plane
    async with running_agent(settings, temporal_client, kube_api_client) as agent:
        world = await small_world(cp, agent.client, kube, settings, apis=2, apps=4)
        cp.delete_application(world.apps[0], publish=False)
        cp.update_application(world.apps[1], name="Renamed", publish=False)
        newcomer = cp.create_application("Newcomer", publish=False)
        wanted = desired(cp, settings, world)
        created, updated, deleted = expected_changes(consumer_objects(kube, settings), wanted)
        assert created == [f"Application/{newcomer['uuid']}"] and updated == [f"Application/{world.apps[1]}"]
        before = fingerprint(kube, settings)

        shown = await cli(settings, "sync", "--dry-run", "--output", "json")
        assert shown.returncode == 0, shown.stderr + shown.stdout
        result = SyncResult.model_validate(json.loads(shown.stdout))
        assert result.dry_run and not result.aborted, result.headline()
        assert (rids(result.created), rids(result.updated), rids(result.deleted)) == (created, updated, deleted)
        assert sorted(c.resource for c in result.drifted) == sorted([*created, *updated, *deleted])
        assert fingerprint(kube, settings) == before

        cp.fail_requests("subscriptions", status=500)
        failed = await cli(settings, "sync", "--output", "json")
        cp.clear_failures()
        assert failed.returncode == 1, failed.stderr + failed.stdout
        aborted = SyncResult.model_validate(json.loads(failed.stdout))
        assert aborted.aborted and "subscriptions" in aborted.reason and "500" in aborted.reason, aborted
        assert fingerprint(kube, settings) == before

        text = await cli(settings, "sync")
        assert text.returncode == 0, text.stderr + text.stdout
        assert text.stdout.startswith("sync changed: 1 created, 1 updated,"), text.stdout
        [row] = [line for line in text.stdout.splitlines() if newcomer["uuid"] in line]
        assert row.split()[:4] == ["+", "created", "Application", newcomer["uuid"]] and ORG in row, text.stdout
        assert_consumers_match(kube, settings, wanted)
