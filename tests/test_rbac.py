"""The Role in deploy/rbac.yaml grants exactly what the agent's code asks of the API server.

Rather than reading the code for calls, the test runs it: the worker's own activities (wired by
``worker.build_worker``, configured from the rendered ConfigMap) deploy, redeploy, roll back and
remove APIs of every kind, apply, prune and restore applications, subscriptions and tiers, and run
a full sync, against the API-server emulator with its stand-in gateway operator. The emulator logs
what RBAC would check for each request (verb, API group, resource, namespace; a server-side apply
that creates counts as ``create`` too), and that set must equal the Role's rules expanded: nothing
missing, nothing extra. Guards keep the exercise honest: every activity that touches the cluster
runs, every request method of the cluster client is used, no other module talks to the API server,
and every request outside the log is discovery (open to all through ``system:discovery``).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.fernet import Fernet
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from temporalio.testing import ActivityEnvironment

import worker as worker_module
from activities.cluster import ClusterActivities, KubeCluster
from activities.consumers import ConsumerActivities
from activities.sync import SyncActivities
from agent.settings import Settings
from harness.api_projects import load_project_dir, with_changes
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from intake.listener import _signal_of
from models.api_workflow import ApiRef, PruneRequest, ReadinessRequest, ResourceSet, RestoreRequest
from models.consumer_workflow import (
    ConsumerEventSignal,
    ConsumerFetchRequest,
    ConsumerPrune,
    ConsumerResources,
    ConsumerRestore,
    SyncInput,
)
from models.events import encode_envelope, parse_message
from models.resources import CONSUMER_KINDS, MANAGED_KINDS
from tests.kustomize import DEPLOY, REPO, one, render

ORG = "carbon.super"
FIXTURES = REPO / "tests" / "translation" / "fixtures"
# Between them, every kind the agent writes for an API (Secret, Scope, InterceptorService, GQLRoute, ...).
API_FIXTURES = ("payments-endpoint-credentials", "fraud-interceptor", "starwars-graphql", "catalog-throttling")
# The cluster client's methods that send requests (besides discovery).
REQUESTING_METHODS = ("get", "list_selected", "apply", "delete", "watch")
# Paths the built-in system:discovery and system:public-info-viewer roles open to every client.
DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz")
# Packages of the running agent (the image's), where nothing but activities/cluster.py may use the client.
AGENT_SOURCES = ("agent", "activities", "intake", "models", "translation", "workflows", "worker.py")

Permission = tuple[str, str, str]  # (verb, API group, resource)


@dataclass
class Exercise:
    kube: KubeEmulator
    cp: ControlPlaneSimulator
    settings: Settings
    activities: dict[str, Callable[..., Any]]
    # The activities whose objects hold a cluster client.
    touching: set[str]
    called: set[str] = field(default_factory=set)
    cluster_calls: set[str] = field(default_factory=set)
    env: ActivityEnvironment = field(default_factory=ActivityEnvironment)
    # (method, path) of every request the exercise sent, discovery included.
    requests: list[tuple[str, str]] = field(default_factory=list)

    def run(self, name: str, arg: Any) -> Any:
        self.called.add(name)
        return self.env.run(self.activities[name], arg)


def _settings_from(configmap: dict[str, Any], **overrides: Any) -> Settings:
    values = {k.removeprefix("GATEWAY_AGENT_").lower(): v for k, v in configmap["data"].items()}
    return Settings.model_validate({**values, **overrides})


@pytest.fixture(scope="module")
def deploy_docs() -> list[dict[str, Any]]:
    return render(DEPLOY)


@pytest.fixture(scope="module")
def exercise(deploy_docs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exercise]:
    configmap = one(deploy_docs, "ConfigMap")
    kube = KubeEmulator(gateway_operator=True, operator_delay=0.2)
    kube.start()
    cp = ControlPlaneSimulator(broker_url=None)
    cp.start()
    try:
        settings = _settings_from(
            configmap,
            cp_url=cp.url,
            cp_username=cp.username,
            cp_password=cp.password,
            sealing_key=Fernet.generate_key().decode(),
            readiness_timeout_seconds=10,
        )
        kubeconfig = kube.write_kubeconfig(tmp_path_factory.mktemp("rbac") / "kubeconfig")
        api_client = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        for namespace in {settings.namespace, settings.effective_application_namespace}:
            k8s_client.CoreV1Api(api_client).create_namespace({"metadata": {"name": namespace}})
        cluster = KubeCluster(
            api_client,
            settings.namespace,
            request_timeout=settings.kube_request_timeout_seconds,
            gateway_id=settings.effective_gateway_id,
        )
        built = _worker_parts(settings, cluster)
        activities = {fn.__name__: fn for fn in built["activities"]}
        touching = {
            name
            for name, fn in activities.items()
            if isinstance(getattr(fn, "__self__", None), ClusterActivities | ConsumerActivities | SyncActivities)
        }
        exercise = Exercise(kube=kube, cp=cp, settings=settings, activities=activities, touching=touching)
        with _counting_cluster_calls(exercise.cluster_calls):
            kube.clear_access_log()
            start = len(kube.request_log)
            _run_everything(exercise)
            exercise.requests = kube.request_log[start:]
        yield exercise
    finally:
        cp.stop()
        kube.stop()


def _worker_parts(settings: Settings, cluster: KubeCluster) -> dict[str, Any]:
    """What ``build_worker`` hands to Temporal's Worker (its activities, wired as in production); the
    Temporal client is a stand-in, since no activity exercised here talks to Temporal."""
    original = worker_module.Worker
    worker_module.Worker = lambda client, **parts: parts  # type: ignore[assignment,misc]
    client = SimpleNamespace(namespace=settings.temporal_namespace)
    try:
        return worker_module.build_worker(client, settings, cluster)  # type: ignore[arg-type,return-value]
    finally:
        worker_module.Worker = original  # type: ignore[misc]


class _counting_cluster_calls:
    """Record which request methods of KubeCluster the exercise used."""

    def __init__(self, seen: set[str]) -> None:
        self.seen = seen
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        for name in REQUESTING_METHODS:
            original = self.saved[name] = getattr(KubeCluster, name)

            def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                self.seen.add(_name)
                return _original(*args, **kwargs)

            setattr(KubeCluster, name, wraps(original)(counted))

    def __exit__(self, *exc: object) -> None:
        for name, original in self.saved.items():
            setattr(KubeCluster, name, original)


# ---------------------------------------------------------------------- the exercise


def _consumer_signal(cp: ControlPlaneSimulator) -> ConsumerEventSignal:
    """The signal the listener makes of the simulator's last event."""
    event = cp.published[-1]
    signal = _signal_of(parse_message(encode_envelope(event["type"], event, event["timeStamp"])))
    assert isinstance(signal, ConsumerEventSignal)
    return signal


