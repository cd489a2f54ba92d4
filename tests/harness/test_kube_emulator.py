"""The Kubernetes API emulator, driven through the official `kubernetes` client (typed and dynamic)
plus raw HTTP where the client hides status codes or bodies."""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException
from kubernetes.dynamic import DynamicClient

from harness.kube_emulator import KubeEmulator

REPO = Path(__file__).resolve().parents[2]
NS = "apk"
API_V = "dp.wso2.com/v1alpha3"


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    emu = KubeEmulator(operator_delay=0.05)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def api_client(emulator: KubeEmulator, tmp_path: Path) -> Iterator[kubernetes.client.ApiClient]:
    config = kubernetes.client.Configuration()
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
    with kubernetes.client.ApiClient(config) as client:
        yield client


@pytest.fixture
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture
def dyn(api_client: kubernetes.client.ApiClient, tmp_path: Path) -> DynamicClient:
    return DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))


@pytest.fixture
def apis(dyn: DynamicClient) -> Any:
    return dyn.resources.get(api_version=API_V, kind="API")


def api_body(name: str, api_name: str = "Pets", labels: dict[str, str] | None = None, **spec: Any) -> dict:
    return {
        "apiVersion": API_V,
        "kind": "API",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {"team": "a"}},
        "spec": {"apiName": api_name, "apiVersion": "1.0", "basePath": "/pets/1.0", **spec},
    }


def apply(apis: Any, body: dict, manager: str = "gateway-agent", force: bool = True) -> Any:
    return apis.server_side_apply(
        body=body, name=body["metadata"]["name"], namespace=NS, field_manager=manager, force_conflicts=force
    )


