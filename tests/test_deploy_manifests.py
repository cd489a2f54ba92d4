"""deploy/ renders with kustomize into objects Kubernetes accepts, configures only settings that
exist, and runs the agent locked down.

No cluster is available, so these checks catch what a cluster would only reveal at rollout: an
object its schema refuses, a misspelt setting (pydantic-settings silently ignores it), a probe on
a port nobody listens on. The Role's exact rules are derived from the code in test_rbac.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from opentelemetry.sdk import environment_variables as otel_variables

from agent.codec import generate_key_line
from agent.settings import Settings
from tests.kustomize import DEPLOY, Doc, of_kind, one, render

ENV_PREFIX = "GATEWAY_AGENT_"
# Kubernetes versions the manifests must be valid for: the oldest supported here and the newest
# kubernetes-validate knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/version",
                      "app.kubernetes.io/managed-by")  # fmt: skip
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
SECRET_FIELDS = {"broker_username", "broker_password", "cp_username", "cp_password", "sealing_key", "codec_keys"}
# What each component reads from the Secret: the worker talks to the control plane and names (and
# unseals) Secrets, the listener only to the broker; both are Temporal clients, so both encrypt.
SECRETS_OF = {
    "gateway-agent-worker": {"cp_username", "cp_password", "sealing_key", "codec_keys"},
    "gateway-agent-listener": {"broker_username", "broker_password", "codec_keys"},
}
HEALTH_PATHS = {"livenessProbe": "/livez", "startupProbe": "/livez", "readinessProbe": "/readyz"}
OTEL_VARIABLES = {v for k, v in vars(otel_variables).items() if k.startswith("OTEL_") and isinstance(v, str)}


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return render(DEPLOY)


def _manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _secret_example() -> Doc:
    return _load(DEPLOY / "secret.example.yaml")[0]


def _field(variable: str) -> str:
    return variable.removeprefix(ENV_PREFIX).lower()


def _pod(deployment: Doc) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _container(deployment: Doc) -> dict[str, Any]:
    (container,) = _pod(deployment)["containers"]
    return container


def _env(deployment: Doc) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container(deployment).get("env", [])}


def _dockerfile_user() -> tuple[int, int]:
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the Dockerfile sets no numeric USER uid:gid"
    uid, gid = users[-1]
    return int(uid), int(gid)


# ---------------------------------------------------------------------- files and rendering


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_parses_into_named_objects(path: Path):
    docs = _load(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: a document lacks apiVersion or kind"
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], f"{path.name}: a {doc['kind']} has no name"


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = _load(DEPLOY / "kustomization.yaml")[0]["resources"]
    expected = [p.name for p in _manifest_files() if not p.name.endswith(".example.yaml")]
    assert sorted(listed) == sorted(expected)
    # Listing the example would overwrite real credentials with placeholders on every apply.
    assert "secret.example.yaml" not in listed


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_is_valid_for_kubernetes(docs, version):
    problems = []
    for doc in [*docs, _secret_example()]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{doc['kind']} {doc['apiVersion']} is not a Kubernetes {version} kind")
    assert not problems, "\n".join(problems)


def test_the_validation_is_strict(docs):
    """A misspelt field must fail (otherwise the test above proves nothing)."""
    worker = copy.deepcopy(one(docs, "Deployment", "gateway-agent-worker"))
    _container(worker)["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": "health"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSIONS[0], strict=True)


def test_objects_carry_the_recommended_labels_and_their_namespace(docs):
    namespaces = {d["metadata"]["name"] for d in of_kind(docs, "Namespace")}
    for doc in docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        labels = doc["metadata"].get("labels") or {}
        assert all(labels.get(k) for k in RECOMMENDED_LABELS), f"{what} lacks {RECOMMENDED_LABELS}: {labels}"
        assert labels["app.kubernetes.io/name"] == "gateway-agent"
        if doc["kind"] not in CLUSTER_SCOPED:
            # Set in the manifest, so `kubectl apply -k` never drops it into the current context's namespace.
            assert doc["metadata"].get("namespace") in namespaces, f"{what} is not in a namespace deploy/ creates"
    for deployment in of_kind(docs, "Deployment"):
        template = deployment["spec"]["template"]["metadata"]["labels"]
        assert all(template.get(k) for k in (*RECOMMENDED_LABELS, "app.kubernetes.io/component"))
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template.items()
        # The selector is immutable: the version must not be in it, or an upgrade could not be applied.
        assert "app.kubernetes.io/version" not in deployment["spec"]["selector"]["matchLabels"]


# ---------------------------------------------------------------------- RBAC (its exact rules: test_rbac.py)


def test_no_cluster_wide_rights_and_no_wildcards(docs):
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    for role in of_kind(docs, "Role"):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
            assert not [r for r in rule["resources"] if "/" in r], "status belongs to the gateway operator"


def test_role_lives_where_the_agent_writes_and_binds_only_its_account(docs):
    role, binding, account = one(docs, "Role"), one(docs, "RoleBinding"), one(docs, "ServiceAccount")
    data = one(docs, "ConfigMap")["data"]
    target = data[f"{ENV_PREFIX}NAMESPACE"]
    assert data[f"{ENV_PREFIX}APPLICATION_NAMESPACE"] in ("", target), "the Role covers only one namespace"
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == target
    # Not the gateway's namespace, with its Secrets: the agent writes only where it alone writes.
    assert target != data[f"{ENV_PREFIX}GATEWAY_NAMESPACE"]
    assert target != account["metadata"]["namespace"], "the agent's pods and what it writes are kept apart"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]


def test_only_the_worker_gets_an_api_token(docs):
    assert one(docs, "ServiceAccount").get("automountServiceAccountToken") is False
    worker = one(docs, "Deployment", "gateway-agent-worker")
    listener = one(docs, "Deployment", "gateway-agent-listener")
    assert _pod(worker)["automountServiceAccountToken"] is True
    assert _pod(listener)["automountServiceAccountToken"] is False
    for deployment in (worker, listener):
        assert _pod(deployment)["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


# ---------------------------------------------------------------------- settings


def test_every_configured_variable_is_a_real_setting(docs):
    names = set(one(docs, "ConfigMap")["data"]) | set(_secret_example()["stringData"])
    for deployment in of_kind(docs, "Deployment"):
        names |= set(_env(deployment))
    ours = {n for n in names if n.startswith(ENV_PREFIX)}
    unknown = sorted(n for n in ours if _field(n) not in Settings.model_fields)
    assert not unknown, f"not fields of agent.settings.Settings: {unknown}"
    foreign = sorted(n for n in names - ours if n not in OTEL_VARIABLES)
    assert not foreign, f"neither GATEWAY_AGENT_* settings nor OpenTelemetry SDK variables: {foreign}"


def test_the_configmap_is_a_valid_configuration(docs, monkeypatch):
    """What the pods would read: it loads (a bad value fails here, not in a crash loop)."""
    for deployment in of_kind(docs, "Deployment"):
        env = dict(one(docs, "ConfigMap")["data"])
        env.update({n: e["value"] for n, e in _env(deployment).items() if "value" in e})
        env.update({n: "placeholder" for n, e in _env(deployment).items() if "valueFrom" in e})
        if "GATEWAY_AGENT_CODEC_KEYS" in env:  # checked at start: a placeholder is no key
            env["GATEWAY_AGENT_CODEC_KEYS"] = generate_key_line("k1")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings()
        assert settings.effective_application_namespace == settings.namespace


def test_credentials_come_from_the_secret_and_each_pod_gets_only_its_own(docs):
    configmap = one(docs, "ConfigMap")
    assert not SECRET_FIELDS & {_field(n) for n in configmap["data"]}, "secrets belong in the Secret"
    secret = _secret_example()
    assert {_field(n) for n in secret["stringData"]} == SECRET_FIELDS
    for deployment in of_kind(docs, "Deployment"):
        container = _container(deployment)
        # The Secret is never imported whole: each pod names the keys it needs.
        assert container["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
        from_secret = {}
        for name, env in _env(deployment).items():
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
                assert not ref.get("optional"), f"{name}: a missing credential must keep the pod from starting"
                from_secret[_field(name)] = ref["key"]
        assert set(from_secret) == SECRETS_OF[deployment["metadata"]["name"]]
        assert all(_field(key) == field for field, key in from_secret.items())


# ---------------------------------------------------------------------- the pods


def test_listener_is_single_and_never_overlaps_a_rollout(docs):
    listener = one(docs, "Deployment", "gateway-agent-listener")
    assert listener["spec"]["replicas"] == 1
    assert listener["spec"]["strategy"] == {"type": "Recreate"}
    assert _container(listener)["args"] == ["listen"]
    worker = one(docs, "Deployment", "gateway-agent-worker")
    assert worker["spec"]["replicas"] >= 2
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert _container(worker)["args"] == ["worker"]


def test_pods_run_locked_down_as_the_image_user(docs):
    uid, gid = _dockerfile_user()
    for deployment in of_kind(docs, "Deployment"):
        pod = _pod(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid) != (0, 0)
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["terminationGracePeriodSeconds"] >= 45, "the worker's graceful shutdown takes up to 30 s"
        container = _container(deployment)
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
        # The only writable place is a small emptyDir.
        (mount,) = container["volumeMounts"]
        (volume,) = pod["volumes"]
        assert mount == {"name": volume["name"], "mountPath": "/tmp"} and volume["emptyDir"]["sizeLimit"]


def test_probes_and_ports_match_the_settings(docs):
    for deployment in of_kind(docs, "Deployment"):
        container, env = _container(deployment), _env(deployment)
        ports = {int(env[f"{ENV_PREFIX}METRICS_PORT"]["value"]): "metrics",
                 int(env[f"{ENV_PREFIX}HEALTH_PORT"]["value"]): "health"}  # fmt: skip
        assert ports == {9464: "metrics", 8080: "health"}
        assert container["ports"] == [
            {"name": name, "containerPort": port, "protocol": "TCP"} for port, name in ports.items()
        ]
        for probe, path in HEALTH_PATHS.items():
            assert container[probe]["httpGet"] == {"path": path, "port": "health"}, f"{probe} of {deployment}"


def test_workers_spread_and_are_drained_one_at_a_time(docs):
    worker = one(docs, "Deployment", "gateway-agent-worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    spread = _pod(worker)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway", "a small cluster must still schedule both"
    (budget,) = of_kind(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1 < worker["spec"]["replicas"]
    assert budget["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]


def test_the_metrics_service_reaches_every_pod(docs):
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}]
    for deployment in of_kind(docs, "Deployment"):
        assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


# ---------------------------------------------------------------------- network


def _allowed(docs: list[Doc], deployment: Doc, direction: str) -> set[tuple[str, int | str]]:
    """(protocol, port) the pods of ``deployment`` may use, over every policy that selects them."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    found: set[tuple[str, int | str]] = set()
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        if not spec["podSelector"]["matchLabels"].items() <= labels.items():
            continue
        if direction.capitalize() not in spec["policyTypes"]:
            assert direction not in spec, f"{policy['metadata']['name']}: {direction} rules of a type it does not set"
            continue
        for rule in spec.get(direction, []):
            assert rule.get("ports"), f"{policy['metadata']['name']}: a {direction} rule without ports allows all"
            found |= {(p["protocol"], p["port"]) for p in rule["ports"]}
    return found


def test_network_policies_allow_only_what_each_component_talks_to(docs):
    common = {("UDP", 53), ("TCP", 53), ("TCP", 7233), ("TCP", 4317), ("TCP", 4318)}
    expected = {
        "gateway-agent-listener": common | {("TCP", 61613), ("TCP", 61614)},
        "gateway-agent-worker": common | {("TCP", 9443), ("TCP", 443), ("TCP", 6443)},
    }
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        assert _allowed(docs, deployment, "egress") == expected[name], name
        assert _allowed(docs, deployment, "ingress") == {("TCP", "metrics"), ("TCP", "health")}, name
        # Every pod is selected by a policy with both types: nothing else gets in or out.
        types = {t for p in of_kind(docs, "NetworkPolicy")
                 if p["spec"]["podSelector"]["matchLabels"].items()
                 <= deployment["spec"]["template"]["metadata"]["labels"].items()
                 for t in p["spec"]["policyTypes"]}  # fmt: skip
        assert types == {"Ingress", "Egress"}
