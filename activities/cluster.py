"""Activities that touch the cluster: snapshot, server-side apply, prune, readiness, restore.

They use the official ``kubernetes`` client (in-cluster config or ``KUBECONFIG``) through
its dynamic client, so any kind the gateway serves can be written the same way. Every call
has a request timeout; which errors are worth retrying, and after how long, is decided in
``activities.errors``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource as DynamicResource
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import http_failure, retry_after
from activities.managed_fields import owned_fields
from activities.sealing import Sealer
from agent.metrics import DRIFT_CORRECTIONS
from agent.settings import Settings
from models.api_workflow import (
    ApplyResult,
    PruneRequest,
    PruneResult,
    ReadinessRequest,
    ReadinessResult,
    Resource,
    ResourceSet,
    RestoreRequest,
    RestoreResult,
)
from models.naming import DEFAULT_GATEWAY_ID, api_selector, field_manager, owner_selector
from models.resources import MANAGED_KINDS, ResourceKind, known_kind, resource_id, sort_for_apply

log = logging.getLogger(__name__)

# Metadata the agent owns; everything else under metadata is the server's.
_KEPT_METADATA = ("name", "namespace", "labels", "annotations")
_SERVER_ONLY_FIELDS = ("status",)
# Kinds without a generation: APK reads them but does not redeploy when only they change.
UNVERSIONED_KINDS = frozenset({"ConfigMap", "Secret"})
# How long one watch request stays open before it is renewed.
WATCH_WINDOW_SECONDS = 5


def load_kube_api_client() -> k8s_client.ApiClient:
    """In-cluster configuration when running in a pod, else ``KUBECONFIG`` / ``~/.kube/config``."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s_client.ApiClient()


def _cluster_error(action: str, what: str, exc: Exception) -> Exception:
    """A retryable error for transient answers, a non-retryable one naming the rejection otherwise."""
    if isinstance(exc, ApplicationError):
        return ApplicationError(
            f"{action} {what}: {exc.message}",
            type=exc.type,
            non_retryable=exc.non_retryable,
            next_retry_delay=exc.next_retry_delay,
        )
    if isinstance(exc, ApiException):
        body = _status_body(exc)
        reason = str(body.get("message") or exc.reason)
        message = f"{action} {what}: the API server answered {exc.status} {exc.reason}: {reason}"
        delay = retry_after(exc.headers, (body.get("details") or {}).get("retryAfterSeconds"))
        return http_failure(
            message, exc.status, transient="ClusterUnavailable", permanent="ClusterRejected", delay=delay
        )
    return ApplicationError(f"{action} {what}: {type(exc).__name__}: {exc}", type="ClusterUnavailable")


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


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


class _TimedDynamicClient(DynamicClient):
    """A dynamic client whose every request, discovery included, has a timeout unless it sets one."""

    def __init__(self, client: k8s_client.ApiClient, timeout: float) -> None:
        self._default_timeout = timeout
        super().__init__(client)

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        params.setdefault("_request_timeout", self._default_timeout)
        return super().request(method, path, body, **params)