def http(
    emulator: KubeEmulator, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(emulator.url + path, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(predicate: Any, timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> kubernetes.client.V1ConfigMap:
    return kubernetes.client.V1ConfigMap(
        metadata=kubernetes.client.V1ObjectMeta(name=name, labels=labels), data=data or None
    )


# ---- discovery -----------------------------------------------------------------------------------------


def test_discovery_serves_core_kinds_and_every_served_crd_version(emulator: KubeEmulator, dyn: DynamicClient) -> None:
    api = dyn.resources.get(api_version=API_V, kind="API")
    assert (api.name, api.namespaced, "status" in api.subresources) == ("apis", True, True)
    assert dyn.resources.get(api_version="dp.wso2.com/v1alpha1", kind="API").name == "apis"
    for version in ("v1", "v1beta1"):
        assert dyn.resources.get(api_version=f"gateway.networking.k8s.io/{version}", kind="HTTPRoute").namespaced
    assert not dyn.resources.get(api_version="v1", kind="Namespace").namespaced
    assert dyn.resources.get(api_version="v1", kind="Secret").namespaced
    assert dyn.version["kubernetes"]["major"] == "1"
    status, group = http(emulator, "GET", "/apis/dp.wso2.com")
    assert status == 200 and group["preferredVersion"]["version"] == "v1alpha4"  # highest served (APIPolicy)
    status, resources = http(emulator, "GET", "/apis/gateway.networking.k8s.io/v1")
    names = {r["name"] for r in resources["resources"]}
    assert {"httproutes", "httproutes/status", "gateways", "gatewayclasses"} <= names
    assert http(emulator, "GET", "/apis/nope.example.com/v1")[0] == 404


# ---- create / get / list -------------------------------------------------------------------------------


def test_create_sets_server_metadata_and_duplicate_is_409(emulator: KubeEmulator, apis: Any) -> None:
    created = apis.create(body=api_body("pets"), namespace=NS)
    meta = created.metadata
    assert meta.uid and meta.resourceVersion and meta.creationTimestamp.endswith("Z")
    assert (meta.generation, meta.namespace) == (1, NS)
    with pytest.raises(ApiException) as err:
        apis.create(body=api_body("pets"), namespace=NS)
    assert err.value.status == 409
    body = json.loads(err.value.body)
    assert (body["kind"], body["status"], body["reason"]) == ("Status", "Failure", "AlreadyExists")
    assert body["details"] == {"name": "pets", "kind": "apis", "group": "dp.wso2.com"}
    status, raw = http(
        emulator,
        "POST",
        f"/api/v1/namespaces/{NS}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "raw"}},
    )
    assert status == 201 and raw["metadata"]["namespace"] == NS


def test_missing_object_is_404_with_status_body(core: kubernetes.client.CoreV1Api, apis: Any) -> None:
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("missing", NS)
    body = json.loads(err.value.body)
    assert err.value.status == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "code": 404,
        "reason": "NotFound",
        "message": 'configmaps "missing" not found',
        "details": {"name": "missing", "kind": "configmaps"},
    }
    with pytest.raises(kubernetes.dynamic.exceptions.NotFoundError):
        apis.get(name="missing", namespace=NS)


def test_invalid_names_and_mismatched_kind_are_rejected(emulator: KubeEmulator, apis: Any) -> None:
    for name in ("", "Bad_Name", "x" * 254):
        status, body = http(
            emulator, "POST", f"/apis/{API_V}/namespaces/{NS}/apis", {**api_body(name), "metadata": {"name": name}}
        )
        assert (status, body["reason"], body["details"]["causes"][0]["field"]) == (422, "Invalid", "metadata.name")
    status, body = http(emulator, "POST", f"/apis/{API_V}/namespaces/{NS}/apis", {**api_body("x"), "kind": "Backend"})
    assert (status, body["reason"]) == (400, "BadRequest") and "kind" in body["message"]
    status, body = http(
        emulator, "POST", f"/apis/{API_V}/namespaces/{NS}/apis", {**api_body("x"), "apiVersion": "dp.wso2.com/v1alpha2"}
    )
    assert status == 400 and "API version" in body["message"]
    assert emulator.objects("API") == []


def test_list_envelope_label_and_field_selectors(
    emulator: KubeEmulator, core: kubernetes.client.CoreV1Api, dyn: DynamicClient
) -> None:
    core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name="other")))
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {"app": "z", "tier": "db"})]:
        core.create_namespaced_config_map(NS, configmap(name, labels))
    core.create_namespaced_config_map("other", configmap("d", {"app": "x"}))

    def names(selector: str, namespace: str = NS) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map(namespace, label_selector=selector).items]

    assert names("app=x") == ["a"] and names("app==x,tier=web") == ["a"]
    assert names("app!=x") == ["b", "c"]
    assert names("app in (x, z)") == ["a", "c"] and names("app notin (x,z)") == ["b"]
    assert names("tier") == ["a", "c"] and names("!tier") == ["b"]
    by_name = core.list_namespaced_config_map(NS, field_selector="metadata.name=b").items
    assert [i.metadata.name for i in by_name] == ["b"]
    everywhere = dyn.resources.get(api_version="v1", kind="ConfigMap").get(label_selector="app=x")
    assert sorted((i.metadata.namespace, i.metadata.name) for i in everywhere.items) == [(NS, "a"), ("other", "d")]
    status, raw = http(emulator, "GET", f"/api/v1/namespaces/{NS}/configmaps?labelSelector=app%3Dy")
    assert (raw["kind"], raw["apiVersion"], int(raw["metadata"]["resourceVersion"]) > 0) == (
        "ConfigMapList",
        "v1",
        True,
    )
    assert (raw["items"][0]["kind"], raw["items"][0]["apiVersion"]) == ("ConfigMap", "v1")
    assert http(emulator, "GET", f"/api/v1/namespaces/{NS}/configmaps?fieldSelector=data.x%3D1")[0] == 400
    assert [o["metadata"]["name"] for o in emulator.objects("ConfigMap", label_selector="app=x")] == ["a", "d"]


