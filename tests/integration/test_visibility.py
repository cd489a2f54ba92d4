"""Search attributes and memo against a Temporal dev server of its own that has none registered:
the worker registers them, and the queries an operator types find what the README says.

The same stack takes the README's screenshots of the Temporal UI (``test_ui_screenshots``)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client as k8s_client
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from agent.search_attributes import ensure_search_attributes
from agent.settings import Settings
from harness.api_projects import rest_api_project
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from models.visibility import API_STATES, DEPLOYMENT_STATES, SEARCH_ATTRIBUTES
from tests.conftest import free_port
from tests.integration.conftest import REPO, RunningAgent, running_agent, temporal_binary
from tests.integration.helpers import reports_for, settled_status
from worker import register_search_attributes

ORG = "carbon.super"
DOCS = REPO / "docs"


@dataclass
class UiServer:
    env: WorkflowEnvironment
    ui_url: str

    @property
    def client(self) -> Client:
        return self.env.client


@pytest.fixture(scope="module")
async def ui_server() -> AsyncIterator[UiServer]:
    """A dev server with its UI, and none of the agent's search attributes registered."""
    ui_port = free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        ui=True,
        ui_port=ui_port,
    )
    try:
        yield UiServer(env=env, ui_url=f"http://127.0.0.1:{ui_port}")
    finally:
        await env.shutdown()


async def custom_attributes(client: Client) -> dict[str, int]:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return dict(listed.custom_attributes)


async def listing(client: Client, query: str) -> list[WorkflowExecution]:
    return [w async for w in client.list_workflows(query)]