class KubeCluster:
    """Thin typed access to the namespace the agent writes into.

    Discovery waits for the first call, so a worker starts (and says so) while the API server
    is unreachable; the activities then fail with a retryable error until it answers.
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        namespace: str,
        request_timeout: float = 30.0,
        gateway_id: str = DEFAULT_GATEWAY_ID,
    ) -> None:
        self.namespace = namespace
        self.request_timeout = request_timeout
        # Whose resources these are: every listing is scoped to them, every apply is made as them.
        self.gateway_id = gateway_id
        self.field_manager = field_manager(gateway_id)
        self.owner_selector = owner_selector(gateway_id)
        self._api_client = api_client
        self._dynamic_client: DynamicClient | None = None
        self._lock = threading.Lock()
        self._kinds: dict[str, DynamicResource] = {}

    @property
    def api_client(self) -> k8s_client.ApiClient:
        return self._api_client

    @property
    def server(self) -> str:
        return str(self._api_client.configuration.host)

    @property
    def _dynamic(self) -> DynamicClient:
        with self._lock:
            if self._dynamic_client is None:
                try:
                    self._dynamic_client = _TimedDynamicClient(self._api_client, self.request_timeout)
                except ApiException:
                    raise
                except Exception as exc:
                    raise ApplicationError(
                        f"cannot reach the Kubernetes API server at {self.server}: {type(exc).__name__}: {exc}",
                        type="ClusterUnavailable",
                    ) from exc
            return self._dynamic_client

    def check(self) -> str | None:
        """None when the API server answers discovery, else why not (for the worker's start-up log)."""
        try:
            self._dynamic  # noqa: B018 - discovery is the check
        except (ApplicationError, ApiException) as exc:
            return str(exc)
        return None

    def kind(self, kind: str) -> DynamicResource:
        if kind not in self._kinds:
            spec = known_kind(kind)
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

    def list_selected(self, selector: str, kinds: Sequence[ResourceKind] = MANAGED_KINDS) -> list[dict[str, Any]]:
        """The objects of ``kinds`` matching ``selector`` that this agent owns: the selector is
        always ANDed with ``owner_selector``, so no listing ever returns another agent's objects."""
        scoped = f"{self.owner_selector},{selector}" if selector else self.owner_selector
        found: list[dict[str, Any]] = []
        for spec in kinds:
            listing = self.kind(spec.kind).get(namespace=self.namespace, label_selector=scoped, serializer=_plain)
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
            field_manager=self.field_manager,
            force_conflicts=True,
            serializer=_plain,
        )

    def delete(self, kind: str, name: str, uid: str | None = None) -> bool:
        """Delete ``name``; with ``uid``, only that very object (a newer one of the same name stays)."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}} if uid else None
        try:
            self.kind(kind).delete(name=name, namespace=self.namespace, body=body, serializer=_plain)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 409 and uid:
                log.info("%s/%s was replaced since it was seen (UID %s); left alone", kind, name, uid)
                return False
            raise

    def watch(self, kind: str, name: str, resource_version: str, window: int) -> Iterator[dict[str, Any]]:
        """Events of one object for ``window`` seconds; raises ApiException(410) when the version expired."""
        watcher = k8s_watch.Watch()
        for event in watcher.stream(
            self.kind(kind).get,
            namespace=self.namespace,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            serialize=False,
            timeout_seconds=window,
            _request_timeout=window + self.request_timeout,
        ):
            yield {"type": event["type"], "object": event["raw_object"]}


def readiness_verdict(obj: dict[str, Any], applied: ApplyResult) -> tuple[bool, str] | None:
    """``(accepted, message)`` once the gateway has answered this apply, else ``None``.

    When the apply moved a generation the gateway reads, only a status other than the one from
    before the apply counts. When nothing moved, the gateway does not redeploy and writes
    nothing: the status it has is its answer.
    """
    status = (obj.get("status") or {}).get("deploymentStatus")
    if not status:
        return None
    message = str(status.get("message") or "")
    if applied.gateway_must_answer is None:  # a result recorded before generations were compared
        if status == applied.api_status_at_apply and applied.api_changed:
            return None
    elif applied.gateway_must_answer and status == applied.api_status_before:
        return None
    return bool(status.get("accepted")), message


def _deletion_order(ids: list[str]) -> list[str]:
    """``Kind/name`` ids in reverse apply order: the API first, what it references after it."""
    found = [{"kind": kind, "metadata": {"name": name}} for kind, name in (rid.split("/", 1) for rid in ids)]
    return [resource_id(o) for o in reversed(sort_for_apply(found))]


def _heartbeat(*details: Any) -> None:
    if not activity.info().is_local:
        activity.heartbeat(*details)


class ClusterActivities:
    """Activities over one namespace; sync, so the worker runs them in its thread pool."""

    def __init__(self, cluster: KubeCluster, settings: Settings, sealer: Sealer) -> None:
        self._cluster = cluster
        self._settings = settings
        self._sealer = sealer

    def _live(self, organization: str, api_uuid: str) -> dict[str, dict[str, Any]]:
        selector = api_selector(organization, api_uuid, self._cluster.gateway_id)
        try:
            return {resource_id(obj): obj for obj in self._cluster.list_selected(selector)}
        except Exception as exc:
            raise _cluster_error("listing", f"resources of API {api_uuid}", exc) from exc

    @activity.defn
    def snapshot_api_resources(self, request: ResourceSet) -> ResourceSet:
        """What the agent owns of every resource of the API as it is now, sealed, to restore if a
        later step fails; with each object's UID and generation."""
        live = self._live(request.api.organization, request.api.api_uuid)
        resources = sort_for_apply([owned_fields(obj, self._cluster.field_manager) for obj in live.values()])
        return ResourceSet(
            api=request.api,
            resources=self._sealer.seal(resources),
            uids={rid: obj["metadata"]["uid"] for rid, obj in live.items() if obj["metadata"].get("uid")},
            generations={
                rid: obj["metadata"]["generation"] for rid, obj in live.items() if obj["metadata"].get("generation")
            },
        )

    @activity.defn
    def apply_api_resources(self, request: ResourceSet) -> ApplyResult:
        """Server-side apply in dependency order; the API anchor goes last.

        ``request.generations`` are the generations seen before (the snapshot): the result says
        whether the gateway must answer, i.e. whether an object it reads appeared or moved.
        """
        resources = sort_for_apply(self._sealer.unseal(request.resources))
        result = ApplyResult(applied=[], gateway_must_answer=False)
        api = next((r for r in resources if r["kind"] == "API"), None)
        if api is not None and not (request.generations_complete and resource_id(api) not in request.generations):
            try:
                before = self._cluster.get("API", api["metadata"]["name"])
            except Exception as exc:
                raise _cluster_error("reading", resource_id(api), exc) from exc
            result.api_status_before = ((before or {}).get("status") or {}).get("deploymentStatus")
        for resource in resources:
            rid = resource_id(resource)
            try:
                live = self._cluster.apply(resource)
            except Exception as exc:
                raise _cluster_error("applying", rid, exc) from exc
            result.applied.append(rid)
            if resource["kind"] not in UNVERSIONED_KINDS:
                generation = live["metadata"].get("generation")
                if generation is None or request.generations.get(rid) != generation:
                    result.gateway_must_answer = True
            _heartbeat(rid)
            if resource["kind"] == "API":
                rv = live["metadata"]["resourceVersion"]
                result.api_name = resource["metadata"]["name"]
                result.api_resource_version = rv
                result.api_changed = bool(result.gateway_must_answer)
                result.api_status_at_apply = (live.get("status") or {}).get("deploymentStatus")
        log.info(
            "applied %d resources of API %s (gateway must answer: %s)",
            len(result.applied),
            request.api.api_uuid,
            result.gateway_must_answer,
        )
        return result

    @activity.defn
    def prune_api_resources(self, request: PruneRequest) -> PruneResult:
        """Delete the API's resources that are not in ``keep`` and wait until they are gone.

        The candidates are ``request.candidates`` when given (the snapshot taken before this
        convergence: nothing else of the API can have appeared since), else a fresh listing.
        """
        keep = set(request.keep)
        uids = dict(request.uids)
        try:
            if request.candidates is None:
                live = self._live(request.api.organization, request.api.api_uuid)
                candidates = list(live)
                uids.update({rid: obj["metadata"].get("uid", "") for rid, obj in live.items()})
            else:
                candidates = request.candidates
            stale = _deletion_order([rid for rid in candidates if rid not in keep])
            deleted = [rid for rid in stale if self._cluster.delete(*rid.split("/", 1), uids.get(rid) or None)]
        except Exception as exc:
            raise _cluster_error("deleting", f"stale resources of API {request.api.api_uuid}", exc) from exc
        self._wait_until_gone(deleted, uids)
        if request.candidates is not None:  # a revision's prune, not a removal or a legacy restore
            for rid in deleted:
                DRIFT_CORRECTIONS.labels(source="prune", kind=rid.split("/", 1)[0], action="delete").inc()
        return PruneResult(deleted=deleted)

    def _wait_until_gone(self, ids: list[str], uids: dict[str, str]) -> None:
        deadline = time.monotonic() + self._settings.readiness_timeout_seconds
        remaining = list(ids)
        while remaining:
            try:
                still = []
                for rid in remaining:
                    obj = self._cluster.get(*rid.split("/", 1))
                    # A new object of the same name (a later apply) is not the one deleted.
                    if obj is not None and (not uids.get(rid) or obj["metadata"].get("uid") == uids[rid]):
                        still.append(rid)
                remaining = still
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
            _heartbeat(remaining)
            time.sleep(0.2)

    @activity.defn
    def wait_until_accepted(self, request: ReadinessRequest) -> ReadinessResult:
        """Watch the API until the gateway accepts (or rejects) what was just applied.

        A watch whose resourceVersion expired (410 Gone) starts again from a fresh read.
        """
        timeout = self._settings.readiness_timeout_seconds
        quick = request.within_seconds is not None and request.within_seconds < timeout
        if quick:
            timeout = request.within_seconds or 0.0
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
            except ApiException as exc:
                if exc.status != 410:
                    raise _cluster_error("watching", f"API {name}", exc) from exc
                log.info("watch of API %s expired (410 Gone); reading it again", name)
                verdict = None
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
                if quick:
                    return ReadinessResult(message=f"no verdict within {timeout:g}s", pending=True)
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
        _heartbeat("waiting for the gateway")
        window = max(1, min(WATCH_WINDOW_SECONDS, int(remaining + 0.999)))
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
        """Compensation as recorded by workflows started before ``restore_snapshot``: re-apply the
        snapshot and delete what it does not have."""
        self.apply_api_resources(snapshot)
        keep = [resource_id(r) for r in snapshot.resources]
        return self.prune_api_resources(PruneRequest(api=snapshot.api, keep=keep))

    @activity.defn
    def restore_snapshot(self, request: RestoreRequest) -> RestoreResult:
        """Compensation: write back only the objects whose agent-owned fields differ from the
        snapshot (or that are gone), and delete only what the failed attempt created."""
        snapshot = request.snapshot
        wanted = {resource_id(r): r for r in self._sealer.unseal(snapshot.resources)}
        live = self._live(snapshot.api.organization, snapshot.api.api_uuid)
        differs = [
            resource
            for rid, resource in wanted.items()
            if rid not in live or owned_fields(live[rid], self._cluster.field_manager) != resource
        ]
        result = RestoreResult(rewritten=[resource_id(r) for r in differs])
        if differs:
            generations = {rid: obj["metadata"].get("generation", 0) for rid, obj in live.items()}
            if "API" not in {r["kind"] for r in differs} and any(r["kind"] == "API" for r in wanted.values()):
                # The readiness wait needs the API's status from before the rollback's writes.
                differs.append(next(r for r in wanted.values() if r["kind"] == "API"))
            applied = self.apply_api_resources(
                ResourceSet(api=snapshot.api, resources=self._sealer.seal(differs), generations=generations)
            )
            if applied.gateway_must_answer and applied.api_name:
                result.applied = applied
        created = _deletion_order([rid for rid in request.created if rid in live and rid not in wanted])
        uids = {rid: live[rid]["metadata"].get("uid", "") for rid in created}
        try:
            result.deleted = [rid for rid in created if self._cluster.delete(*rid.split("/", 1), uids[rid] or None)]
        except Exception as exc:
            raise _cluster_error(
                "deleting", f"what the failed attempt created for API {snapshot.api.api_uuid}", exc
            ) from exc
        self._wait_until_gone(result.deleted, uids)
        log.info(
            "restored API %s: rewrote %s, deleted %s",
            snapshot.api.api_uuid,
            ", ".join(result.rewritten) or "nothing",
            ", ".join(result.deleted) or "nothing",
        )
        return result


def quiet_urllib3() -> None:
    # The kubernetes client logs every retry of urllib3 at WARNING; the activity reports instead.
    urllib3.disable_warnings()
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