def test_list_pages_with_limit_and_continue(core: kubernetes.client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map(NS, configmap(f"cm-{i}"))
    first = core.list_namespaced_config_map(NS, limit=2)
    rest = core.list_namespaced_config_map(NS, limit=10, _continue=first.metadata._continue)
    assert [i.metadata.name for i in first.items + rest.items] == [f"cm-{i}" for i in range(5)]
    assert rest.metadata._continue is None


def test_custom_objects_api_round_trip(api_client: kubernetes.client.ApiClient) -> None:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "HTTPRoute",
        "metadata": {"name": "pets-prod"},
        "spec": {"hostnames": ["pets.example.com"]},
    }
    created = custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1beta1", NS, "httproutes", route)
    assert created["metadata"]["generation"] == 1
    as_v1 = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes", "pets-prod")
    assert as_v1["apiVersion"] == "gateway.networking.k8s.io/v1" and as_v1["spec"] == route["spec"]
    status = {"status": {"parents": [{"conditions": [{"type": "Accepted", "status": "True"}]}]}}
    patched = custom.patch_namespaced_custom_object_status(
        "gateway.networking.k8s.io", "v1", NS, "httproutes", "pets-prod", status
    )
    assert patched["status"] == status["status"] and patched["metadata"]["generation"] == 1
    listed = custom.list_cluster_custom_object("gateway.networking.k8s.io", "v1", "httproutes")
    assert listed["kind"] == "HTTPRouteList" and [i["metadata"]["name"] for i in listed["items"]] == ["pets-prod"]


# ---- update, generation, status ------------------------------------------------------------------------