def _deploy_api(ex: Exercise, ref: ApiRef) -> tuple[ResourceSet, list[str]]:
    """The steps of ApiDeployment for one event: fetch ∥ snapshot, apply, prune ∥ wait; returns the
    snapshot taken before the apply and what was applied."""
    desired = ex.run("fetch_desired_state", ref)
    snapshot = ex.run("snapshot_api_resources", ResourceSet(api=ref))
    applied = ex.run(
        "apply_api_resources", ResourceSet(api=ref, resources=desired.resources, generations=snapshot.generations)
    )
    ex.run("prune_api_resources", PruneRequest(api=ref, keep=applied.applied, candidates=list(snapshot.uids),
                                               uids=snapshot.uids))  # fmt: skip
    if applied.gateway_must_answer:
        ex.run("wait_until_accepted", ReadinessRequest(api_name=applied.api_name, applied=applied))
    return snapshot, applied.applied


def _consumer_event(ex: Exercise, signal: ConsumerEventSignal) -> ConsumerResources:
    """The steps of ConsumerDeployment: fetch ∥ snapshot, apply, prune; returns the snapshot."""
    desired = ex.run("fetch_consumer_desired", ConsumerFetchRequest(ref=signal.ref, event=signal))
    snapshot = ex.run("snapshot_consumer_resources", signal.ref)
    applied = ex.run("apply_consumer_resources", ConsumerResources(ref=signal.ref, resources=desired.resources))
    ex.run("prune_consumer_resources", ConsumerPrune(ref=signal.ref, keep=applied.applied, uids=snapshot.uids))
    return snapshot


