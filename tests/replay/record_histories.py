"""Record workflow histories for the replay test: ``python -m tests.replay.record_histories PREFIX``.

Runs each scenario against the real Temporal dev server, the API-server emulator (as the gateway
operator) and the control-plane simulator, with the workflow code of the checkout, and writes every
workflow run's history to ``tests/replay/histories/<PREFIX>-<scenario>-<n>.json``. Histories from
earlier code are kept: the replay test runs all of them through the current code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from kubernetes import config as k8s_config
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.cluster import KubeCluster
from agent.settings import Settings
from harness.api_projects import rest_api_project
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from intake.submit import retry_options
from models.api_workflow import ApiEventSignal, ApiWorkflowInput, api_workflow_id
from models.events import encode_envelope, parse_message
from tests.integration.conftest import temporal_binary
from worker import build_worker

HISTORIES = Path(__file__).resolve().parent / "histories"
ORG = "carbon.super"


class Stack:
    def __init__(self, client: Client, kube: KubeEmulator, cp: ControlPlaneSimulator, settings: Settings) -> None:
        self.client, self.kube, self.cp, self.settings = client, kube, cp, settings
        self.retry = retry_options(settings)

    async def send_last_event(self, events_per_run: int = 100) -> None:
        """Hand the simulator's last published event to Temporal as the listener does (signal-with-start)."""
        event = self.cp.published[-1]
        parsed = parse_message(encode_envelope(event["type"], event, event["timeStamp"]))
        signal = ApiEventSignal.from_event(parsed)  # type: ignore[arg-type]
        await self.client.start_workflow(
            "ApiWorkflow",
            ApiWorkflowInput(
                organization=ORG, api_uuid=signal.api_uuid, retry=self.retry, events_per_run=events_per_run
            ),
            id=api_workflow_id(ORG, signal.api_uuid),
            task_queue=self.settings.task_queue,
            start_signal="submit_event",
            start_signal_args=[signal],
        )

    async def reports(self, api_uuid: str, count: int, timeout: float = 60) -> list[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [r for r in self.cp.deployment_reports if r["apiId"] == api_uuid]
            if len(found) >= count:
                return found
            if loop.time() > deadline:
                raise TimeoutError(f"{count} reports for {api_uuid}: {found}")
            await asyncio.sleep(0.05)

    async def settled(self, api_uuid: str) -> None:
        """Until the API's workflow has no running deployment and nothing pending."""
        handle = self.client.get_workflow_handle(api_workflow_id(ORG, api_uuid))
        for _ in range(1200):
            status = await handle.query("status")
            if not status.get("current_event") and not status.get("pending_events"):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"API {api_uuid} did not settle")


def api(uuid_: str, revision: str, **fields: object) -> object:
    return rest_api_project(
        uuid=uuid_, name="ReplayAPI", version="1.0.0", context="/replay", revision_id=revision, **fields
    )


async def success(stack: Stack) -> list[str]:
    uid = str(uuid.uuid4())
    stack.cp.deploy(api(uid, "1"))
    await stack.send_last_event()
    await stack.reports(uid, 1)
    stack.cp.deploy(api(uid, "2", production_url="http://v2.backend.example:9090/api"))
    await stack.send_last_event()
    await stack.reports(uid, 2)
    await stack.settled(uid)
    return [uid]


async def failure_rollback_retry(stack: Stack) -> list[str]:
    uid = str(uuid.uuid4())
    stack.cp.deploy(api(uid, "1"))
    await stack.send_last_event()
    await stack.reports(uid, 1)
    stack.kube.inject_fault(verb="apply", kind="HTTPRoute", status=422, reason="Invalid", message="refused", times=1)
    stack.cp.deploy(api(uid, "2", production_url="http://v2.backend.example:9090/api"))
    await stack.send_last_event()
    await stack.reports(uid, 2)
    await stack.settled(uid)
    handle = stack.client.get_workflow_handle(api_workflow_id(ORG, uid))
    await handle.execute_update("retry", {"reason": "replay recording"})
    await stack.reports(uid, 3)
    await stack.settled(uid)
    return [uid]


async def remove(stack: Stack) -> list[str]:
    uid = str(uuid.uuid4())
    stack.cp.deploy(api(uid, "1"))
    await stack.send_last_event()
    await stack.reports(uid, 1)
    stack.cp.undeploy(uid)
    await stack.send_last_event()
    await stack.reports(uid, 2)
    await stack.settled(uid)
    return [uid]


async def continue_as_new_with_pending(stack: Stack) -> list[str]:
    """Events per run is 2 in this stack: four events sent at once continue-as-new with two pending."""
    uid = str(uuid.uuid4())
    for revision in ("1", "2", "3", "4"):
        stack.cp.deploy(api(uid, revision, production_url=f"http://v{revision}.backend.example/api"))
        await stack.send_last_event(events_per_run=2)
    await stack.reports(uid, 2)
    await stack.settled(uid)
    return [uid]


SCENARIOS: dict[str, Callable[[Stack], Awaitable[list[str]]]] = {
    "success": success,
    "failure-rollback-retry": failure_rollback_retry,
    "remove": remove,
    "continue-as-new-pending": continue_as_new_with_pending,
}


async def write_histories(client: Client, prefix: str, scenario: str, uuids: list[str]) -> list[Path]:
    """Every run of every workflow the scenario started (the API's runs and its deployments)."""
    written = []
    ids = " OR ".join(f"WorkflowId STARTS_WITH '{p}'" for u in uuids for p in (f"api:{ORG}:{u}", f"deploy:{ORG}:{u}"))
    runs = [w async for w in client.list_workflows(ids)]
    runs.sort(key=lambda w: (w.start_time, w.id))
    for n, run in enumerate(runs, 1):
        history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        if not any(e.HasField("workflow_task_completed_event_attributes") for e in history.events):
            continue  # a run that has not run yet holds nothing to replay
        path = HISTORIES / f"{prefix}-{scenario}-{n}.json"
        path.write_text(json.dumps({"workflow_id": run.id, "history": json.loads(history.to_json())}, indent=1))
        written.append(path)
    return written


async def main(prefix: str, only: list[str]) -> None:
    HISTORIES.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter
    )
    try:
        with KubeEmulator(gateway_operator=True) as kube, ControlPlaneSimulator(broker_url=None) as cp:
            with tempfile.TemporaryDirectory() as tmp:
                api_client = k8s_config.new_client_from_config(str(kube.write_kubeconfig(Path(tmp) / "config")))
            settings = Settings(
                temporal_address=env.client.service_client.config.target_host,
                task_queue=f"replay-{uuid.uuid4().hex[:6]}",
                cp_url=cp.url,
                namespace="default",
                readiness_timeout_seconds=5,
                activity_max_attempts=2,
                activity_initial_retry_seconds=0.1,
                sealing_key="",
            )
            stack = Stack(env.client, kube, cp, settings)
            async with build_worker(env.client, settings, KubeCluster(api_client, settings.namespace)):
                for name, scenario in SCENARIOS.items():
                    if only and name not in only:
                        continue
                    uuids = await scenario(stack)
                    for path in await write_histories(env.client, prefix, name, uuids):
                        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prefix", help="names the code version the histories come from, e.g. v2")
    parser.add_argument("scenarios", nargs="*", help=f"some of {', '.join(SCENARIOS)} (default: all)")
    args = parser.parse_args()
    asyncio.run(main(args.prefix, args.scenarios))
    sys.stdout.flush()
