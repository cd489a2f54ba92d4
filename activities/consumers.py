"""Activities of the consumer workflows: what one application, subscription or tier should have
in the cluster (from the control plane's lists and the event), and the writes that get it there.

Level-driven: the control plane's list is the truth when it names the entity; the event's own
fields stand in when it does not (a list that does not filter, a control plane that lags), and a
deleting event removes the entity whatever the list says. The next full sync corrects either way.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.cluster import KubeCluster, _cluster_error
from activities.control_plane import (
    APPLICATIONS,
    KEY_MAPPINGS,
    SUBSCRIPTION_POLICIES,
    SUBSCRIPTIONS,
    ControlPlaneClient,
)
from activities.managed_fields import owned_fields
from agent.settings import Settings
from models.consumer_workflow import (
    ConsumerApplied,
    ConsumerDesired,
    ConsumerFetchRequest,
    ConsumerKind,
    ConsumerPrune,
    ConsumerRef,
    ConsumerResources,
    ConsumerRestore,
)
from models.consumers import CpApplication, CpKeyMapping, CpSubscription, CpSubscriptionPolicy
from models.naming import (
    API_NAME_ANNOTATION,
    API_UUID_LABEL,
    API_VERSION_ANNOTATION,
    consumer_selector,
    label_value,
)
from models.resources import CONSUMER_KINDS, TIER_KINDS, ResourceKind, resource_id, sort_consumers
from translation.consumers import (
    ConsumerOptions,
    application_resource,
    subscription_resources,
    tier_resource,
)
from translation.errors import TranslationError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# Which kinds each consumer entity owns.
ENTITY_KINDS: dict[ConsumerKind, tuple[str, ...]] = {
    "application": ("Application",),
    "subscription": ("Subscription", "ApplicationMapping"),
    "tier": ("RateLimitPolicy", "AIRateLimitPolicy"),
}


def parse_items(model: type[M], items: list[dict[str, Any]], what: str) -> list[M]:
    """Every item of a list answer, or an error naming the first that is not what the reference says."""
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(model.model_validate(item))
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}" for e in exc.errors()[:3])
            raise ApplicationError(
                f"{what}: item {index} is not understood ({problem})",
                type="ControlPlaneUnparseable",
                non_retryable=True,
            ) from None
    return parsed


class ConsumerClusters:
    """The namespaces consumer resources live in: tiers in the agent's, the rest in the applications'."""

    def __init__(self, applications: KubeCluster, tiers: KubeCluster, apis: KubeCluster) -> None:
        if len({applications.gateway_id, tiers.gateway_id, apis.gateway_id}) != 1:
            raise ValueError("the consumer clusters must belong to one agent (one gateway id)")
        self.applications = applications
        self.tiers = tiers
        self.apis = apis
        self.field_manager = applications.field_manager

    def for_kind(self, kind: str) -> KubeCluster:
        return self.tiers if kind in TIER_KINDS else self.applications

    def kinds_of(self, entity: ConsumerKind) -> list[ResourceKind]:
        return [k for k in CONSUMER_KINDS if k.kind in ENTITY_KINDS[entity]]

    def list_owned(self, entity: ConsumerKind, key: str | None = None) -> list[dict[str, Any]]:
        """Every object the agent owns for ``entity`` kinds (of one entity when ``key`` is given)."""
        found = []
        for spec in self.kinds_of(entity):
            cluster = self.for_kind(spec.kind)
            selector = consumer_selector(None, key, gateway_id=cluster.gateway_id)
            found.extend(cluster.list_selected(selector, kinds=[spec]))
        return found

    def api_name_and_version(self, api_uuid: str) -> tuple[str, str] | None:
        """The name and version of a deployed API, from its ``API`` object's annotations."""
        if not api_uuid:
            return None
        for obj in self.apis.list_selected(
            f"{API_UUID_LABEL}={label_value(api_uuid)}", kinds=_API_KIND
        ):
            annotations = obj["metadata"].get("annotations") or {}
            name, version = annotations.get(API_NAME_ANNOTATION), annotations.get(API_VERSION_ANNOTATION)
            if name and version:
                return name, version
        return None


