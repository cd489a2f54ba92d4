# ruff: noqa: F811 - the emulator fixtures are imported from its main test module
"""The emulated gateway operator decides like APK's: a new status only when the generation of the
API or of an object it references moved; and the faults a real cluster produces."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import kubernetes
import pytest
from kubernetes import watch
from kubernetes.client import ApiException
from kubernetes.dynamic import DynamicClient

from harness.kube_emulator import KubeEmulator
from tests.harness.test_kube_emulator import (  # noqa: F401 - fixtures
    NS,
    api_body,
    api_client,
    apis,
    apply,
    core,
    dyn,
    emulator,
    wait_for,
)

QUIET = 0.3  # long enough for the operator (50 ms) to have written a status if it were going to


def status_of(emulator: KubeEmulator, name: str = "pets") -> dict | None:
    obj = emulator.get_object("API", NS, name)
    return ((obj or {}).get("status") or {}).get("deploymentStatus")


def kind(dyn: DynamicClient, api_version: str, kind_: str) -> Any:
    return dyn.resources.get(api_version=api_version, kind=kind_)


def backend(name: str, host: str) -> dict:
    return {
        "apiVersion": "dp.wso2.com/v1alpha2",
        "kind": "Backend",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"services": [{"host": host, "port": 80}], "protocol": "http"},
    }


def route(name: str, backend_name: str) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
            "rules": [{"backendRefs": [{"group": "dp.wso2.com", "kind": "Backend", "name": backend_name}]}],
        },
    }


def config_map(name: str, value: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": {"d": value}}


def ssa(resource: Any, body: dict) -> dict:
    return resource.server_side_apply(
        body=body, name=body["metadata"]["name"], namespace=NS, field_manager="gateway-agent", force_conflicts=True
    ).to_dict()


def events_of(emulator: KubeEmulator) -> int:
    return len((status_of(emulator) or {}).get("events") or [])


@pytest.fixture
def deployed(emulator: KubeEmulator, dyn: DynamicClient, apis: Any) -> dict[str, Any]:
    """An API with a definition ConfigMap, a route and a backend, accepted once."""
    emulator.gateway_operator = True
    kinds = {
        "ConfigMap": kind(dyn, "v1", "ConfigMap"),
        "Backend": kind(dyn, "dp.wso2.com/v1alpha2", "Backend"),
        "HTTPRoute": kind(dyn, "gateway.networking.k8s.io/v1", "HTTPRoute"),
        "API": apis,
    }
    ssa(kinds["ConfigMap"], config_map("def-1", "v1"))
    ssa(kinds["Backend"], backend("be", "a.example"))
    ssa(kinds["HTTPRoute"], route("rt", "be"))
    apply(apis, api_body("pets", definitionFileRef="def-1", production=[{"routeRefs": ["rt"]}]))
    wait_for(lambda: status_of(emulator))
    return kinds


def test_same_content_label_only_and_configmap_content_changes_bring_no_new_status(
    emulator: KubeEmulator, deployed: dict[str, Any], apis: Any
) -> None:
    before = status_of(emulator)
    apply(apis, api_body("pets", definitionFileRef="def-1", production=[{"routeRefs": ["rt"]}]))  # same content
    apply(apis, api_body("pets", labels={"team": "b"}, definitionFileRef="def-1", production=[{"routeRefs": ["rt"]}]))
    ssa(deployed["ConfigMap"], config_map("def-1", "v2"))  # content only: no generation
    time.sleep(QUIET)
    assert status_of(emulator) == before
    assert emulator.get_object("API", NS, "pets")["metadata"]["generation"] == 1


def test_a_renamed_definition_or_a_changed_backend_brings_a_new_status(
    emulator: KubeEmulator, deployed: dict[str, Any], apis: Any
) -> None:
    ssa(deployed["ConfigMap"], config_map("def-2", "v2"))
    apply(apis, api_body("pets", definitionFileRef="def-2", production=[{"routeRefs": ["rt"]}]))
    wait_for(lambda: events_of(emulator) == 2)
    assert status_of(emulator)["status"] == "UPDATED"
    ssa(deployed["Backend"], backend("be", "b.example"))  # the API itself is untouched
    wait_for(lambda: events_of(emulator) == 3)


def test_an_api_with_a_missing_reference_gets_no_status_until_it_exists(
    emulator: KubeEmulator, dyn: DynamicClient, apis: Any
) -> None:
    emulator.gateway_operator = True
    routes = kind(dyn, "gateway.networking.k8s.io/v1", "HTTPRoute")
    ssa(routes, route("rt", "missing-backend"))
    apply(apis, api_body("pets", production=[{"routeRefs": ["rt"]}]))
    time.sleep(QUIET)
    assert status_of(emulator) is None
    ssa(kind(dyn, "dp.wso2.com/v1alpha2", "Backend"), backend("missing-backend", "a.example"))
    assert wait_for(lambda: status_of(emulator))["status"] == "CREATED"


def test_a_recreated_route_with_a_new_uid_brings_a_new_status(
    emulator: KubeEmulator, deployed: dict[str, Any]
) -> None:
    deployed["HTTPRoute"].delete(name="rt", namespace=NS)
    ssa(deployed["HTTPRoute"], route("rt", "be"))
    wait_for(lambda: events_of(emulator) == 2)


def test_configmaps_and_secrets_have_no_generation(core: kubernetes.client.CoreV1Api) -> None:
    cm = core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    secret = core.create_namespaced_secret(NS, {"metadata": {"name": "s"}, "data": {"a": "MQ=="}})
    assert cm.metadata.generation is None and secret.metadata.generation is None
    changed = core.patch_namespaced_config_map("c", NS, {"data": {"a": "2"}})
    assert changed.metadata.generation is None


def test_a_slow_api_server_trips_the_clients_request_timeout(
    emulator: KubeEmulator, core: kubernetes.client.CoreV1Api
) -> None:
    slow = emulator.inject_fault(verb="list", kind="ConfigMap", status=None, delay=1.0)
    started = time.monotonic()
    with pytest.raises(Exception) as err:  # urllib3 retries a read timeout, then gives up
        core.list_namespaced_config_map(NS, _request_timeout=0.3)
    assert "timed out" in str(err.value).lower() and time.monotonic() - started < 4 * 1.0
    emulator.clear_faults(slow)
    emulator.inject_fault(verb="list", kind="ConfigMap", status=None, delay=0.2, times=1)
    started = time.monotonic()
    assert core.list_namespaced_config_map(NS).items == []  # a delay alone then answers normally
    assert time.monotonic() - started >= 0.2


def test_throttling_carries_retry_after(emulator: KubeEmulator) -> None:
    emulator.inject_fault(verb="get", kind="ConfigMap", status=429, reason="TooManyRequests", retry_after=3, times=1)
    # Raw HTTP: the kubernetes client's urllib3 would itself wait and retry on a 429 with Retry-After.
    request = urllib.request.Request(f"{emulator.url}/api/v1/namespaces/{NS}/configmaps/c")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 429 and err.value.headers["Retry-After"] == "3"
    assert json.loads(err.value.read())["details"]["retryAfterSeconds"] == 3


def test_an_expired_watch_arrives_in_the_stream(emulator: KubeEmulator, core: kubernetes.client.CoreV1Api) -> None:
    emulator.inject_fault(verb="watch", kind="ConfigMap", status=410, reason="Expired", message="too old", times=1)
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version="1", timeout_seconds=2))
    assert err.value.status == 410
