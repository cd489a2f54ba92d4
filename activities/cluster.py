"""Activities that touch the cluster: snapshot, server-side apply, prune, readiness, restore.

They use the official ``kubernetes`` client (in-cluster config or ``KUBECONFIG``) through
its dynamic client, so any kind the gateway serves can be written the same way.
Which errors are worth retrying is decided here, once, where the API server answers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource as DynamicResource
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sealing import Sealer
from agent.settings import Settings
from models.api_workflow import (
    ApplyResult,
    PruneRequest,
    PruneResult,
    ReadinessRequest,
    ReadinessResult,
    Resource,
    ResourceSet,
)
from models.naming import api_selector
from models.resources import MANAGED_KINDS, resource_id, sort_for_apply

log = logging.getLogger(__name__)

FIELD_MANAGER = "gateway-agent"
# Metadata the agent owns; everything else under metadata is the server's.
_KEPT_METADATA = ("name", "namespace", "labels", "annotations")
_SERVER_ONLY_FIELDS = ("status",)


def load_kube_api_client() -> k8s_client.ApiClient:
    """In-cluster configuration when running in a pod, else ``KUBECONFIG`` / ``~/.kube/config``."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s_client.ApiClient()


def _retryable(status: int | None) -> bool:
    return status is None or status in (408, 409, 429) or status >= 500


def _cluster_error(action: str, what: str, exc: Exception) -> Exception:
    """A retryable error for transient answers, a non-retryable one naming the rejection otherwise."""
    if isinstance(exc, ApplicationError):
        return ApplicationError(f"{action} {what}: {exc.message}", type=exc.type, non_retryable=exc.non_retryable)
    if isinstance(exc, ApiException):
        reason = _status_message(exc)
        message = f"{action} {what}: the API server answered {exc.status} {exc.reason}: {reason}"
        if _retryable(exc.status):
            return ApplicationError(message, type="ClusterUnavailable")
        return ApplicationError(message, type="ClusterRejected", non_retryable=True)
    return ApplicationError(f"{action} {what}: {type(exc).__name__}: {exc}", type="ClusterUnavailable")


def _status_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def strip_server_fields(obj: dict[str, Any]) -> Resource:
    """The part of a live object the agent applies: no status, no server-set metadata."""
    metadata = obj.get("metadata") or {}
    out: Resource = {k: v for k, v in obj.items() if k not in _SERVER_ONLY_FIELDS and k != "metadata"}
    out["metadata"] = {k: metadata[k] for k in _KEPT_METADATA if metadata.get(k)}
    return out


def _plain(_client: object, data: dict[str, Any]) -> dict[str, Any]:
    """Keep answers as plain dicts: the dynamic client's ResourceInstance wrapping costs more CPU
    than the request itself."""
    return data


