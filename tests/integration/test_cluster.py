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