def test_update_conflicts_on_stale_rv_and_bumps_generation_only_for_spec(apis: Any) -> None:
    created = apis.create(body=api_body("pets"), namespace=NS).to_dict()
    stale = json.loads(json.dumps(created))
    relabelled = json.loads(json.dumps(created))
    relabelled["metadata"]["labels"]["extra"] = "1"
    after_label = apis.replace(body=relabelled, namespace=NS).to_dict()
    assert int(after_label["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert after_label["metadata"]["generation"] == 1
    stale["spec"]["apiName"] = "Other"
    with pytest.raises(kubernetes.dynamic.exceptions.ConflictError) as err:
        apis.replace(body=stale, namespace=NS)
    assert "the object has been modified" in json.loads(err.value.body)["message"]
    after_label["spec"]["apiName"] = "Other"
    after_spec = apis.replace(body=after_label, namespace=NS).to_dict()
    assert after_spec["metadata"]["generation"] == 2
    unchanged = apis.replace(body=after_spec, namespace=NS).to_dict()
    assert unchanged["metadata"]["resourceVersion"] == after_spec["metadata"]["resourceVersion"]
    without_rv = json.loads(json.dumps(after_spec))
    del without_rv["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as err:
        apis.replace(body=without_rv, namespace=NS)
    assert err.value.status == 422


def test_status_subresource_is_kept_apart_from_spec(apis: Any) -> None:
    created = apis.create(
        body={**api_body("pets"), "status": {"deploymentStatus": {"accepted": True}}}, namespace=NS
    ).to_dict()
    assert "status" not in created
    with_status = {
        **created,
        "status": {"deploymentStatus": {"accepted": True, "status": "CREATED"}},
        "spec": {**created["spec"], "apiName": "Ignored"},
    }
    after = apis.status.replace(body=with_status, namespace=NS).to_dict()
    assert after["status"]["deploymentStatus"]["status"] == "CREATED"
    assert after["spec"]["apiName"] == "Pets"
    assert after["metadata"]["generation"] == 1
    assert int(after["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    status_entry = [m for m in after["metadata"]["managedFields"] if m.get("subresource") == "status"]
    assert status_entry and "f:status" in status_entry[0]["fieldsV1"]
    main_write = {**after, "status": {"deploymentStatus": {"accepted": False}}}
    main_write["spec"] = {**after["spec"], "apiName": "Renamed"}
    replaced = apis.replace(body=main_write, namespace=NS).to_dict()
    assert replaced["status"]["deploymentStatus"]["accepted"] is True
    assert (replaced["spec"]["apiName"], replaced["metadata"]["generation"]) == ("Renamed", 2)
    patched = apis.status.patch(
        body={"status": {"deploymentStatus": {"message": "m"}}},
        name="pets",
        namespace=NS,
        content_type="application/merge-patch+json",
    ).to_dict()
    assert patched["status"]["deploymentStatus"] == {"accepted": True, "status": "CREATED", "message": "m"}
    assert patched["metadata"]["generation"] == 2


def test_merge_json_and_strategic_patches(emulator: KubeEmulator, apis: Any, core: kubernetes.client.CoreV1Api) -> None:
    apis.create(body=api_body("pets", labels={"team": "a", "drop": "me"}), namespace=NS)
    merged = apis.patch(
        body={"metadata": {"labels": {"drop": None}}, "spec": {"basePath": "/p"}},
        name="pets",
        namespace=NS,
        content_type="application/merge-patch+json",
    ).to_dict()
    assert merged["metadata"]["labels"] == {"team": "a"} and merged["spec"]["basePath"] == "/p"
    assert merged["metadata"]["generation"] == 2
    ops = [
        {"op": "test", "path": "/spec/apiName", "value": "Pets"},
        {"op": "add", "path": "/spec/production", "value": [{"routeRefs": ["r1"]}]},
        {"op": "add", "path": "/spec/production/0/routeRefs/-", "value": "r2"},
    ]
    patched = apis.patch(body=ops, name="pets", namespace=NS, content_type="application/json-patch+json").to_dict()
    assert patched["spec"]["production"] == [{"routeRefs": ["r1", "r2"]}]
    status, body = http(
        emulator,
        "PATCH",
        f"/apis/{API_V}/namespaces/{NS}/apis/pets",
        [{"op": "test", "path": "/spec/apiName", "value": "Nope"}],
        "application/json-patch+json",
    )
    assert (status, body["reason"]) == (422, "Invalid")
    core.create_namespaced_config_map(NS, configmap("cm", a="1"))
    result = core.patch_namespaced_config_map("cm", NS, {"data": {"b": "2"}})  # strategic merge by default
    assert result.data == {"a": "1", "b": "2"}
    stale = http(
        emulator,
        "PATCH",
        f"/api/v1/namespaces/{NS}/configmaps/cm",
        {"metadata": {"resourceVersion": "1"}, "data": {"c": "3"}},
        "application/merge-patch+json",
    )
    assert stale[0] == 409


# ---- server-side apply ---------------------------------------------------------------------------------


def test_apply_creates_records_managed_fields_and_noop_keeps_rv(emulator: KubeEmulator, apis: Any) -> None:
    body = api_body("pets", production=[{"routeRefs": ["r1"]}])
    status, raw = http(
        emulator,
        "PATCH",
        f"/apis/{API_V}/namespaces/{NS}/apis/pets?fieldManager=gateway-agent",
        body,
        "application/apply-patch+yaml",
    )
    assert status == 201
    entry = raw["metadata"]["managedFields"][0]
    assert {k: entry[k] for k in ("manager", "operation", "apiVersion", "fieldsType")} == {
        "manager": "gateway-agent",
        "operation": "Apply",
        "apiVersion": API_V,
        "fieldsType": "FieldsV1",
    }
    assert entry["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:team": {}}},
        "f:spec": {"f:apiName": {}, "f:apiVersion": {}, "f:basePath": {}, "f:production": {}},
    }
    again = apply(apis, body).to_dict()
    assert again["metadata"]["resourceVersion"] == raw["metadata"]["resourceVersion"]
    assert again["metadata"]["managedFields"] == raw["metadata"]["managedFields"]
    yaml_body = b"apiVersion: dp.wso2.com/v1alpha3\nkind: API\nmetadata:\n  name: pets\nspec:\n  basePath: /v2\n"
    status, raw = http(
        emulator,
        "PATCH",
        f"/apis/{API_V}/namespaces/{NS}/apis/pets?fieldManager=other",
        yaml_body,
        "application/apply-patch+yaml",
    )
    assert status == 409 and raw["reason"] == "Conflict"


def test_apply_conflicts_force_and_removes_fields_no_longer_applied(apis: Any) -> None:
    apply(apis, api_body("pets", labels={"team": "a", "shared": "s", "old": "o"}, isDefaultVersion=True))
    apply(
        apis,
        {"apiVersion": API_V, "kind": "API", "metadata": {"name": "pets", "labels": {"shared": "s"}}},
        manager="ops",
    )
    with pytest.raises(kubernetes.dynamic.exceptions.ConflictError) as err:
        apply(
            apis,
            {"apiVersion": API_V, "kind": "API", "metadata": {"name": "pets"}, "spec": {"basePath": "/hijack"}},
            manager="ops",
            force=False,
        )
    message = json.loads(err.value.body)["message"]
    assert 'conflict with "gateway-agent"' in message and ".spec.basePath" in message
    forced = apply(
        apis,
        {
            "apiVersion": API_V,
            "kind": "API",
            "metadata": {"name": "pets", "labels": {"shared": "s"}},
            "spec": {"basePath": "/hijack"},
        },
        manager="ops",
    ).to_dict()
    owners = {m["manager"]: m["fieldsV1"] for m in forced["metadata"]["managedFields"]}
    assert "f:basePath" in owners["ops"]["f:spec"] and "f:basePath" not in owners["gateway-agent"]["f:spec"]
    slimmer = api_body("pets", labels={"team": "a"})
    del slimmer["spec"]["basePath"]
    result = apply(apis, slimmer).to_dict()
    assert result["metadata"]["labels"] == {"team": "a", "shared": "s"}  # "shared" is still owned by ops
    assert "isDefaultVersion" not in result["spec"]
    assert result["spec"]["basePath"] == "/hijack"


def test_apply_without_field_manager_is_400(emulator: KubeEmulator) -> None:
    status, body = http(
        emulator, "PATCH", f"/apis/{API_V}/namespaces/{NS}/apis/pets", api_body("pets"), "application/apply-patch+yaml"
    )
    assert status == 400 and "fieldManager is required" in body["message"]


def test_non_apply_writes_record_update_managers(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, configmap("cm", a="1"), field_manager="creator")
    updated = core.patch_namespaced_config_map("cm", NS, {"data": {"a": "2", "b": "3"}})
    managers = {(m.manager, m.operation): m.fields_v1 for m in updated.metadata.managed_fields}
    assert managers[("creator", "Update")] == {"f:data": {}}  # keeps the map, lost f:a to the later writer
    assert managers[("OpenAPI-Generator", "Update")] == {"f:data": {"f:a": {}, "f:b": {}}}


def test_secret_string_data_is_folded_into_data(core: kubernetes.client.CoreV1Api) -> None:
    secret = kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name="creds"),
        string_data={"password": "s3cret"},
        data={"user": "YWRtaW4="},
    )
    created = core.create_namespaced_secret(NS, secret)
    assert created.string_data is None and created.type == "Opaque"
    assert base64.b64decode(created.data["password"]) == b"s3cret" and created.data["user"] == "YWRtaW4="
    assert core.read_namespaced_secret("creds", NS).string_data is None


# ---- delete ---------------------------------------------------------------------------------------------


def test_delete_and_delete_collection(emulator: KubeEmulator, apis: Any, core: kubernetes.client.CoreV1Api) -> None:
    apis.create(body=api_body("a", labels={"api": "1"}), namespace=NS)
    apis.create(body=api_body("b", labels={"api": "1"}), namespace=NS)
    apis.create(body=api_body("c", labels={"api": "2"}), namespace=NS)
    gone = apis.delete(name="c", namespace=NS)
    assert gone.metadata.name == "c"
    with pytest.raises(kubernetes.dynamic.exceptions.NotFoundError):
        apis.delete(name="c", namespace=NS)
    apis.delete(namespace=NS, label_selector="api=1")
    assert emulator.objects("API") == []
    core.create_namespaced_config_map(NS, configmap("cm"))
    assert core.delete_namespaced_config_map("cm", NS)["status"] == "Success"  # v37 returns a dict


# ---- watch ----------------------------------------------------------------------------------------------


def _watch_in_thread(apis: Any, **kwargs: Any) -> tuple[queue.Queue, threading.Thread]:
    events: queue.Queue = queue.Queue()

    def run() -> None:
        for event in apis.watch(**kwargs):
            events.put((event["type"], event["raw_object"]))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return events, thread


def test_namespaced_watch_gets_live_status_modification_promptly(emulator: KubeEmulator, apis: Any) -> None:
    created = apis.create(body=api_body("pets"), namespace=NS).to_dict()
    rv = created["metadata"]["resourceVersion"]
    events, thread = _watch_in_thread(apis, namespace=NS, name="pets", resource_version=rv, timeout=1)
    wait_for(lambda: any("watch=true" in p for _, p in emulator.request_log))
    started = time.monotonic()
    apis.status.patch(
        body={"status": {"deploymentStatus": {"accepted": True}}},
        name="pets",
        namespace=NS,
        content_type="application/merge-patch+json",
    )
    etype, obj = events.get(timeout=2)
    assert time.monotonic() - started < 0.5
    assert etype == "MODIFIED" and obj["status"]["deploymentStatus"]["accepted"] is True
    assert obj["apiVersion"] == API_V and int(obj["metadata"]["resourceVersion"]) > int(rv)
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_watch_replays_from_resource_version_filters_and_times_out(apis: Any) -> None:
    first = apis.create(body=api_body("a", labels={"team": "a"}), namespace=NS).to_dict()
    apis.create(body=api_body("b", labels={"team": "b"}), namespace=NS)
    apis.patch(
        body={"metadata": {"labels": {"team": "b"}}},
        name="a",
        namespace=NS,
        content_type="application/merge-patch+json",
    )
    apis.delete(name="b", namespace=NS)
    started = time.monotonic()
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in apis.watch(
            namespace=NS, label_selector="team=b", resource_version=first["metadata"]["resourceVersion"], timeout=1
        )
    ]
    assert seen == [("ADDED", "b"), ("ADDED", "a"), ("DELETED", "b")]  # "a" entering the selector is ADDED
    assert 0.9 < time.monotonic() - started < 3
    initial = [(e["type"], e["object"].metadata.name) for e in apis.watch(namespace=NS, timeout=0.2)]
    assert initial == [("ADDED", "a")]
    assert list(apis.watch(namespace="elsewhere", timeout=0.2)) == []


