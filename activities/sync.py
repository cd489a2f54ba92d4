"""The full sync's activities: read everything the control plane says, list everything the agent
owns, and converge, so the gateway ends at the control plane's state after the agent was down.

Safety first, since the older agent wiped gateways here:

- every list is read before anything is written; a failed, timed-out or unparseable answer
  aborts the sync, and nothing is deleted;
- an empty answer is never, by itself, a reason to delete: when the control plane lists none of
  a kind the cluster has, deletions of that kind are held back;
- deleting more than ``max_delete_ratio`` of what exists of a kind is held back, unless the sync
  runs with ``allow_mass_delete``;
- only what carries the agent's labels is ever considered.

Consumer resources converge here (tiers → applications → subscriptions → mappings; deletions in
reverse). APIs converge through their own workflows: the sync hands each API that is missing,
drifted or orphaned to its workflow, which asks the control plane again and converges.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.cluster import _cluster_error
from activities.consumers import ConsumerClusters, parse_items
from activities.control_plane import (
    APPLICATIONS,
    KEY_MAPPINGS,
    SUBSCRIPTION_POLICIES,
    SUBSCRIPTIONS,
    ControlPlaneClient,
)
from activities.managed_fields import owned_fields
from activities.sealing import Sealer
from agent.metrics import DRIFT_CORRECTIONS
from agent.settings import Settings
from models.api_workflow import ApiEventSignal
from models.consumer_workflow import SyncChange, SyncInput, SyncResult
from models.consumers import ConsumerState, CpApplication, CpKeyMapping, CpSubscription, CpSubscriptionPolicy
from models.naming import (
    API_KEY_LABEL,
    API_UUID_LABEL,
    APK_ORGANIZATION_LABEL,
    CONSUMER_ORGANIZATION_LABEL,
    api_key,
    sha1_hex,
)
from models.resources import CONSUMER_KINDS, MANAGED_KINDS, resource_id
from translation.artifacts import ArtifactError, parse_runtime_artifacts
from translation.consumers import (
    ConsumerOptions,
    application_resource,
    mapping_name,
    subscription_resources,
    tier_resource,
    tier_resource_name,
)
from translation.errors import TranslationError
from translation.translate import TranslationOptions, translate

log = logging.getLogger(__name__)

Resource = dict[str, Any]
_CONSUMER_ORDER = [k.kind for k in CONSUMER_KINDS]
HANDOFF_CONCURRENCY = 16
# Consumer writes of one kind in flight at once in a sync (the kubernetes client's pool holds 10).
WRITE_CONCURRENCY = 6
_Item = TypeVar("_Item")


class _Plan:
    """What one organization's consumers need: the desired objects and the ids never to delete."""

    def __init__(self) -> None:
        self.desired: dict[str, Resource] = {}
        self.protected: set[str] = set()  # listed by the control plane but not translatable now
        self.listed_kinds: set[str] = set()  # kinds the control plane listed at least one entity of
        self.problems: list[str] = []


