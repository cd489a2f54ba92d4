"""The cluster layer against an API server that lacks the gateway's CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import config as k8s_config
from temporalio.exceptions import ApplicationError

from activities.cluster import KubeCluster, _cluster_error
from harness.kube_emulator import KubeEmulator


def test_a_cluster_without_the_apk_crds_gets_an_error_that_says_so(tmp_path: Path) -> None:
    (tmp_path / "crds").mkdir()
    with KubeEmulator(crd_dir=tmp_path / "crds") as kube:
        client = k8s_config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "config")))
        cluster = KubeCluster(client, "default")
        assert cluster.get("ConfigMap", "absent") is None  # core kinds are served
        with pytest.raises(ApplicationError) as info:
            cluster.kind("API")
    error = _cluster_error("applying", "API/x", info.value)
    assert "does not serve API (dp.wso2.com/v1alpha3)" in error.message and "CRDs installed" in error.message
    assert error.message.startswith("applying API/x: ") and not error.non_retryable


@pytest.mark.faults
def test_a_worker_starts_while_the_api_server_is_unreachable_and_says_so(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()  # nothing listens there
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    cluster = KubeCluster(k8s_config.new_client_from_config(config_file=str(config)), "default", request_timeout=2)
    problem = cluster.check()
    assert problem is not None and f"127.0.0.1:{port}" in problem
    with pytest.raises(ApplicationError) as info:
        cluster.get("API", "x")
    assert info.value.type == "ClusterUnavailable" and not info.value.non_retryable


def test_a_delete_with_the_uid_seen_leaves_a_newer_object_of_the_same_name(tmp_path: Path) -> None:
    with KubeEmulator() as kube:
        client = k8s_config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "config")))
        cluster = KubeCluster(client, "default")
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}}
        old_uid = cluster.apply(body)["metadata"]["uid"]
        assert cluster.delete("ConfigMap", "cm", old_uid)
        new_uid = cluster.apply(body)["metadata"]["uid"]
        assert not cluster.delete("ConfigMap", "cm", old_uid)  # the object seen is gone; this one stays
        assert cluster.get("ConfigMap", "cm")["metadata"]["uid"] == new_uid


def test_an_apply_after_a_snapshot_that_saw_no_api_does_not_read_it_first(tmp_path: Path) -> None:
    """A first deploy: the snapshot saw no API object, so the apply skips reading its status (one
    round trip fewer); an apply without a whole snapshot's generations still reads it."""
    from temporalio.testing import ActivityEnvironment

    from activities.cluster import ClusterActivities
    from activities.sealing import Sealer
    from agent.settings import Settings
    from models.api_workflow import ApiRef, ResourceSet

    api = {
        "apiVersion": "dp.wso2.com/v1alpha3",
        "kind": "API",
        "metadata": {"name": "first"},
        "spec": {"apiName": "First", "apiVersion": "1.0", "basePath": "/first/1.0", "apiType": "REST"},
    }
    with KubeEmulator() as kube:
        client = k8s_config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "config")))
        cluster = KubeCluster(client, "default")
        activities = ClusterActivities(cluster, Settings(), Sealer("", seal_new=False))
        ref = ApiRef(organization="carbon.super", api_uuid="first")

        def reads_of_the_api(request: ResourceSet) -> int:
            kube.clear_access_log()
            ActivityEnvironment().run(activities.apply_api_resources, request)
            return sum(1 for a in kube.access_log if a.verb == "get" and a.resource == "apis" and a.name == "first")

        assert reads_of_the_api(ResourceSet(api=ref, resources=[api], generations_complete=True)) == 0
        assert reads_of_the_api(ResourceSet(api=ref, resources=[api])) == 1
        seen = {"API/first": cluster.get("API", "first")["metadata"]["generation"]}
        assert reads_of_the_api(ResourceSet(api=ref, resources=[api], generations=seen, generations_complete=True)) == 1
