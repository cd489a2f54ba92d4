"""The manifests in deploy/ parse, grant least privilege, and configure only settings that exist.

kubectl cannot validate offline here, so these checks catch what a cluster would
only reveal at rollout: a misspelt setting is silently ignored by pydantic-settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.settings import Settings
from models.resources import CONSUMER_KINDS, MANAGED_KINDS

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ENV_PREFIX = "GATEWAY_AGENT_"
ALLOWED_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
CLUSTER_SCOPED_KINDS = {"ClusterRole", "ClusterRoleBinding"}


def _manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return [doc for path in _manifest_files() for doc in _load(path)]


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _deployment(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in _of_kind(objects, "Deployment") if d["metadata"]["name"] == name)


def _field(variable: str) -> str:
    return variable.removeprefix(ENV_PREFIX).lower()


def _plural(kind: str) -> str:
    lower = kind.lower()
    return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


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


def test_no_cluster_wide_rights(objects):
    assert not [o["kind"] for o in objects if o["kind"] in CLUSTER_SCOPED_KINDS]
    role = _one(objects, "Role")
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule
        assert "*" not in rule["apiGroups"] and "*" not in rule["resources"] and "*" not in rule["verbs"]
        assert set(rule["verbs"]) <= ALLOWED_VERBS
        if any(r.endswith("/status") for r in rule["resources"]):
            assert rule["verbs"] == ["get"], "status belongs to the gateway operator: read it, never write it"


def test_role_covers_every_kind_the_agent_manages(objects):
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in _one(objects, "Role")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    managed = {(kind.api_version.rpartition("/")[0], _plural(kind.kind)) for kind in (*MANAGED_KINDS, *CONSUMER_KINDS)}
    for resource in managed:
        assert granted.get(resource) == ALLOWED_VERBS, f"{resource} lacks rights the agent uses"
    assert {key for key in granted if "/" not in key[1]} == managed, "rights on kinds the agent does not manage"


def test_role_lives_where_api_resources_go_and_binds_the_agent(objects):
    role, binding = _one(objects, "Role"), _one(objects, "RoleBinding")
    account = _one(objects, "ServiceAccount")
    target = _one(objects, "ConfigMap")["data"][f"{ENV_PREFIX}NAMESPACE"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == target
    assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]


def test_every_configured_variable_is_a_real_setting(objects):
    names = set(_one(objects, "ConfigMap")["data"])
    names |= set(_load(DEPLOY / "secret.example.yaml")[0]["stringData"])
    for deployment in _of_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= {env["name"] for env in container.get("env", [])}
    unknown = sorted(n for n in names if not n.startswith(ENV_PREFIX) or _field(n) not in Settings.model_fields)
    assert not unknown, f"not fields of agent.settings.Settings: {unknown}"
    secret_fields = {"broker_password", "cp_password", "sealing_key"}
    assert not secret_fields & {_field(n) for n in _one(objects, "ConfigMap")["data"]}, "secrets belong in the Secret"


def test_deployments_read_the_configmap_and_secret_that_exist(objects):
    configmap = _one(objects, "ConfigMap")["metadata"]["name"]
    secret = _load(DEPLOY / "secret.example.yaml")[0]["metadata"]["name"]
    for deployment in _of_kind(objects, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": configmap}}, {"secretRef": {"name": secret}}]


def test_listener_is_single_and_never_overlaps_a_rollout(objects):
    listener = _deployment(objects, "gateway-agent-listener")
    assert listener["spec"]["replicas"] == 1
    assert listener["spec"]["strategy"] == {"type": "Recreate"}
    assert listener["spec"]["template"]["spec"]["containers"][0]["args"] == ["listen"]
    worker = _deployment(objects, "gateway-agent-worker")
    assert worker["spec"]["replicas"] == 2
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]


def test_pods_run_locked_down_and_expose_metrics(objects):
    for deployment in _of_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["terminationGracePeriodSeconds"] == 60
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert container["resources"]["requests"] and container["resources"]["limits"]
        env = {e["name"]: e["value"] for e in container["env"]}
        metrics_port = int(env[f"{ENV_PREFIX}METRICS_PORT"])
        assert container["ports"] == [{"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}]