async def until_listed(client: Client, query: str, check: Any, timeout: float = 15.0) -> list[WorkflowExecution]:
    """The listing of ``query`` once ``check(listing)`` holds (visibility trails the history a little)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await listing(client, query)
        if check(found):
            return found
        if time.monotonic() > deadline:
            shown = [(w.id, w.status, dict(w.search_attributes)) for w in found]
            raise AssertionError(f"{query!r} listed {shown}")
        await asyncio.sleep(0.1)


def ids(found: list[WorkflowExecution]) -> set[str]:
    return {w.id for w in found}


@dataclass
class Deployed:
    """Two APIs: ``ok`` deployed, ``bad`` refused by the gateway (its first deployment failed)."""

    agent: RunningAgent
    ok: str
    bad: str


@asynccontextmanager
async def deploy_two(
    settings: Settings,
    client: Client,
    kube: KubeEmulator,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
) -> AsyncIterator[Deployed]:
    ok, bad = str(uuid.uuid4()), str(uuid.uuid4())
    async with running_agent(settings, client, kube_api_client) as agent:
        control_plane.deploy(
            rest_api_project(uuid=ok, name="PizzaShack", version="1.0.0", context="/pizzashack"), labels=["Default"]
        )
        await settled_status(client, ORG, ok, processed=1)
        kube.inject_fault(
            verb="apply", kind="HTTPRoute", status=422, reason="Invalid", message="refused by the gateway"
        )
        control_plane.deploy(
            rest_api_project(uuid=bad, name="Inventory", version="2.0.0", context="/inventory"), labels=["Default"]
        )
        status = await settled_status(client, ORG, bad, processed=1)
        kube.clear_faults()
        assert status.phase == "failed", status
        assert [r["deploymentStatus"] for r in reports_for(control_plane.deployment_reports, ok)] == ["SUCCESS"]
        yield Deployed(agent=agent, ok=ok, bad=bad)


def test_the_worker_says_what_to_run_where_it_may_not_register(caplog: pytest.LogCaptureFixture) -> None:
    class Refusing:
        async def list_search_attributes(self, request: object) -> object:
            class Listed:
                custom_attributes: dict[str, int] = {}

            return Listed()

        async def add_search_attributes(self, request: object) -> None:
            raise RPCError("Request unauthorized.", RPCStatusCode.PERMISSION_DENIED, b"")

    class CloudClient:
        operator_service = Refusing()
        namespace = "agents.a1b2c"

    with caplog.at_level(logging.ERROR):
        have = asyncio.run(ensure_search_attributes(CloudClient(), "agents.a1b2c"))  # type: ignore[arg-type]
    assert have == frozenset()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert "PERMISSION_DENIED" in message and "Deployments work" in message
    assert "temporal operator search-attribute create --namespace agents.a1b2c --name ApiId --type Keyword" in message
    assert "--name GatewayLabel --type KeywordList" in message
    assert "tcld namespace search-attributes add --namespace agents.a1b2c" in message


async def test_the_worker_registers_them_and_the_queries_find_each_state(
    ui_server: UiServer,
    settings: Settings,
    kube: KubeEmulator,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
) -> None:
    client = ui_server.client
    before = await custom_attributes(client)
    assert not {k.name for k in SEARCH_ATTRIBUTES} & set(before)
    assert await register_search_attributes(client) == {k.name for k in SEARCH_ATTRIBUTES}
    after = await custom_attributes(client)
    assert {k.name: int(k.indexed_value_type) for k in SEARCH_ATTRIBUTES}.items() <= after.items(), after
    assert await register_search_attributes(client) == {k.name for k in SEARCH_ATTRIBUTES}  # again: nothing to do

    async with deploy_two(settings, client, kube, kube_api_client, control_plane) as two:
        ok, bad = two.ok, two.bad
        # Everything of one API: its workflow and its deployment.
        found = await until_listed(client, f"ApiId = '{ok}'", lambda f: len(f) == 2)
        by_type = {w.workflow_type: w for w in found}
        api_wf, deployment = by_type["ApiWorkflow"], by_type["ApiDeployment"]
        sa = api_wf.typed_search_attributes
        assert sa.get(SEARCH_ATTRIBUTES[1]) == "PizzaShack" and sa.get(SEARCH_ATTRIBUTES[2]) == ORG
        assert list(sa.get(SEARCH_ATTRIBUTES[3]) or []) == ["Default"]
        assert sa.get(SEARCH_ATTRIBUTES[4]) == "deployed"
        assert deployment.typed_search_attributes.get(SEARCH_ATTRIBUTES[4]) == "succeeded"
        assert deployment.status == WorkflowExecutionStatus.COMPLETED
        memo = await api_wf.memo()
        assert memo["revision"] == "1" and memo["last_error"] == "" and memo["event_id"], memo
        assert datetime.fromisoformat(memo["state_since"]).utcoffset() is not None, memo

        # All failed deployments of an organization: the API's workflow and its failed deployment.
        failed = await until_listed(
            client, f"Organization = '{ORG}' AND DeploymentState = 'failed'", lambda f: len(f) == 2
        )
        assert ids(failed) == {f"api:{ORG}:{bad}", next(w.id for w in failed if w.workflow_type == "ApiDeployment")}
        failed_deployment = next(w for w in failed if w.workflow_type == "ApiDeployment")
        assert failed_deployment.status == WorkflowExecutionStatus.FAILED
        assert failed_deployment.id.startswith(f"deploy:{ORG}:{bad}:")
        bad_memo = await next(w for w in failed if w.workflow_type == "ApiWorkflow").memo()
        assert "refused by the gateway" in bad_memo["last_error"] and bad_memo["revision"] == "", bad_memo

        # By gateway label: both APIs' workflows (the failed one is meant for Default too).
        labelled = await listing(client, "WorkflowType = 'ApiWorkflow' AND GatewayLabel = 'Default'")
        assert ids(labelled) == {f"api:{ORG}:{ok}", f"api:{ORG}:{bad}"}
        # Stuck ones (the README's query): none here.
        stuck = "DeploymentState IN ('running', 'rolling-back') AND StartTime < '2000-01-01T00:00:00Z'"
        assert await listing(client, stuck) == []
        # Each value is one of the documented vocabulary.
        for w in await listing(client, f"Organization = '{ORG}'"):
            state = w.typed_search_attributes.get(SEARCH_ATTRIBUTES[4])
            assert state in (API_STATES if w.workflow_type == "ApiWorkflow" else DEPLOYMENT_STATES), (w.id, state)

        # A retry that converges: deployed; then the API is removed: removed, and off the label.
        handle = client.get_workflow_handle(f"api:{ORG}:{bad}")
        await handle.execute_update("retry", {"reason": "test"})
        await until_listed(client, f"ApiId = '{bad}' AND DeploymentState = 'deployed'", lambda f: len(f) == 1)
        control_plane.undeploy(ok)
        await settled_status(client, ORG, ok, processed=2)
        removed = await until_listed(
            client,
            f"ApiId = '{ok}' AND WorkflowType = 'ApiWorkflow' AND DeploymentState = 'removed'",
            lambda f: len(f) == 1,
        )
        assert (await removed[0].memo())["revision"] == ""
        labelled = await listing(client, "WorkflowType = 'ApiWorkflow' AND GatewayLabel = 'Default'")
        assert ids(labelled) == {f"api:{ORG}:{bad}"}
        assert (
            await listing(client, f"ApiId = '{ok}' AND ExecutionStatus = 'Running' AND WorkflowType = 'ApiDeployment'")
            == []
        )


# Screenshots of the Temporal UI, for the README (regenerate them with
# `.venv/bin/python -m pytest tests/integration/test_visibility.py -k screenshots`).
# Chromium is driven over its DevTools protocol: a running workflow's page keeps a long poll
# open, which neither --virtual-time-budget (it waits for it) nor --timeout (it shoots at once) likes.

WINDOW = (1600, 1000)
LIST_WINDOW = (2100, 800)  # wide enough for the workflow ids and the type column beside them
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@dataclass
class Shot:
    url: str
    # Text the page shows once it has rendered what the screenshot is for.
    shows: str
    size: tuple[int, int] = WINDOW


async def screenshots(
    browser: str, shots: dict[Path, Shot], profile: Path, failures: Path, timeout: float = 20.0
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [browser, *CHROMIUM_ARGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            targets: list[dict[str, Any]] = []
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                        targets = [t for t in await answer.json() if t["type"] == "page"]
                    if targets:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            assert targets, "chromium opened no page"
            async with http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                calls = 0

                async def call(method: str, **params: Any) -> dict[str, Any]:
                    nonlocal calls
                    calls += 1
                    await ws.send_json({"id": calls, "method": method, "params": params})
                    async for message in ws:
                        data = message.json()
                        if data.get("id") == calls:
                            assert "error" not in data, (method, data)
                            return data["result"]
                    raise AssertionError(f"chromium closed the connection during {method}")

                for path, shot in shots.items():
                    await call(
                        "Emulation.setDeviceMetricsOverride",
                        width=shot.size[0],
                        height=shot.size[1],
                        deviceScaleFactor=1,
                        mobile=False,
                    )
                    await call("Page.navigate", url=shot.url)
                    deadline = time.monotonic() + timeout
                    probe = f"document.body && document.body.innerText.includes({json.dumps(shot.shows)})"
                    while not (await call("Runtime.evaluate", expression=probe))["result"].get("value"):
                        if time.monotonic() > deadline:
                            png = await call("Page.captureScreenshot", format="png")
                            failed = failures / path.name
                            failed.write_bytes(base64.b64decode(png["data"]))
                            raise AssertionError(f"{shot.url} never showed {shot.shows!r}; it showed {failed}")
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(1.5)  # the rest of the page (Markdown, fonts, tables) settles
                    png = await call("Page.captureScreenshot", format="png")
                    path.write_bytes(base64.b64decode(png["data"]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def assert_shows_something(path: Path) -> None:
    """A PNG of the window's size, neither blank nor one flat colour."""
    from PIL import Image, ImageStat

    assert path.stat().st_size > 20_000, f"{path}: {path.stat().st_size} bytes"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size in (WINDOW, LIST_WINDOW), (image.format, image.size)
        grey = image.convert("L")
        assert ImageStat.Stat(grey).stddev[0] > 10, f"{path}: nearly one colour"
        assert len(grey.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50, f"{path}: too few colours"


async def test_ui_screenshots(
    ui_server: UiServer,
    settings: Settings,
    kube: KubeEmulator,
    kube_api_client: k8s_client.ApiClient,
    control_plane: ControlPlaneSimulator,
    tmp_path: Path,
) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (scripts/bootstrap installs Debian's): the screenshots need a browser")
    client = ui_server.client
    await register_search_attributes(client)
    async with deploy_two(settings, client, kube, kube_api_client, control_plane) as two:
        failed = await until_listed(
            client, f"ApiId = '{two.bad}' AND WorkflowType = 'ApiDeployment'", lambda f: len(f) == 1
        )
        [api_workflow] = await until_listed(
            client, f"ApiId = '{two.bad}' AND WorkflowType = 'ApiWorkflow'", lambda f: len(f) == 1
        )
        await until_listed(client, f"ApiId = '{two.ok}'", lambda f: len(f) == 2)
        base = f"{ui_server.ui_url}/namespaces/{client.namespace}/workflows"

        def page(w: WorkflowExecution, tab: str) -> str:
            return f"{base}/{urllib.parse.quote(w.id, safe='')}/{w.run_id}/{tab}"

        query = f"Organization = '{ORG}'"
        shots = {
            DOCS / "ui-deployments.png": Shot(f"{base}?query={urllib.parse.quote(query)}", failed[0].id, LIST_WINDOW),
            DOCS / "ui-failed-deployment.png": Shot(page(failed[0], "history"), "refused by the gateway"),
            DOCS / "ui-api-workflow.png": Shot(page(api_workflow, "user-metadata"), "Current Details"),
        }
        await screenshots(browser, shots, tmp_path / "chromium", failures=tmp_path)
        for path in shots:
            assert_shows_something(path)