class ConsumerActivities:
    """Sync activities (the worker runs them in its thread pool)."""

    def __init__(self, cp: ControlPlaneClient, clusters: ConsumerClusters, settings: Settings) -> None:
        self._cp = cp
        self._clusters = clusters
        self._settings = settings
        self.options = ConsumerOptions(
            application_namespace=settings.effective_application_namespace,
            tier_namespace=settings.namespace,
            gateway_id=settings.effective_gateway_id,
        )

    # ------------------------------------------------------------------ the desired state

    @activity.defn
    def fetch_consumer_desired(self, request: ConsumerFetchRequest) -> ConsumerDesired:
        ref, event = request.ref, request.event
        if event.removes:
            return ConsumerDesired(summary=f"{event.event_type}: removed")
        try:
            if ref.kind == "application":
                return self._application(ref, event.event_type, event.fields)
            if ref.kind == "subscription":
                return self._subscription(ref, event.fields)
            return self._tier(ref)
        except TranslationError as exc:
            raise ApplicationError(str(exc), type="Untranslatable", non_retryable=True) from exc

    def _application(self, ref: ConsumerRef, event_type: str, fields: dict[str, Any]) -> ConsumerDesired:
        org = ref.organization
        what = f"applications of {org}"
        listed = parse_items(CpApplication, self._cp.list_items(APPLICATIONS, org), what)
        app = next((a for a in listed if a.uuid == ref.key), None)
        if app is None and event_type in ("APPLICATION_CREATE", "APPLICATION_UPDATE"):
            app = CpApplication.model_validate({**fields, "uuid": ref.key})
        if app is None:
            return ConsumerDesired(
                skip_reason=f"the control plane does not list application {ref.key} (deleted since?)"
            )
        mappings = [
            m
            for m in parse_items(CpKeyMapping, self._cp.list_items(KEY_MAPPINGS, org), f"key mappings of {org}")
            if m.application_uuid == ref.key
            or (not m.application_uuid and app.id is not None and m.application_id == app.id)
        ]
        # The event is newer than a list that may lag: its key counts, and a removed key does not.
        key = fields.get("consumerKey")
        if key and event_type == "APPLICATION_REGISTRATION_CREATE" and all(m.consumer_key != key for m in mappings):
            mappings.append(CpKeyMapping.model_validate({**fields, "applicationUUID": ref.key}))
        if key and event_type == "REMOVE_APPLICATION_KEYMAPPING":
            mappings = [m for m in mappings if m.consumer_key != key]
        resource = application_resource(app, mappings, org, self.options)
        keys = ", ".join(sorted(f"{m.key_type.lower()} {m.consumer_key}" for m in mappings)) or "no keys"
        return ConsumerDesired(resources=[resource], summary=f"application {app.name or app.uuid}: {keys}")

    def _subscription(self, ref: ConsumerRef, fields: dict[str, Any]) -> ConsumerDesired:
        org = ref.organization
        from_event = CpSubscription.model_validate({**fields, "subscriptionUUID": ref.key})
        params = None
        if from_event.api_uuid and from_event.application_uuid:
            params = {"apiUUID": from_event.api_uuid, "applicationUUID": from_event.application_uuid}
        listed = parse_items(CpSubscription, self._cp.list_items(SUBSCRIPTIONS, org, params), f"subscriptions of {org}")
        sub = next((s for s in listed if s.uuid == ref.key), None) or from_event
        name, version = sub.api_name, sub.api_version
        if not (name and version):
            found = self._clusters.api_name_and_version(sub.api_uuid)
            if found is None:
                return ConsumerDesired(
                    skip_reason=f"API {sub.api_uuid or '?'} is not deployed on this gateway and the control "
                    "plane did not name it; the full sync adds the subscription once the API is deployed"
                )
            name, version = found
        resources = subscription_resources(sub, name, version, org, self.options)
        mapped = "mapped" if any(r["kind"] == "ApplicationMapping" for r in resources) else "no mapping (inactive)"
        return ConsumerDesired(
            resources=resources,
            summary=f"subscription of {sub.application_uuid} to {name} {version}: "
            f"{sub.state}, tier {sub.policy}, {mapped}",
        )

    def _tier(self, ref: ConsumerRef) -> ConsumerDesired:
        org = ref.organization
        listed = parse_items(
            CpSubscriptionPolicy,
            self._cp.list_items(SUBSCRIPTION_POLICIES, org, {"policyName": ref.key}),
            f"subscription policies of {org}",
        )
        policy = next((p for p in listed if p.name == ref.key), None)
        if policy is None:
            return ConsumerDesired(skip_reason=f"the control plane does not list subscription tier {ref.key!r}")
        resource = tier_resource(policy, org, self.options)
        if resource is None:
            return ConsumerDesired(summary=f"tier {policy.name}: no limit (nothing for the gateway to enforce)")
        return ConsumerDesired(resources=[resource], summary=f"tier {policy.name}: {resource['kind']}")

    # ------------------------------------------------------------------ the cluster

    def _live(self, ref: ConsumerRef) -> dict[str, dict[str, Any]]:
        try:
            return {resource_id(o): o for o in self._clusters.list_owned(ref.kind, ref.key)}
        except Exception as exc:
            raise _cluster_error("listing", f"resources of {ref.label}", exc) from exc

    @activity.defn
    def snapshot_consumer_resources(self, ref: ConsumerRef) -> ConsumerResources:
        live = self._live(ref)
        return ConsumerResources(
            ref=ref,
            resources=sort_consumers([owned_fields(o, self._clusters.field_manager) for o in live.values()]),
            uids={rid: o["metadata"].get("uid", "") for rid, o in live.items()},
        )

    @activity.defn
    def apply_consumer_resources(self, request: ConsumerResources) -> ConsumerApplied:
        """Server-side apply in dependency order, then read each back: what the API server keeps
        of the agent's fields must be what was applied (a webhook may have changed it)."""
        applied = []
        for resource in sort_consumers(request.resources):
            rid = resource_id(resource)
            cluster = self._clusters.for_kind(resource["kind"])
            try:
                live = cluster.apply(resource)
            except Exception as exc:
                raise _cluster_error("applying", rid, exc) from exc
            kept = owned_fields(live, cluster.field_manager)
            if kept.get("spec") != resource.get("spec"):
                raise ApplicationError(
                    f"{rid}: the API server did not keep the applied spec (a webhook or another field manager "
                    "changed it)",
                    type="ClusterRejected",
                    non_retryable=True,
                )
            applied.append(rid)
        return ConsumerApplied(applied=applied)

    @activity.defn
    def prune_consumer_resources(self, request: ConsumerPrune) -> ConsumerApplied:
        """Delete the snapshot's objects that are not kept (mappings before what they reference)."""
        keep = set(request.keep)
        stale = [rid for rid in request.uids if rid not in keep]
        stale.sort(key=lambda rid: -[k.kind for k in CONSUMER_KINDS].index(rid.split("/", 1)[0]))
        deleted = []
        for rid in stale:
            kind, name = rid.split("/", 1)
            try:
                if self._clusters.for_kind(kind).delete(kind, name, request.uids.get(rid) or None):
                    deleted.append(rid)
            except Exception as exc:
                raise _cluster_error("deleting", rid, exc) from exc
        self._wait_until_gone(deleted, request.uids)
        return ConsumerApplied(applied=deleted)

    def _wait_until_gone(self, ids: list[str], uids: dict[str, str]) -> None:
        deadline = time.monotonic() + self._settings.readiness_timeout_seconds
        remaining = list(ids)
        while remaining:
            still = []
            for rid in remaining:
                kind, name = rid.split("/", 1)
                try:
                    obj = self._clusters.for_kind(kind).get(kind, name)
                except Exception as exc:
                    raise _cluster_error("verifying deletion of", rid, exc) from exc
                if obj is not None and obj["metadata"].get("uid") == uids.get(rid):
                    still.append(rid)
            remaining = still
            if not remaining:
                return
            if time.monotonic() > deadline:
                raise ApplicationError(
                    f"still present after deletion: {', '.join(remaining)} (a finalizer may be holding them)",
                    type="DeletionTimeout",
                    non_retryable=True,
                )
            if not activity.info().is_local:
                activity.heartbeat(remaining)
            time.sleep(0.2)

    @activity.defn
    def restore_consumer_snapshot(self, request: ConsumerRestore) -> ConsumerApplied:
        """Compensation: write back what differs from the snapshot, delete what the attempt created."""
        snapshot = request.snapshot
        live = self._live(snapshot.ref)
        differs = [
            r
            for r in snapshot.resources
            if resource_id(r) not in live or owned_fields(live[resource_id(r)], self._clusters.field_manager) != r
        ]
        for resource in sort_consumers(differs):
            try:
                self._clusters.for_kind(resource["kind"]).apply(resource)
            except Exception as exc:
                raise _cluster_error("restoring", resource_id(resource), exc) from exc
        wanted = {resource_id(r) for r in snapshot.resources}
        created = [rid for rid in request.created if rid in live and rid not in wanted]
        pruned = self.prune_consumer_resources(
            ConsumerPrune(
                ref=snapshot.ref, keep=[], uids={rid: live[rid]["metadata"].get("uid", "") for rid in created}
            )
        )
        return ConsumerApplied(applied=[resource_id(r) for r in differs] + pruned.applied)


_API_KIND = [ResourceKind(api_version="dp.wso2.com/v1alpha3", kind="API")]