def _run_everything(ex: Exercise) -> None:
    cp = ex.cp
    # APIs: deploy each (the readiness wait watches the API until the operator's status comes).
    projects = {}
    for name in API_FIXTURES:
        (folder,) = [p for p in (FIXTURES / name).iterdir() if p.is_dir()]
        project = load_project_dir(folder)
        cp.deploy(project, publish=False)
        projects[project.uuid] = project
        _deploy_api(ex, ApiRef(organization=ORG, api_uuid=project.uuid))
    first = next(iter(projects.values()))
    ref = ApiRef(organization=ORG, api_uuid=first.uuid)

    # A new revision that fails after its apply: the rollback restores the snapshot and deletes
    # what the attempt created; the legacy compensation of older histories, too.
    cp.deploy(with_changes(first, revision_id="2", data_updates={"context": "/payments-v2"}), publish=False)
    desired = ex.run("fetch_desired_state", ref)
    snapshot = ex.run("snapshot_api_resources", ResourceSet(api=ref))
    applied = ex.run(
        "apply_api_resources", ResourceSet(api=ref, resources=desired.resources, generations=snapshot.generations)
    )
    restored = ex.run("restore_snapshot", RestoreRequest(snapshot=snapshot, created=applied.applied))
    if restored.applied is not None:
        ex.run("wait_until_accepted", ReadinessRequest(api_name=restored.applied.api_name, applied=restored.applied))
    ex.run("restore_api_resources", snapshot)

    # Consumers: a tier, an AI tier, an application with a key, a subscription (its mapping).
    cp.add_subscription_policy("Gold", request_count=5000, time_unit="min")
    gold = _consumer_event(ex, _consumer_signal(cp))
    cp.add_subscription_policy("TokenGold", ai_quota={"totalTokenCount": 1000, "promptTokenCount": 500,
                                                      "completionTokenCount": 500})  # fmt: skip
    _consumer_event(ex, _consumer_signal(cp))
    app = cp.create_application("RbacApp", policy="Unlimited")
    _consumer_event(ex, _consumer_signal(cp))
    cp.add_key(app["uuid"])
    _consumer_event(ex, _consumer_signal(cp))
    subscription = cp.subscribe(app["uuid"], first.uuid, policy="Gold")
    _consumer_event(ex, _consumer_signal(cp))
    # A failed tier change rolls back to the snapshot.
    cp.update_subscription_policy("Gold", request_count=6000)
    signal = _consumer_signal(cp)
    before = ex.run("snapshot_consumer_resources", signal.ref)
    desired = ex.run("fetch_consumer_desired", ConsumerFetchRequest(ref=signal.ref, event=signal))
    ex.run("apply_consumer_resources", ConsumerResources(ref=signal.ref, resources=desired.resources))
    ex.run("restore_consumer_snapshot", ConsumerRestore(snapshot=before, created=[]))
    assert gold.ref == signal.ref

    # The full sync: behind the agent's back (no events) an application goes and another comes,
    # and one API's route is deleted by hand; the sync converges.
    orphan = cp.create_application("RbacOrphan")
    _consumer_event(ex, _consumer_signal(cp))
    cp.delete_application(orphan["uuid"], publish=False)
    cp.create_application("RbacLate", publish=False)
    route = next(o for o in ex.kube.objects("HTTPRoute", ex.settings.namespace))
    ex.kube.store.delete(ex.kube.registry.by_kind("HTTPRoute"), ex.settings.namespace, route["metadata"]["name"])
    result = ex.run("sync_consumers", SyncInput(allow_mass_delete=True, trigger="test"))
    assert not result.aborted and result.created and result.deleted, result

    # Removal: an API the control plane no longer deploys loses everything, listed afresh.
    for api_uuid in projects:
        cp.undeploy(api_uuid, publish=False)
        ref = ApiRef(organization=ORG, api_uuid=api_uuid)
        ex.run("fetch_desired_state", ref)
        ex.run("prune_api_resources", PruneRequest(api=ref, keep=[]))
    # Deleting events remove an entity whatever the list says (and wait until it is gone).
    cp.unsubscribe(subscription["subscriptionUUID"])
    _consumer_event(ex, _consumer_signal(cp))
    cp.delete_application(app["uuid"])
    _consumer_event(ex, _consumer_signal(cp))
    for tier in ("Gold", "TokenGold"):
        cp.delete_subscription_policy(tier)
        _consumer_event(ex, _consumer_signal(cp))