def test_watch_from_too_old_resource_version_is_410(emulator: KubeEmulator, apis: Any) -> None:
    emulator.store.history_limit = 3
    first = apis.create(body=api_body("a"), namespace=NS).to_dict()
    for i in range(5):
        apis.patch(
            body={"metadata": {"labels": {"n": str(i)}}},
            name="a",
            namespace=NS,
            content_type="application/merge-patch+json",
        )
    with pytest.raises(ApiException) as err:
        list(apis.watch(namespace=NS, resource_version=first["metadata"]["resourceVersion"], timeout=1))
    assert err.value.status == 410


# ---- gateway operator -----------------------------------------------------------------------------------


def deployment_status(emulator: KubeEmulator, name: str) -> dict | None:
    obj = emulator.get_object("API", NS, name)
    return (obj or {}).get("status", {}).get("deploymentStatus")


def test_gateway_operator_writes_created_then_updated_status(emulator: KubeEmulator, apis: Any) -> None:
    emulator.gateway_operator = True
    created = apply(apis, api_body("pets")).to_dict()
    events, thread = _watch_in_thread(
        apis, namespace=NS, resource_version=created["metadata"]["resourceVersion"], timeout=1
    )
    status = wait_for(lambda: deployment_status(emulator, "pets"))
    assert status["accepted"] is True and status["status"] == "CREATED"
    assert status["message"] == "API is deployed to the gateway."
    assert len(status["transitionTime"]) == 20 and status["transitionTime"].endswith("Z")
    etype, obj = events.get(timeout=2)
    assert etype == "MODIFIED" and obj["status"]["deploymentStatus"]["status"] == "CREATED"
    for i in range(4):  # a burst of writes gives one status write after the last
        apply(apis, api_body("pets", basePath=f"/pets/{i}"))
    status = wait_for(lambda: (s := deployment_status(emulator, "pets")) and s["status"] == "UPDATED" and s)
    assert status["message"] == "API update is deployed to the gateway." and len(status["events"]) == 2
    settled = emulator.get_object("API", NS, "pets")
    apply(apis, api_body("pets", basePath="/pets/3"))  # no-op apply: nothing for the operator to do
    time.sleep(0.2)
    assert (
        emulator.get_object("API", NS, "pets")["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]
    )
    thread.join(timeout=3)


def test_gateway_operator_off_gives_no_status_and_rejects_say_not_accepted(emulator: KubeEmulator, apis: Any) -> None:
    apply(apis, api_body("quiet"))
    time.sleep(0.2)
    assert deployment_status(emulator, "quiet") is None
    emulator.gateway_operator = True
    emulator.operator_rejects.add("broken")
    apply(apis, api_body("broken"))
    status = wait_for(lambda: deployment_status(emulator, "broken"))
    assert status["accepted"] is False and status["message"]


# ---- faults and HTTP controls ---------------------------------------------------------------------------


def test_injected_faults_fail_matching_requests(
    emulator: KubeEmulator, core: kubernetes.client.CoreV1Api, apis: Any
) -> None:
    emulator.inject_fault(
        verb="create", kind="ConfigMap", status=503, reason="ServiceUnavailable", message="etcd is sad", times=1
    )
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, configmap("cm"))
    body = json.loads(err.value.body)
    assert (err.value.status, body["reason"], body["message"], body["kind"]) == (
        503,
        "ServiceUnavailable",
        "etcd is sad",
        "Status",
    )
    assert emulator.objects("ConfigMap", NS) == []
    core.create_namespaced_config_map(NS, configmap("cm"))  # times=1: the fault is used up
    emulator.inject_fault(verb="apply", kind="API", name="pets", status=500)
    with pytest.raises(ApiException) as err:
        apply(apis, api_body("pets"))
    assert err.value.status == 500
    apply(apis, api_body("other"))
    emulator.clear_faults()
    apply(apis, api_body("pets"))
    assert {o["metadata"]["name"] for o in emulator.objects("API", NS)} == {"pets", "other"}