class SyncActivities:
    def __init__(
        self,
        cp: ControlPlaneClient,
        clusters: ConsumerClusters,
        settings: Settings,
        sealer: Sealer,
        api_options: TranslationOptions,
        consumer_options: ConsumerOptions,
        client: Client | None = None,
    ) -> None:
        self._cp = cp
        self._clusters = clusters
        self._settings = settings
        self._sealer = sealer
        self._api_options = api_options
        self._consumer_options = consumer_options
        self._client = client

    # ------------------------------------------------------------------ the sync

    @activity.defn
    def sync_consumers(self, request: SyncInput) -> SyncResult:
        """Read, plan, and (unless reporting) converge the consumers; list the APIs to converge."""
        write = request.mode == "apply" and not request.dry_run
        result = SyncResult(
            mode=request.mode, dry_run=request.dry_run, organizations=list(self._settings.organizations)
        )
        # 1. Everything the control plane says; any failure raises before anything is written.
        states: dict[str, ConsumerState] = {}
        deployed: dict[str, dict[str, tuple[str, str, list[Resource] | None]]] = {}
        for org in self._settings.organizations:
            _beat(f"reading the control plane ({org})")
            states[org] = self._read_consumers(org)
            deployed[org] = self._read_apis(org, result)
        # 2. Everything the agent owns in the cluster.
        _beat("listing the cluster")
        live_consumers = self._list_consumers()
        live_apis = self._list_apis()
        # 3. APIs: hand the missing, drifted and orphaned ones to their workflows.
        for org in self._settings.organizations:
            self._plan_apis(org, deployed[org], live_apis, request, result)
        # 4. Consumers, per organization.
        writes: list[tuple[str, str, Resource]] = []  # (action, org, resource)
        deletes: list[tuple[str, str, str]] = []  # (org, rid, uid)
        for org in self._settings.organizations:
            apis = {uuid: (name, version) for uuid, (name, version, _) in deployed[org].items()}
            plan = self._plan_consumers(states[org], apis)
            result.problems.extend(plan.problems)
            mine = {rid: obj for rid, obj in live_consumers.items() if _organization_of(obj) == sha1_hex(org)}
            held = self._keep_keys(org, states[org], plan, mine, request)
            if held:
                result.held_back.append(held)
            for rid, wanted in plan.desired.items():
                if rid not in mine:
                    writes.append(("create", org, wanted))
                elif owned_fields(mine[rid], self._clusters.field_manager) != wanted:
                    writes.append(("update", org, wanted))
                else:
                    result.unchanged += 1
            orphans = [rid for rid in mine if rid not in plan.desired and rid not in plan.protected]
            by_kind: dict[str, list[str]] = defaultdict(list)
            for rid in orphans:
                by_kind[rid.split("/", 1)[0]].append(rid)
            for kind, rids in by_kind.items():
                existing = sum(1 for rid in mine if rid.startswith(kind + "/"))
                held = self._hold_back(org, kind, len(rids), existing, kind in plan.listed_kinds, request)
                if held:
                    result.held_back.append(held)
                    result.drifted.extend(
                        SyncChange(action="delete", resource=rid, organization=org, reason=held) for rid in rids
                    )
                    continue
                deletes.extend((org, rid, mine[rid]["metadata"].get("uid", "")) for rid in rids)
        # 5. Converge: creates and updates in dependency order, deletions in reverse; within
        # one kind, a few requests in flight at once (bench/README.md, issue 11).
        to_apply: list[tuple[str, Resource]] = []
        for action, org, resource in sorted(writes, key=lambda item: _rank(resource_id(item[2]))):
            rid = resource_id(resource)
            change = SyncChange(action="create" if action == "create" else "update", resource=rid, organization=org)
            (result.created if action == "create" else result.updated).append(change)
            if not write:
                result.drifted.append(change)
                continue
            to_apply.append((change.action, resource))

        def apply(item: tuple[str, Resource]) -> None:
            action, resource = item
            try:
                self._clusters.for_kind(resource["kind"]).apply(resource)
            except Exception as exc:
                raise _cluster_error("applying", resource_id(resource), exc) from exc
            DRIFT_CORRECTIONS.labels(source="full_sync", kind=resource["kind"], action=action).inc()

        _in_rank_order(to_apply, lambda item: _rank(resource_id(item[1])), apply, lambda item: resource_id(item[1]))
        to_delete: list[tuple[str, str]] = []
        for org, rid, uid in sorted(deletes, key=lambda item: -_rank(item[1])):
            change = SyncChange(action="delete", resource=rid, organization=org)
            result.deleted.append(change)
            if not write:
                result.drifted.append(change)
                continue
            to_delete.append((rid, uid))

        def delete(item: tuple[str, str]) -> None:
            rid, uid = item
            kind, name = rid.split("/", 1)
            try:
                self._clusters.for_kind(kind).delete(kind, name, uid or None)
            except Exception as exc:
                raise _cluster_error("deleting", rid, exc) from exc
            DRIFT_CORRECTIONS.labels(source="full_sync", kind=kind, action="delete").inc()

        _in_rank_order(to_delete, lambda item: -_rank(item[0]), delete, lambda item: item[0])
        log.info("%s", result.headline())
        return result

    def _keep_keys(
        self, org: str, state: ConsumerState, plan: _Plan, mine: dict[str, Resource], request: SyncInput
    ) -> str:
        """An empty key-mapping list would strip every application of its keys (a deletion in an
        update's clothes): unless allowed, applications keep the keys they have."""
        if state.key_mappings or request.allow_mass_delete:
            return ""
        keyed = [
            rid
            for rid, obj in mine.items()
            if obj["kind"] == "Application" and (obj.get("spec") or {}).get("securitySchemes") and rid in plan.desired
        ]
        for rid in keyed:
            plan.desired[rid]["spec"]["securitySchemes"] = mine[rid]["spec"]["securitySchemes"]
        if not keyed:
            return ""
        return (
            f"{org}: the control plane listed no key mappings but {len(keyed)} application(s) in the cluster have "
            "keys; an empty answer is never a reason to delete, so they keep them: run "
            "`gateway-agent sync --allow-mass-delete` if the keys really are gone"
        )

    def _hold_back(self, org: str, kind: str, deleting: int, existing: int, listed: bool, request: SyncInput) -> str:
        """Why deletions of ``kind`` wait for an operator, or empty when they may go ahead."""
        if request.allow_mass_delete:
            return ""
        if not listed:
            return (
                f"{org}: the control plane listed no {kind} entity but the cluster has {existing}; an empty answer "
                f"is never a reason to delete: run `gateway-agent sync --allow-mass-delete` if they really are gone"
            )
        if existing and deleting / existing > request.max_delete_ratio:
            return (
                f"{org}: deleting {deleting} of {existing} {kind} objects ({deleting / existing:.0%}) exceeds "
                f"GATEWAY_AGENT_SYNC_MAX_DELETE_RATIO ({request.max_delete_ratio:g}); run "
                "`gateway-agent sync --allow-mass-delete` to delete them"
            )
        return ""

    # ------------------------------------------------------------------ reading

    def _read_consumers(self, org: str) -> ConsumerState:
        def read(model: Any, path: str, what: str) -> list[Any]:
            return parse_items(model, self._cp.list_items(path, org), f"{what} of {org}")

        return ConsumerState(
            organization=org,
            applications=read(CpApplication, APPLICATIONS, "applications"),
            key_mappings=read(CpKeyMapping, KEY_MAPPINGS, "key mappings"),
            subscriptions=read(CpSubscription, SUBSCRIPTIONS, "subscriptions"),
            subscription_policies=read(CpSubscriptionPolicy, SUBSCRIPTION_POLICIES, "subscription policies"),
        )

    def _read_apis(self, org: str, result: SyncResult) -> dict[str, tuple[str, str, list[Resource] | None]]:
        """Every API deployed on the agent's labels: UUID → (name, version, translated resources or
        None when the API cannot be translated; its workflow says why)."""
        try:
            archive = self._cp.runtime_artifacts(org, None)
        except Exception as exc:
            if isinstance(exc, ApplicationError):
                raise
            raise ApplicationError(
                f"fetching the runtime artifacts of {org}: {type(exc).__name__}: {exc}", type="ControlPlaneUnavailable"
            ) from exc
        if archive is None:
            return {}
        try:
            artifacts = parse_runtime_artifacts(archive)
        except ArtifactError as exc:
            raise ApplicationError(
                f"the runtime artifacts of {org} cannot be read: {exc}",
                type="ControlPlaneUnparseable",
                non_retryable=True,
            ) from exc
        found: dict[str, tuple[str, str, list[Resource] | None]] = {}
        for api in artifacts.apis:
            data = api.project.data
            if data.initiated_from_gateway:
                continue
            try:
                resources: list[Resource] | None = translate(api, self._api_options).resources
            except TranslationError as exc:
                resources = None
                result.problems.append(f"API {data.name} {data.version} ({data.id}): {exc}")
            found[data.id] = (data.name, data.version, resources)
        return found

    # ------------------------------------------------------------------ the cluster

    def _list_consumers(self) -> dict[str, Resource]:
        try:
            objects = [
                o for entity in ("tier", "application", "subscription") for o in self._clusters.list_owned(entity)
            ]
        except Exception as exc:
            raise _cluster_error("listing", "the agent's consumer resources", exc) from exc
        return {resource_id(o): o for o in objects}

    def _list_apis(self) -> dict[str, dict[str, Resource]]:
        """The agent's API resources, by the API's key label."""
        selector = API_KEY_LABEL  # every object of any API (the cluster scopes it to this agent's)
        try:
            objects = self._clusters.apis.list_selected(selector, kinds=MANAGED_KINDS)
        except Exception as exc:
            raise _cluster_error("listing", "the agent's API resources", exc) from exc
        grouped: dict[str, dict[str, Resource]] = defaultdict(dict)
        for obj in objects:
            grouped[obj["metadata"]["labels"][API_KEY_LABEL]][resource_id(obj)] = obj
        return grouped

    # ------------------------------------------------------------------ planning

    def _plan_apis(
        self,
        org: str,
        deployed: dict[str, tuple[str, str, list[Resource] | None]],
        live: dict[str, dict[str, Resource]],
        request: SyncInput,
        result: SyncResult,
    ) -> None:
        org_hash = sha1_hex(org)
        ours = {
            key: objects
            for key, objects in live.items()
            if any(
                (o["metadata"].get("labels") or {}).get(APK_ORGANIZATION_LABEL) == org_hash for o in objects.values()
            )
        }
        for uuid, (name, version, resources) in sorted(deployed.items()):
            objects = ours.get(api_key(org, uuid), {})
            reason = ""
            if not objects:
                reason = "deployed in the control plane, missing in the cluster"
            elif resources is not None:
                wanted = {resource_id(r): r for r in resources}
                differs = sorted(
                    rid
                    for rid in set(wanted) | set(objects)
                    if rid not in objects
                    or rid not in wanted
                    or owned_fields(objects[rid], self._clusters.field_manager) != wanted[rid]
                )
                if differs:
                    reason = "drifted: " + ", ".join(differs[:10]) + (" ..." if len(differs) > 10 else "")
            if reason:
                result.apis.append(
                    SyncChange(
                        action="converge",
                        resource=f"API/{uuid}",
                        organization=org,
                        reason=f"{name} {version}: {reason}",
                    )
                )
            else:
                result.unchanged += 1
        deployed_keys = {api_key(org, uuid) for uuid in deployed}
        orphans = []
        for key, objects in sorted(ours.items()):
            if key in deployed_keys:
                continue
            labels = next(iter(objects.values()))["metadata"].get("labels") or {}
            uuid = labels.get(API_UUID_LABEL, "")
            if uuid:
                orphans.append(uuid)
        held = self._hold_back(org, "API", len(orphans), len(ours), bool(deployed), request) if orphans else ""
        for uuid in orphans:
            change = SyncChange(
                action="converge",
                resource=f"API/{uuid}",
                organization=org,
                reason="not deployed on this gateway's labels",
            )
            if held:
                result.drifted.append(change.model_copy(update={"reason": held}))
            else:
                result.apis.append(change)
        if held:
            result.held_back.append(held)

    def _plan_consumers(self, state: ConsumerState, apis: dict[str, tuple[str, str]]) -> _Plan:
        org, options, plan = state.organization, self._consumer_options, _Plan()

        def attempt(what: str, protect: list[str], build: Callable[[], list[Resource]]) -> None:
            try:
                for resource in build():
                    plan.desired[resource_id(resource)] = resource
            except TranslationError as exc:
                plan.problems.append(f"{org}: {what}: {exc}")
                plan.protected.update(protect)

        for policy in state.subscription_policies:
            name = tier_resource_name(policy.name, org)
            plan.listed_kinds.update({"RateLimitPolicy", "AIRateLimitPolicy"})
            attempt(
                f"subscription tier {policy.name!r}",
                [f"RateLimitPolicy/{name}", f"AIRateLimitPolicy/{name}"],
                lambda p=policy: [r for r in [tier_resource(p, org, options)] if r is not None],
            )
        mappings: dict[str, list[CpKeyMapping]] = defaultdict(list)
        by_id = {a.id: a.uuid for a in state.applications if a.id is not None}
        for mapping in state.key_mappings:
            owner = mapping.application_uuid or by_id.get(mapping.application_id, "")
            mappings[owner].append(mapping)
        for app in state.applications:
            plan.listed_kinds.add("Application")
            attempt(
                f"application {app.name or app.uuid} ({app.uuid})",
                [f"Application/{app.uuid}"],
                lambda a=app: [application_resource(a, mappings.get(a.uuid, []), org, options)],
            )
        for sub in state.subscriptions:
            plan.listed_kinds.update({"Subscription", "ApplicationMapping"})
            name, version = sub.api_name, sub.api_version
            if not (name and version) and sub.api_uuid in apis:
                name, version = apis[sub.api_uuid]
            mapping_id = f"ApplicationMapping/{mapping_name(sub.application_uuid, sub.uuid)}"
            protect = [f"Subscription/{sub.uuid}"] + ([mapping_id] if sub.active else [])
            if not (name and version):
                # Not for this gateway's APIs, and unnamed: left as it is, never deleted for it.
                plan.protected.update(protect)
                continue
            attempt(
                f"subscription {sub.uuid}",
                protect,
                lambda s=sub, n=name, v=version: subscription_resources(s, n, v, org, options),
            )
        return plan


