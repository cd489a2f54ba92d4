"""The control-plane simulator must behave like control-plane.md says the real CP does."""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time
import uuid as uuidlib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stomp
import yaml

from harness.activemq import ActiveMQ
from harness.api_projects import (
    ApiProjectFiles,
    Deployment,
    api_project_zip,
    apis_zip,
    gateway_environment,
    graphql_api_project,
    load_project_dir,
    project_from_zip,
    rest_api_project,
    sample_project,
    with_changes,
)
from harness.control_plane import ControlPlaneSimulator
from models.events import (
    ApplicationEvent,
    ApplicationKeyEvent,
    EventBase,
    PolicyEvent,
    SubscriptionEvent,
    parse_message,
)

ARTIFACTS = "internal/data/v1/runtime-artifacts"
REPORTS = "internal/data/v1/notify-api-deployment-status"
AUTH = ("admin", "admin")
REPO = Path(__file__).resolve().parents[2]


def labels_param(*labels: str) -> str:
    return base64.b64encode("|".join(labels).encode()).decode()


def project(name: str = "Orders", *, revision: str = "1", uuid: str | None = None, **kwargs: Any) -> ApiProjectFiles:
    return rest_api_project(
        uuid=uuid or str(uuidlib.uuid4()),
        name=name,
        version="1.0.0",
        context=f"/{name.lower()}",
        revision_id=revision,
        **kwargs,
    )


@pytest.fixture
def sim() -> Iterator[ControlPlaneSimulator]:
    simulator = ControlPlaneSimulator(broker_url=None)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: ControlPlaneSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, auth=AUTH, timeout=5) as http:
        yield http


def fetch(client: httpx.Client, *labels: str, tenant: str = "ALL", **params: str) -> httpx.Response:
    return client.get(
        ARTIFACTS,
        params={"type": "Envoy", "gatewayLabel": labels_param(*labels), **params},
        headers={"x-wso2-tenant": tenant},
    )