# ---------------------------------------------------------------------- what the Role grants


def _granted(role: dict[str, Any]) -> set[Permission]:
    return {
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _used(ex: Exercise) -> set[Permission]:
    return {(a.verb, a.group, a.resource) for a in ex.kube.access_log}


def test_the_role_grants_exactly_what_the_code_uses(exercise, deploy_docs):
    granted, used = _granted(one(deploy_docs, "Role")), _used(exercise)
    missing, extra = sorted(used - granted), sorted(granted - used)
    assert not missing, f"the code needs rights the Role does not grant (verb, group, resource): {missing}"
    assert not extra, f"the Role grants rights the code never uses (verb, group, resource): {extra}"


def test_every_request_goes_to_the_roles_namespace(exercise, deploy_docs):
    role = one(deploy_docs, "Role")
    namespaces = {a.namespace for a in exercise.kube.access_log}
    assert namespaces == {role["metadata"]["namespace"]} == {exercise.settings.namespace}


def _is_discovery(path: str) -> bool:
    """/api, /api/<version>, /apis, /apis/<group>[/<version>], /version, /openapi/...: no resource."""
    segments = [s for s in path.split("?")[0].split("/") if s]
    if segments[:1] == ["api"]:
        return len(segments) <= 2
    if segments[:1] == ["apis"]:
        return len(segments) <= 3
    return f"/{segments[0]}" in DISCOVERY_PREFIXES if segments else False


def test_every_other_request_is_discovery(exercise):
    """What is not on a resource in the Role's namespace is discovery, which every client may do."""
    namespaced = f"/namespaces/{exercise.settings.namespace}/"
    others = [path for _, path in exercise.requests if namespaced not in path]
    assert others, "the client discovers the API first"
    outside = [p for p in others if not _is_discovery(p)]
    assert not outside, f"requests outside the Role's namespace that are not discovery: {outside}"
    resources = [path for _, path in exercise.requests if namespaced in path]
    assert len(resources) <= len(exercise.kube.access_log), "a resource request the access log missed"


def test_the_exercise_covers_every_cluster_path(exercise):
    assert exercise.touching, "no activity holds a cluster client?"
    not_run = sorted(exercise.touching - exercise.called)
    assert not not_run, f"activities that touch the cluster but were not exercised: {not_run}"
    assert exercise.cluster_calls == set(REQUESTING_METHODS)
    # Every kind was written, read, listed and deleted (so the Role is uniform per kind for a reason).
    kinds_used = {(a.group, a.resource) for a in exercise.kube.access_log if a.verb in ("create", "delete")}
    for spec in {*MANAGED_KINDS, *CONSUMER_KINDS}:
        plural = exercise.kube.registry.by_kind(f"{spec.kind}.{spec.group}" if spec.group else spec.kind).plural
        assert (spec.group, plural) in kinds_used, f"{spec.kind} was never created and deleted"


def test_only_the_cluster_module_talks_to_the_api_server():
    """Every request goes through activities/cluster.py, the code the exercise drives (harness/
    and tests/ are not in the image)."""
    offenders = []
    for source in AGENT_SOURCES:
        root = REPO / source
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            if path == REPO / "activities" / "cluster.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(n == "kubernetes" or n.startswith("kubernetes.") for n in names):
                    offenders.append(str(Path(path).relative_to(REPO)))
    assert not offenders, f"modules using the Kubernetes client outside activities/cluster.py: {offenders}"