def _in_rank_order(
    items: list[_Item], rank: Callable[[_Item], int], write: Callable[[_Item], None], describe: Callable[[_Item], str]
) -> None:
    """``write`` every item, a rank after the other (``items`` sorted by ``rank``): an
    application before its subscriptions, a mapping after both. Within a rank up to
    ``WRITE_CONCURRENCY`` requests are in flight (one at a time, the round trips were most of a
    catch-up). The activity heartbeats from its own thread meanwhile. The first failure stops
    what has not started and is raised; what was written stays (the sync is level-driven: a retry
    converges the rest)."""
    if not items:
        return
    with ThreadPoolExecutor(WRITE_CONCURRENCY, thread_name_prefix="sync-write") as pool:
        for _, group in itertools.groupby(items, key=rank):
            batch = list(group)
            futures = [pool.submit(write, item) for item in batch]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=5, return_when=FIRST_EXCEPTION)
                failed = next((f for f in done if f.exception() is not None), None)
                if failed is not None:
                    for future in pending:
                        future.cancel()
                    wait(pending)
                    raise failed.exception()  # type: ignore[misc]
                written = sum(1 for f in futures if f.done())
                _beat(f"{describe(batch[0]).split('/', 1)[0]}: {written} of {len(batch)} written")


def _rank(rid: str) -> int:
    return _CONSUMER_ORDER.index(rid.split("/", 1)[0])