def unzip(content: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def deployments(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    descriptor = json.loads(unzip(response.content)["deployments.json"])
    assert descriptor["type"] == "deployments"
    entries: list[dict[str, Any]] = descriptor["data"]["deployments"]
    return entries


# ---------------------------------------------------------------- runtime artifacts


def test_runtime_artifacts_zip_holds_the_deployed_revision(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    api = project(
        "Orders",
        revision="3",
        sandbox_url="http://sandbox.example:8080/api",
        endpoint_security={"production": {"type": "BASIC", "username": "svc", "password": "s3cret"}},
    )
    sim.deploy(api, labels=["Default"], vhost="api.example.com", publish=False)

    response = fetch(client, "Default")
    assert response.headers["content-type"] == "application/zip"
    outer = unzip(response.content)
    assert set(outer) == {"deployments.json", f"{api.uuid}-3.zip"}
    [entry] = deployments(response)
    assert entry["apiFile"] == f"{api.uuid}-3.zip"
    assert entry["organizationId"] == "carbon.super"
    assert entry["apiContext"] == "/orders"
    assert entry["version"] == "1.0.0"
    [env] = entry["environments"]
    assert env["name"] == "Default" and env["vhost"] == "api.example.com"
    assert isinstance(env["deployedTimeStamp"], int) and env["deploymentType"]

    inner = unzip(outer[entry["apiFile"]])
    assert set(inner) == {"Orders-1.0.0/api.json", "Orders-1.0.0/Definitions/swagger.yaml"}
    document = json.loads(inner["Orders-1.0.0/api.json"])
    assert document["type"] == "api" and document["version"].startswith("v4")
    data = document["data"]
    assert data["id"] == api.uuid and data["revisionId"] == 3 and data["type"] == "HTTP"
    assert data["organizationId"] == "carbon.super" and data["initiatedFromGateway"] is False
    assert data["securityScheme"] == ["oauth2"]
    endpoints = data["endpointConfig"]
    assert endpoints["production_endpoints"]["url"] == "http://backend.example:8080/api"
    assert endpoints["sandbox_endpoints"]["url"] == "http://sandbox.example:8080/api"
    assert endpoints["endpoint_security"]["production"]["password"] == "s3cret"
    assert endpoints["endpoint_security"]["production"]["enabled"] is True
    assert {(op["target"], op["verb"]) for op in data["operations"]} == {
        ("/items", "GET"), ("/items", "POST"), ("/items/{itemId}", "GET"),
        ("/items/{itemId}", "PUT"), ("/items/{itemId}", "DELETE"),
    }  # fmt: skip
    swagger = yaml.safe_load(inner["Orders-1.0.0/Definitions/swagger.yaml"])
    assert swagger["openapi"].startswith("3.")
    assert set(swagger["paths"]["/items/{itemId}"]) == {"get", "put", "delete"}
    assert swagger["paths"]["/items/{itemId}"]["get"]["parameters"][0]["name"] == "itemId"


def test_no_deployment_for_the_labels_answers_204(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    assert fetch(client, "Default").status_code == 204
    sim.deploy(project(), labels=["Other"], publish=False)
    response = fetch(client, "Default")
    assert response.status_code == 204 and response.content == b""


def test_label_filtering(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    a, b, c = project("A"), project("B"), project("C")
    sim.deploy(a, labels=["Default"], publish=False)
    sim.deploy(b, labels=["Other"], publish=False)
    sim.deploy(c, labels=["Default", "Other"], publish=False)

    assert {e["apiFile"][:36] for e in deployments(fetch(client, "Other"))} == {b.uuid, c.uuid}
    both = {e["apiFile"][:36]: e for e in deployments(fetch(client, "Default", "Other"))}
    assert set(both) == {a.uuid, b.uuid, c.uuid}
    assert sorted(env["name"] for env in both[c.uuid]["environments"]) == ["Default", "Other"]
    only_default = {e["apiFile"][:36]: e for e in deployments(fetch(client, "Default"))}
    assert [env["name"] for env in only_default[c.uuid]["environments"]] == ["Default"]


def test_api_id_filtering(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    a, b = project("A"), project("B")
    sim.deploy(a, publish=False)
    sim.deploy(b, publish=False)
    [entry] = deployments(fetch(client, "Default", apiId=b.uuid))
    assert entry["apiFile"] == b.api_file_name
    assert fetch(client, "Default", apiId=str(uuidlib.uuid4())).status_code == 204


def test_tenant_header_selects_the_organization(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    mine, theirs = project("Mine"), project("Theirs", organization="acme")
    sim.deploy(mine, publish=False)
    sim.deploy(theirs, organization="acme", publish=False)
    assert len(deployments(fetch(client, "Default", tenant="ALL"))) == 2
    [acme] = deployments(fetch(client, "Default", tenant="acme"))
    assert acme["apiFile"] == theirs.api_file_name and acme["organizationId"] == "acme"
    [own] = deployments(fetch(client, "Default", tenant="carbon.super"))
    assert own["apiFile"] == mine.api_file_name


def test_redeploy_replaces_revision_per_label_and_undeploy_removes(
    sim: ControlPlaneSimulator, client: httpx.Client
) -> None:
    first = project("Orders", revision="1")
    second = with_changes(first, revision_id="2", data_updates={"description": "second"})
    sim.deploy(first, labels=["Default", "Other"], publish=False)
    sim.deploy(second, labels=["Default"], publish=False)
    assert sim.deployed(first.uuid) == {"Default": "2", "Other": "1"}

    entries = {e["apiFile"]: e for e in deployments(fetch(client, "Default", "Other"))}
    assert set(entries) == {f"{first.uuid}-1.zip", f"{first.uuid}-2.zip"}
    inner = unzip(unzip(fetch(client, "Default").content)[f"{first.uuid}-2.zip"])
    data = json.loads(inner["Orders-1.0.0/api.json"])["data"]
    assert data["revisionId"] == 2 and data["description"] == "second"

    sim.undeploy(first.uuid, labels=["Default"], publish=False)
    assert fetch(client, "Default").status_code == 204
    assert [e["apiFile"] for e in deployments(fetch(client, "Other"))] == [f"{first.uuid}-1.zip"]


def test_env_properties_are_included_when_set(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    sim.deploy(project(), publish=False)
    assert "env_properties.json" not in unzip(fetch(client, "Default").content)
    sim.env_properties = {"env-1": {"productionEndpoint": "http://override:8080"}}
    outer = unzip(fetch(client, "Default").content)
    assert json.loads(outer["env_properties.json"]) == sim.env_properties


@pytest.mark.parametrize(
    "path",
    [
        f"{ARTIFACTS}?type=Envoy&gatewayLabel={labels_param('Default')}",
        "internal/data/v1/subscriptions",
        "internal/data/v1/applications",
        "internal/data/v1/application-key-mappings",
        "internal/data/v1/subscription-policies",
        "internal/data/v1/application-policies",
        "internal/data/v1/api-policies",
    ],
)
def test_every_endpoint_requires_basic_auth(sim: ControlPlaneSimulator, path: str) -> None:
    anonymous = httpx.get(sim.url + path)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert anonymous.json()["code"] == 401
    assert httpx.get(sim.url + path, auth=("admin", "wrong")).status_code == 401
    assert httpx.get(sim.url + path, auth=AUTH).status_code in (200, 204)
    assert httpx.post(sim.url + REPORTS, json={}).status_code == 401
    assert sim.deployment_reports == []


@pytest.mark.parametrize(
    "params",
    [
        {"type": "Envoy"},
        {"type": "Envoy", "gatewayLabel": "not base64!"},
        {"type": "Envoy", "gatewayLabel": base64.b64encode(b"\xff\xfe").decode()},
        {"gatewayLabel": labels_param("Default")},
    ],
)
def test_bad_artifact_requests_answer_400(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(ARTIFACTS, params=params, headers={"x-wso2-tenant": "ALL"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400 and body["message"] == "Bad Request" and body["description"]


def test_unencoded_plus_in_gateway_label_is_tolerated(sim: ControlPlaneSimulator) -> None:
    # base64("Default>>") contains '+'; an agent that forgets to percent-encode it still works.
    label = "Default>>"
    encoded = labels_param(label)
    assert "+" in encoded
    sim.deploy(project(), labels=[label], publish=False)
    response = httpx.get(f"{sim.url}{ARTIFACTS}?type=Envoy&gatewayLabel={encoded}", auth=AUTH)
    assert response.status_code == 200


# ---------------------------------------------------------------- reports, logs, failures


def test_deployment_reports_are_recorded_and_awaitable(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    report = {
        "gatewayId": "Default", "apiId": "abc", "tenantDomain": "carbon.super",
        "deploymentStatus": "SUCCESS", "action": "DEPLOY", "revisionId": "1",
        "timeStamp": 1764236400123, "errorCode": None, "errorMessage": None,
    }  # fmt: skip
    assert client.post(REPORTS, json=report).status_code == 200
    assert client.post(REPORTS, json={**report, "action": "UNDEPLOY"}).status_code == 200
    assert sim.deployment_reports == [report, {**report, "action": "UNDEPLOY"}]
    assert sim.wait_for_report(lambda r: r["action"] == "UNDEPLOY", timeout=1)["apiId"] == "abc"
    with pytest.raises(TimeoutError):
        sim.wait_for_report(lambda r: r["deploymentStatus"] == "FAILURE", timeout=0.05)
    bad = client.post(REPORTS, content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400


async def test_wait_for_report_async_does_not_block_the_loop(sim: ControlPlaneSimulator) -> None:
    async with httpx.AsyncClient(base_url=sim.url, auth=AUTH) as http:
        await http.post(REPORTS, json={"apiId": "x", "deploymentStatus": "FAILURE"})
    found = await sim.wait_for_report_async(lambda r: r["apiId"] == "x", timeout=1)
    assert found["deploymentStatus"] == "FAILURE"


def test_request_log_omits_credentials(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    fetch(client, "Default", tenant="acme")
    [entry] = sim.requests
    assert entry["method"] == "GET" and entry["path"] == "/" + ARTIFACTS
    assert entry["query"]["gatewayLabel"] == labels_param("Default")
    assert entry["headers"]["x-wso2-tenant"] == "acme"
    assert all(name.lower() != "authorization" for name in entry["headers"])
    assert entry["status"] == 204


def test_failure_injection_counts_down_delays_and_clears(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    sim.deploy(project(), publish=False)
    sim.fail_requests("runtime-artifacts", status=503, times=2)
    assert [fetch(client, "Default").status_code for _ in range(3)] == [503, 503, 200]

    sim.fail_requests("notify-api-deployment-status", status=None, delay=0.2, times=1)
    started = time.monotonic()
    assert client.post(REPORTS, json={"apiId": "slow"}).status_code == 200
    assert time.monotonic() - started >= 0.2

    sim.fail_requests("runtime-artifacts")  # forever
    assert fetch(client, "Default").status_code == 500
    assert fetch(client, "Default").json()["code"] == 500
    sim.clear_failures()
    assert fetch(client, "Default").status_code == 200


def test_list_endpoints_serve_in_memory_state(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    empty = {"count": 0, "list": [], "pagination": None}
    assert client.get("internal/data/v1/subscriptions").json() == empty
    assert client.get("internal/data/v1/applications").json() == empty
    policies = client.get("internal/data/v1/subscription-policies").json()
    assert policies["count"] == 1 and policies["list"][0]["name"] == "Unlimited"

    # Items assigned directly are served as they are (carbon.super's lists).
    sim.subscriptions = [
        {"subscriptionId": 1, "subscriptionUUID": "s1", "apiUUID": "api-1", "applicationUUID": "app-7"},
        {"subscriptionId": 2, "subscriptionUUID": "s2", "apiUUID": "api-2", "applicationUUID": "app-7"},
    ]
    sim.applications = [{"id": 7, "uuid": "app-7", "name": "shop"}]
    sim.api_policies = [{"name": "10KPerMin"}, {"name": "50KPerMin"}]
    pair = {"apiUUID": "api-2", "applicationUUID": "app-7"}
    filtered = client.get("internal/data/v1/subscriptions", params=pair).json()
    assert [s["subscriptionUUID"] for s in filtered["list"]] == ["s2"]
    assert client.get("internal/data/v1/applications").json()["list"][0]["uuid"] == "app-7"
    named = client.get("internal/data/v1/api-policies", params={"policyName": "50KPerMin"}).json()
    assert named == {"count": 1, "list": [{"name": "50KPerMin"}], "pagination": None}


def test_publisher_import_records_the_project(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    api = project("FromGateway", extra={"initiatedFromGateway": True}, format="yaml")
    response = client.post(
        "api/am/publisher/v4/apis/import",
        params={"preserveProvider": "false", "overwrite": "true", "rotateRevision": "true"},
        files={"file": ("api.zip", api_project_zip(api), "application/zip")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == api.uuid and response.json()["initiatedFromGateway"] is True
    assert [p.uuid for p in sim.imported] == [api.uuid]
    assert sim.deployed(api.uuid) == {}


# ---------------------------------------------------------------- events without a broker


def test_events_are_recorded_without_a_broker(sim: ControlPlaneSimulator) -> None:
    api = project("Orders")
    event_id = sim.deploy(api, labels=["Default", "Other"])
    deploy = sim.published[-1]
    assert deploy["eventId"] == event_id and deploy["type"] == "DEPLOY_API_IN_GATEWAY"
    assert deploy["tenantId"] == -1234 and deploy["tenantDomain"] == "carbon.super"
    assert deploy["uuid"] == api.uuid and deploy["gatewayLabels"] == ["Default", "Other"]
    assert isinstance(deploy["apiId"], int) and deploy["apiType"] == "HTTP"

    sim.deploy(with_changes(api, revision_id="2"), labels=["Default"], announce_removal=True)
    assert [e["type"] for e in sim.published[-2:]] == ["REMOVE_API_FROM_GATEWAY", "DEPLOY_API_IN_GATEWAY"]
    assert sim.published[-2]["gatewayLabels"] == ["Default"]

    fields = sim.api_event_fields(api.uuid, "API_LIFECYCLE_CHANGE")
    assert fields == {
        "apiId": deploy["apiId"], "uuid": api.uuid, "apiName": "Orders", "apiVersion": "1.0.0",
        "apiContext": "/orders", "apiProvider": "admin", "apiType": "HTTP", "apiStatus": "PUBLISHED",
    }  # fmt: skip
    assert sim.api_event_fields(api.uuid, "REMOVE_API_FROM_GATEWAY")["gatewayLabels"] == ["Default", "Other"]
    sim.undeploy(api.uuid, labels=["Default", "Other"])
    assert sim.published[-1]["gatewayLabels"] == ["Default", "Other"]
    assert sim.api_event_fields(api.uuid, "REMOVE_API_FROM_GATEWAY")["gatewayLabels"] == ["Default", "Other"]
    with pytest.raises(KeyError):
        sim.api_event_fields("nope", "API_UPDATE")
    with pytest.raises(RuntimeError):
        sim.publish_raw("{}")


# ---------------------------------------------------------------- project builders


def test_graphql_and_yaml_projects() -> None:
    gql = graphql_api_project(uuid="g-1", name="StarWars", version="2.0", context="/sw", format="yaml")
    assert set(gql.files) == {"StarWars-2.0/api.yaml", "StarWars-2.0/Definitions/schema.graphql"}
    assert gql.api_type == "GRAPHQL"
    assert {(op["target"], op["verb"]) for op in gql.data["operations"]} >= {("hero", "QUERY")}
    assert b"type Query" in gql.files["StarWars-2.0/Definitions/schema.graphql"]
    assert project_from_zip(api_project_zip(gql)) == gql

    cors = project(cors={"accessControlAllowOrigins": ["https://a.example"]}, is_default_version=True)
    assert cors.data["corsConfiguration"]["corsConfigurationEnabled"] is True
    assert cors.data["corsConfiguration"]["accessControlAllowOrigins"] == ["https://a.example"]
    assert cors.data["isDefaultVersion"] is True


def test_apis_zip_builder_matches_the_documented_layout() -> None:
    api = project("Orders")
    env = gateway_environment("Default", vhost="gw.example", deployed_at_ms=1)
    content = apis_zip(
        [Deployment(project=api, environments=[env], organization="acme")],
        env_properties={"e": {"productionEndpoint": "http://x"}},
    )
    files = unzip(content)
    assert set(files) == {"deployments.json", "env_properties.json", api.api_file_name}
    descriptor = json.loads(files["deployments.json"])
    assert descriptor["data"]["deployments"] == [
        {"apiFile": api.api_file_name, "environments": [env], "organizationId": "acme",
         "apiContext": "/orders", "version": "1.0.0"}
    ]  # fmt: skip


def test_pizzashack_sample_loads_from_disk() -> None:
    pizza = sample_project("pizzashack")
    assert (pizza.name, pizza.version, pizza.revision) == ("PizzaShackAPI", "1.0.0", "1")
    assert pizza.api_file_path == "PizzaShackAPI-1.0.0/api.yaml"
    assert pizza.context == "/pizzashack"
    swagger = yaml.safe_load(pizza.files["PizzaShackAPI-1.0.0/Definitions/swagger.yaml"])
    assert {(path, verb.upper()) for path, ops in swagger["paths"].items() for verb in ops} == {
        (op["target"], op["verb"]) for op in pizza.data["operations"]
    }
    same = load_project_dir(REPO / "harness/samples/pizzashack/PizzaShackAPI-1.0.0")
    assert same == pizza


# ---------------------------------------------------------------- simulator control endpoints


def test_sim_control_endpoints(sim: ControlPlaneSimulator, client: httpx.Client) -> None:
    control = httpx.Client(base_url=sim.url + "_sim/", timeout=5)
    deployed = control.post("deploy", json={"sample": "pizzashack", "labels": ["Default"], "publish": False})
    assert deployed.status_code == 200, deployed.text
    uuid = deployed.json()["uuid"]
    assert deployments(fetch(client, "Default"))[0]["apiFile"] == f"{uuid}-1.zip"

    custom = project("Custom")
    files = {path: base64.b64encode(content).decode() for path, content in custom.files.items()}
    assert control.post("deploy", json={"files": files, "revision": 5, "publish": False}).json()["revision"] == "5"
    assert sim.deployed(custom.uuid) == {"Default": "5"}

    assert control.post("failures", json={"path_suffix": "runtime-artifacts", "status": 502, "times": 1}).is_success
    assert fetch(client, "Default").status_code == 502
    client.post(REPORTS, json={"apiId": uuid, "deploymentStatus": "SUCCESS"})
    assert control.get("reports").json() == [{"apiId": uuid, "deploymentStatus": "SUCCESS"}]
    assert control.post("undeploy", json={"uuid": uuid, "publish": False}).is_success
    assert control.get("state").json()[uuid]["deployed"] == {}
    assert control.post("undeploy", json={"uuid": "missing"}).status_code == 400
    assert control.post("deploy", json={}).status_code == 400
    assert all(not entry["path"].startswith("/_sim") for entry in sim.requests)
    control.close()


def test_cli_runs_in_the_foreground_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.control_plane", "--port", "0", "--broker", "none", "--sample", "pizzashack"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on http://" in line, process.stderr.read() if process.stderr else ""
        url = line.rsplit(" ", 1)[1].strip()
        response = httpx.get(
            f"{url}{ARTIFACTS}", params={"type": "Envoy", "gatewayLabel": labels_param("Default")}, auth=AUTH
        )
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


# ---------------------------------------------------------------- events on a real broker


class _Collector(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.frames: queue.Queue[stomp.utils.Frame] = queue.Queue()

    def on_message(self, frame: stomp.utils.Frame) -> None:
        self.frames.put(frame)


@pytest.fixture
def subscriber(broker: ActiveMQ) -> Iterator[_Collector]:
    conn = stomp.Connection12([(broker.host, broker.port)])
    collector = _Collector()
    conn.set_listener("collector", collector)
    conn.connect(wait=True)
    conn.subscribe("/topic/notification", id="test", ack="auto")
    time.sleep(0.05)  # let the broker register the subscription before anything is published
    yield collector
    conn.disconnect()


@pytest.fixture
def broker_sim(broker: ActiveMQ) -> Iterator[ControlPlaneSimulator]:
    simulator = ControlPlaneSimulator(broker_url=broker.stomp_url)
    simulator.start()
    yield simulator
    simulator.stop()


def _next_event(collector: _Collector) -> tuple[stomp.utils.Frame, dict[str, Any], dict[str, Any]]:
    frame = collector.frames.get(timeout=5)
    payload = json.loads(frame.body)["event"]["payloadData"]
    event = json.loads(base64.b64decode(payload["event"]))
    return frame, payload, event


def test_deploy_and_undeploy_publish_envelopes(broker_sim: ControlPlaneSimulator, subscriber: _Collector) -> None:
    api = project("Orders")
    event_id = broker_sim.deploy(api, labels=["Default"])
    frame, payload, event = _next_event(subscriber)
    assert frame.headers["persistent"] == "true"
    assert frame.headers["content-type"].startswith("application/json")
    assert payload["eventType"] == "DEPLOY_API_IN_GATEWAY" and isinstance(payload["timeStamp"], int)
    assert event["eventId"] == event_id and event["type"] == "DEPLOY_API_IN_GATEWAY"
    assert event["timeStamp"] == payload["timeStamp"]
    assert event["tenantId"] == -1234 and event["tenantDomain"] == "carbon.super"
    assert (event["uuid"], event["name"], event["version"], event["context"]) == (
        api.uuid,
        "Orders",
        "1.0.0",
        "/orders",
    )
    assert event["gatewayLabels"] == ["Default"] and event["apiType"] == "HTTP"

    broker_sim.undeploy(api.uuid, labels=["Default"])
    _, payload, event = _next_event(subscriber)
    assert payload["eventType"] == event["type"] == "REMOVE_API_FROM_GATEWAY"
    assert event["uuid"] == api.uuid


def test_publish_custom_and_raw_messages(broker_sim: ControlPlaneSimulator, subscriber: _Collector) -> None:
    broker_sim.publish(
        "SUBSCRIPTIONS_CREATE",
        {"subscriptionId": 9, "apiUUID": "a", "subscriptionState": "UNBLOCKED"},
        organization="acme",
        tenant_id=3,
        event_id="fixed-id",
        timestamp_ms=1764236400123,
    )
    _, payload, event = _next_event(subscriber)
    assert payload["timeStamp"] == 1764236400123
    assert event == {
        "eventId": "fixed-id", "timeStamp": 1764236400123, "type": "SUBSCRIPTIONS_CREATE",
        "tenantId": 3, "tenantDomain": "acme", "subscriptionId": 9, "apiUUID": "a",
        "subscriptionState": "UNBLOCKED",
    }  # fmt: skip

    broker_sim.publish_raw("this is not json", {"persistent": "true"})
    assert subscriber.frames.get(timeout=5).body == "this is not json"


def test_publisher_reconnects_after_the_connection_drops(
    broker_sim: ControlPlaneSimulator, subscriber: _Collector
) -> None:
    publisher = broker_sim._publisher
    assert publisher is not None and publisher._conn is not None
    publisher._conn.transport.socket.shutdown(socket.SHUT_RDWR)  # the connection drops under it
    broker_sim.publish("API_UPDATE", {"uuid": "x"})
    _, _, event = _next_event(subscriber)
    assert event["type"] == "API_UPDATE"


def test_consumer_events_on_the_broker_parse_as_the_agent_expects(
    broker_sim: ControlPlaneSimulator, subscriber: _Collector
) -> None:
    app = broker_sim.create_application("shop", organization="acme")
    key = broker_sim.add_key(app["uuid"], key_type="SANDBOX", organization="acme")
    sub = broker_sim.subscribe(app["uuid"], str(uuidlib.uuid4()), policy="Gold", organization="acme")
    tier = broker_sim.add_subscription_policy("Gold", burst=(10, "sec"), organization="acme")
    broker_sim.delete_application(app["uuid"], organization="acme")

    received = []
    for _ in range(5):
        frame, payload, event = _next_event(subscriber)
        parsed = parse_message(frame.body)
        assert isinstance(parsed, EventBase) and parsed.type == payload["eventType"] == event["type"]
        assert event["tenantDomain"] == "acme" and event["tenantId"] == broker_sim.tenant_id("acme") != -1234
        received.append((parsed, event))
    types = [event["type"] for _, event in received]
    assert types == [
        "APPLICATION_CREATE", "APPLICATION_REGISTRATION_CREATE", "SUBSCRIPTIONS_CREATE", "POLICY_CREATE",
        "APPLICATION_DELETE",
    ]  # fmt: skip
    created, registered, subscribed, policy, deleted = (parsed for parsed, _ in received)
    assert isinstance(created, ApplicationEvent) and created.uuid == app["uuid"] and created.application_id == app["id"]
    assert isinstance(registered, ApplicationKeyEvent) and registered.consumer_key == key["consumerKey"]
    assert registered.application_uuid == app["uuid"] and registered.key_type == "SANDBOX"
    assert isinstance(subscribed, SubscriptionEvent) and subscribed.subscription_id == sub["subscriptionId"]
    assert subscribed.policy_id == "Gold" and subscribed.application_uuid == app["uuid"]
    assert isinstance(policy, PolicyEvent) and policy.policy_id == tier["id"] and policy.policy_type == "SUBSCRIPTION"
    assert "defaultLimit" not in received[3][1]
    assert isinstance(deleted, ApplicationEvent) and deleted.uuid == app["uuid"]