class KubeCluster:
    """Thin typed access to the namespace the agent writes into."""

    def __init__(self, api_client: k8s_client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self._dynamic = DynamicClient(api_client)
        self._kinds: dict[str, DynamicResource] = {}

    def kind(self, kind: str) -> DynamicResource:
        if kind not in self._kinds:
            spec = next(k for k in MANAGED_KINDS if k.kind == kind)
            try:
                self._kinds[kind] = self._dynamic.resources.get(api_version=spec.api_version, kind=spec.kind)
            except ResourceNotFoundError as exc:
                # Retryable: the CRDs may be installed while the workflow waits.
                raise ApplicationError(
                    f"the cluster does not serve {spec.kind} ({spec.api_version}); "
                    "are the WSO2 APK and Gateway API CRDs installed?",
                    type="ClusterMissingKind",
                ) from exc
        return self._kinds[kind]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.kind(kind).get(name=name, namespace=self.namespace, serializer=_plain)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_selected(self, selector: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for spec in MANAGED_KINDS:
            listing = self.kind(spec.kind).get(namespace=self.namespace, label_selector=selector, serializer=_plain)
            for item in listing.get("items", []):
                item.setdefault("kind", spec.kind)
                item.setdefault("apiVersion", spec.api_version)
                found.append(item)
        return found

    def apply(self, resource: Resource) -> dict[str, Any]:
        return self.kind(resource["kind"]).server_side_apply(
            body=resource,
            name=resource["metadata"]["name"],
            namespace=self.namespace,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            serializer=_plain,
        )

    def delete(self, kind: str, name: str) -> bool:
        try:
            self.kind(kind).delete(name=name, namespace=self.namespace, serializer=_plain)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def watch(self, kind: str, name: str, resource_version: str, timeout: int) -> Iterator[dict[str, Any]]:
        for event in self.kind(kind).watch(
            namespace=self.namespace, name=name, resource_version=resource_version, timeout=timeout
        ):
            yield {"type": event["type"], "object": event["raw_object"]}


def readiness_verdict(obj: dict[str, Any], applied: ApplyResult) -> tuple[bool, str] | None:
    """``(accepted, message)`` once the gateway has answered this apply, else ``None``.

    A status counts only if it is not the one the API had when this apply was read back;
    an apply that changed nothing keeps an earlier acceptance (nothing would wake the gateway).
    """
    status = (obj.get("status") or {}).get("deploymentStatus")
    if not status:
        return None
    message = str(status.get("message") or "")
    if status == applied.api_status_at_apply and applied.api_changed:
        return None
    return bool(status.get("accepted")), message


class ClusterActivities:
    """Activities over one namespace; sync, so the worker runs them in its thread pool."""

    def __init__(self, cluster: KubeCluster, settings: Settings, sealer: Sealer) -> None:
        self._cluster = cluster
        self._settings = settings
        self._sealer = sealer

    @activity.defn
    def snapshot_api_resources(self, request: ResourceSet) -> ResourceSet:
        """Every resource of the API as it is now, sealed, to restore if a later step fails."""
        selector = api_selector(request.api.organization, request.api.api_uuid)
        try:
            live = self._cluster.list_selected(selector)
        except Exception as exc:
            raise _cluster_error("listing", f"resources of API {request.api.api_uuid}", exc) from exc
        resources = sort_for_apply([strip_server_fields(obj) for obj in live])
        return ResourceSet(api=request.api, resources=self._sealer.seal(resources))

    @activity.defn
    def apply_api_resources(self, request: ResourceSet) -> ApplyResult:
        """Server-side apply in dependency order; the API anchor goes last."""
        resources = sort_for_apply(self._sealer.unseal(request.resources))
        result = ApplyResult(applied=[])
        for resource in resources:
            rid = resource_id(resource)
            before = None
            try:
                if resource["kind"] == "API":
                    before = self._cluster.get("API", resource["metadata"]["name"])
                live = self._cluster.apply(resource)
            except Exception as exc:
                raise _cluster_error("applying", rid, exc) from exc
            result.applied.append(rid)
            activity.heartbeat(rid)
            if resource["kind"] == "API":
                rv = live["metadata"]["resourceVersion"]
                result.api_name = resource["metadata"]["name"]
                result.api_resource_version = rv
                result.api_changed = before is None or before["metadata"]["resourceVersion"] != rv
                result.api_status_at_apply = (live.get("status") or {}).get("deploymentStatus")
        log.info("applied %d resources of API %s", len(result.applied), request.api.api_uuid)
        return result

    @activity.defn
    def prune_api_resources(self, request: PruneRequest) -> PruneResult:
        """Delete the API's resources that are not in ``keep`` and wait until they are gone.

        The candidates are ``request.candidates`` when given (the snapshot taken before this
        convergence: nothing else of the API can have appeared since), else a fresh listing.
        """
        keep = set(request.keep)
        try:
            if request.candidates is None:
                selector = api_selector(request.api.organization, request.api.api_uuid)
                found = [
                    {"kind": o["kind"], "metadata": {"name": o["metadata"]["name"]}}
                    for o in self._cluster.list_selected(selector)
                ]
            else:
                found = [{"kind": k, "metadata": {"name": n}} for k, n in (c.split("/", 1) for c in request.candidates)]
            stale = list(reversed(sort_for_apply([o for o in found if resource_id(o) not in keep])))
            deleted = [resource_id(o) for o in stale if self._cluster.delete(o["kind"], o["metadata"]["name"])]
        except Exception as exc:
            raise _cluster_error("deleting", f"stale resources of API {request.api.api_uuid}", exc) from exc
        self._wait_until_gone(deleted)
        return PruneResult(deleted=deleted)

    def _wait_until_gone(self, ids: list[str]) -> None:
        deadline = time.monotonic() + self._settings.readiness_timeout_seconds
        remaining = list(ids)
        while remaining:
            try:
                remaining = [rid for rid in remaining if self._cluster.get(*rid.split("/", 1)) is not None]
            except Exception as exc:
                raise _cluster_error("verifying deletion of", ", ".join(remaining), exc) from exc
            if not remaining:
                return
            if time.monotonic() > deadline:
                raise ApplicationError(
                    f"still present {self._settings.readiness_timeout_seconds:g}s after deletion: "
                    f"{', '.join(remaining)} (a finalizer may be holding them)",
                    type="DeletionTimeout",
                    non_retryable=True,
                )
            activity.heartbeat(remaining)
            time.sleep(0.2)

    @activity.defn
    def wait_until_accepted(self, request: ReadinessRequest) -> ReadinessResult:
        """Watch the API until the gateway accepts (or rejects) what was just applied."""
        timeout = self._settings.readiness_timeout_seconds
        deadline = time.monotonic() + timeout
        name = request.api_name
        while True:
            try:
                obj = self._cluster.get("API", name)
                if obj is None:
                    raise ApplicationError(f"API {name} disappeared while waiting for the gateway", type="ApiGone")
                verdict = readiness_verdict(obj, request.applied)
                if verdict is None:
                    verdict = self._watch_for_verdict(obj, request, deadline)
            except ApplicationError:
                raise
            except Exception as exc:
                raise _cluster_error("watching", f"API {name}", exc) from exc
            if verdict is not None:
                accepted, message = verdict
                if not accepted:
                    raise ApplicationError(
                        f"the gateway rejected API {name}: {message or 'no reason given'}",
                        type="GatewayRejected",
                        non_retryable=True,
                    )
                return ReadinessResult(message=message or "accepted")
            if time.monotonic() >= deadline:
                raise ApplicationError(
                    f"the gateway did not accept API {name} within {timeout:g}s "
                    "(no new status.deploymentStatus; check the gateway operator's logs)",
                    type="ReadinessTimeout",
                    non_retryable=True,
                )

    def _watch_for_verdict(
        self, obj: dict[str, Any], request: ReadinessRequest, deadline: float
    ) -> tuple[bool, str] | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        activity.heartbeat("waiting for the gateway")
        window = max(1, min(5, int(remaining + 0.999)))
        for event in self._cluster.watch("API", request.api_name, obj["metadata"]["resourceVersion"], window):
            if event["type"] in ("ADDED", "MODIFIED"):
                verdict = readiness_verdict(event["object"], request.applied)
                if verdict is not None:
                    return verdict
            if time.monotonic() >= deadline:
                break
        return None

    @activity.defn
    def restore_api_resources(self, snapshot: ResourceSet) -> PruneResult:
        """Compensation: re-apply the snapshot and delete what the failed attempt created."""
        self.apply_api_resources(snapshot)
        keep = [resource_id(r) for r in snapshot.resources]
        return self.prune_api_resources(PruneRequest(api=snapshot.api, keep=keep))


def quiet_urllib3() -> None:
    # The kubernetes client logs every retry of urllib3 at WARNING; the activity reports instead.
    urllib3.disable_warnings()
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