def test_http_control_endpoints(emulator: KubeEmulator, core: kubernetes.client.CoreV1Api, apis: Any) -> None:
    status, body = http(
        emulator,
        "POST",
        "/_emulator/faults",
        {"verb": "get", "kind": "ConfigMap", "status": 429, "reason": "TooManyRequests"},
    )
    assert status == 201 and body["id"]
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("x", NS)
    assert err.value.status == 429
    assert http(emulator, "DELETE", "/_emulator/faults")[0] == 200
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("x", NS)
    assert err.value.status == 404
    status, body = http(emulator, "PUT", "/_emulator/operator", {"enabled": True, "delay": 0.01})
    assert status == 200 and body["enabled"] and emulator.operator_delay == 0.01
    apply(apis, api_body("pets"))
    assert wait_for(lambda: deployment_status(emulator, "pets"))["accepted"] is True
    assert (
        "PATCH",
        f"/apis/{API_V}/namespaces/{NS}/apis/pets?fieldManager=gateway-agent&force=true",
    ) in emulator.request_log


def test_thousands_of_objects_stay_fast(emulator: KubeEmulator, core: kubernetes.client.CoreV1Api) -> None:
    for i in range(2000):
        core.create_namespaced_config_map(NS, configmap(f"cm-{i:04d}", {"bucket": str(i % 10)}, k=str(i)))
    assert len(core.list_namespaced_config_map(NS, label_selector="bucket=3").items) == 200
    assert core.read_namespaced_config_map("cm-1999", NS).data == {"k": "1999"}


def test_runs_as_a_process_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.kube_emulator",
            "--port",
            "0",
            "--gateway-operator",
            "--kubeconfig",
            str(kubeconfig),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and kubeconfig.exists()
        with urllib.request.urlopen(url + "/_emulator/operator", timeout=5) as resp:
            assert json.loads(resp.read())["enabled"] is True
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
        with kubernetes.client.ApiClient(config) as client:
            namespaces = kubernetes.client.CoreV1Api(client).list_namespace().items
            assert "default" in {n.metadata.name for n in namespaces}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