def _organization_of(obj: Resource) -> str:
    """sha1 hex of the organization a consumer object belongs to (its label)."""
    return str((obj["metadata"].get("labels") or {}).get(CONSUMER_ORGANIZATION_LABEL) or "")


def _beat(detail: str) -> None:
    if activity.in_activity() and not activity.info().is_local:
        activity.heartbeat(detail)


class SyncHandoff:
    """Hands APIs to their workflows (signal-with-start, like a broker event)."""

    def __init__(self, submit: Callable[[ApiEventSignal], Any]) -> None:
        self._submit = submit

    @activity.defn
    async def converge_apis(self, result: SyncResult) -> int:
        info = activity.info()
        # The run, not just the id: the startup sync's id repeats, and the API's workflow drops an id it saw.
        sync_id = f"{info.workflow_id}:{info.workflow_run_id}"
        stamp = int(time.time() * 1000)
        # A few signal-with-starts in flight at once: one at a time, 1,000 APIs took seconds of
        # round trips before the last API's workflow started (bench/README.md, issue 11).
        gate = asyncio.Semaphore(HANDOFF_CONCURRENCY)

        async def hand_over(change: SyncChange) -> None:
            uuid = change.resource.split("/", 1)[1]
            async with gate:
                await self._submit(
                    ApiEventSignal(
                        event_id=f"sync:{sync_id}:{uuid}",
                        event_type="SYNC",
                        timestamp_ms=stamp,
                        organization=change.organization,
                        api_uuid=uuid,
                        api_name=change.reason.split(":", 1)[0] if ":" in change.reason else "",
                    )
                )

        await asyncio.gather(*(hand_over(change) for change in result.apis))
        # Counted once every API was handed over: a retried hand-off does not count twice.
        DRIFT_CORRECTIONS.labels(source="full_sync", kind="API", action="converge").inc(len(result.apis))
        return len(result.apis)
