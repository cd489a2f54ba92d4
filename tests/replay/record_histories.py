"""Record workflow histories for the replay test: ``python -m tests.replay.record_histories PREFIX``.

Runs each scenario against the real Temporal dev server, the API-server emulator (as the gateway
operator) and the control-plane simulator, with the workflow code of the checkout, and writes every
workflow run's history to ``tests/replay/histories/<PREFIX>-<scenario>-<n>.json``. Histories from
earlier code are kept: the replay test runs all of them through the current code.

The prefix's first letter names the family of scenarios, its number the code version:
``v<N>`` records the API scenarios (``ApiWorkflow``, ``ApiDeployment``), ``c<N>`` the consumer
ones (``ConsumerWorkflow``, ``ConsumerDeployment``, ``FullSync``, and the API workflows a sync
hands an API to).
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
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.cluster import KubeCluster
from agent.search_attributes import ensure_search_attributes
from agent.settings import Settings
from harness.api_projects import rest_api_project
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from intake.listener import _signal_of
from intake.submit import TemporalSubmitter, _consumer_summary, retry_options
from models.api_workflow import ApiEventSignal, ApiWorkflowInput, api_workflow_id
from models.consumer_workflow import (
    ConsumerEventSignal,
    ConsumerKind,
    ConsumerWorkflowInput,
    SyncResult,
    consumer_workflow_id,
)
from models.events import encode_envelope, parse_message
from models.visibility import SEARCH_ATTRIBUTES
from tests.integration.conftest import temporal_binary
from worker import build_worker, sync_input
from workflows.full_sync import FullSync

HISTORIES = Path(__file__).resolve().parent / "histories"
ORG = "carbon.super"

Scenario = Callable[["Stack"], Awaitable[list[str]]]


class Stack:
    def __init__(self, client: Client, kube: KubeEmulator, cp: ControlPlaneSimulator, settings: Settings) -> None:
        self.client, self.kube, self.cp, self.settings = client, kube, cp, settings
        self.retry = retry_options(settings)
        self.submit = TemporalSubmitter(client, settings)

    async def send_last_event(self, events_per_run: int = 100) -> None:
        """Hand the simulator's last published event to Temporal as the listener does (signal-with-start)."""
        event = self.cp.published[-1]
        parsed = parse_message(encode_envelope(event["type"], event, event["timeStamp"]))
        signal = ApiEventSignal.from_event(parsed)  # type: ignore[arg-type]
        await self.client.start_workflow(
            "ApiWorkflow",
            ApiWorkflowInput(
                organization=ORG,
                api_uuid=signal.api_uuid,
                retry=self.retry,
                events_per_run=events_per_run,
                search_attributes=[k.name for k in SEARCH_ATTRIBUTES],  # registered by main()
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


    async def send_last_consumer_event(self, events_per_run: int | None = None) -> ConsumerEventSignal:
        """The simulator's last published event, through the listener's decoding and the intake's
        signal-with-start to its ``ConsumerWorkflow`` (``events_per_run`` set: the same start, with it)."""
        event = self.cp.published[-1]
        signal = _signal_of(parse_message(encode_envelope(event["type"], event, event["timeStamp"])))  # type: ignore[arg-type]
        assert isinstance(signal, ConsumerEventSignal), event
        if events_per_run is None:
            await self.submit(signal)
            return signal
        ref = signal.ref
        await self.client.start_workflow(
            "ConsumerWorkflow",
            ConsumerWorkflowInput(
                ref=ref,
                retry=self.retry,
                events_per_run=events_per_run,
                search_attributes=[k.name for k in SEARCH_ATTRIBUTES],
            ),
            id=consumer_workflow_id(ref.organization, ref.kind, ref.key),
            task_queue=self.settings.task_queue,
            start_signal="submit_event",
            start_signal_args=[signal],
            static_summary=_consumer_summary(signal),
        )
        return signal

    async def consumer_settled(self, kind: ConsumerKind, key: str, processed: int, phase: str = "idle") -> dict:
        """Until the entity's workflow has run ``processed`` events, runs none and has none pending;
        its status then must be in ``phase`` (a scenario that went another way records nothing)."""
        handle = self.client.get_workflow_handle(consumer_workflow_id(ORG, kind, key))
        status: dict = {}
        for _ in range(1200):
            status = await handle.query("status")
            if (
                status["events_processed"] >= processed
                and not status.get("current_event")
                and not status.get("pending_events")
            ):
                assert status["phase"] == phase, status
                return status
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{kind} {key} did not settle after {processed} events: {status}")

    async def consumer_retry(self, kind: ConsumerKind, key: str) -> None:
        handle = self.client.get_workflow_handle(consumer_workflow_id(ORG, kind, key))
        await handle.execute_update("retry", {"reason": "replay recording"})

    async def full_sync(self, name: str, **overrides: object) -> SyncResult:
        return await self.client.execute_workflow(
            FullSync.run,
            sync_input(self.settings, "replay", **overrides),
            id=f"{SYNC_ID}-{name}",
            task_queue=self.settings.task_queue,
            result_type=SyncResult,
        )


def api_ids(uuid_: str) -> list[str]:
    """Workflow-id prefixes of an API's workflow runs and its deployments."""
    return [f"api:{ORG}:{uuid_}", f"deploy:{ORG}:{uuid_}"]


def consumer_ids(kind: ConsumerKind, key: str) -> list[str]:
    """Workflow-id prefixes of a consumer entity's workflow runs and its deployments."""
    return [consumer_workflow_id(ORG, kind, key), f"{kind}-deploy:{ORG}:{key}:"]


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
    return api_ids(uid)


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
    return api_ids(uid)


async def remove(stack: Stack) -> list[str]:
    uid = str(uuid.uuid4())
    stack.cp.deploy(api(uid, "1"))
    await stack.send_last_event()
    await stack.reports(uid, 1)
    stack.cp.undeploy(uid)
    await stack.send_last_event()
    await stack.reports(uid, 2)
    await stack.settled(uid)
    return api_ids(uid)


async def continue_as_new_with_pending(stack: Stack) -> list[str]:
    """Events per run is 2 in this stack: four events sent at once continue-as-new with two pending."""
    uid = str(uuid.uuid4())
    for revision in ("1", "2", "3", "4"):
        stack.cp.deploy(api(uid, revision, production_url=f"http://v{revision}.backend.example/api"))
        await stack.send_last_event(events_per_run=2)
    await stack.reports(uid, 2)
    await stack.settled(uid)
    return api_ids(uid)


API_SCENARIOS: dict[str, Scenario] = {
    "success": success,
    "failure-rollback-retry": failure_rollback_retry,
    "remove": remove,
    "continue-as-new-pending": continue_as_new_with_pending,
}


# Consumers: applications, subscriptions, tiers and the full sync.

SYNC_ID = "full-sync-replay"
API_UUID = "5d0c7a3e-3f4b-4f0e-9a56-2c1d8e7b6a90"  # subscribed to; the CP names it, no need to deploy it


async def application_keys(stack: Stack) -> list[str]:
    """An application is created, gets a key, loses it and is deleted: one event at a time."""
    cp = stack.cp
    app = cp.create_application("ReplayApp", owner="replay", attributes={"tier": "gold"})
    await stack.send_last_consumer_event()
    key = app["uuid"]
    await stack.consumer_settled("application", key, 1)
    cp.add_key(key, key_type="PRODUCTION", consumer_key="replay-production-client-id")
    await stack.send_last_consumer_event()
    await stack.consumer_settled("application", key, 2)
    cp.add_key(key, key_type="SANDBOX", consumer_key="replay-sandbox-client-id")
    await stack.send_last_consumer_event()
    await stack.consumer_settled("application", key, 3)
    cp.remove_key(key, "replay-production-client-id")
    await stack.send_last_consumer_event()
    await stack.consumer_settled("application", key, 4)
    cp.delete_application(key)
    await stack.send_last_consumer_event()
    status = await stack.consumer_settled("application", key, 5)
    assert status["applied"] == [], status
    return consumer_ids("application", key)


async def subscription_block_unblock(stack: Stack) -> list[str]:
    """A subscription loses its mapping while blocked, gets it back, changes tier, goes."""
    cp = stack.cp
    app = cp.create_application("ReplaySubscriber")
    await stack.send_last_consumer_event()
    await stack.consumer_settled("application", app["uuid"], 1)
    sub = cp.subscribe(app["uuid"], API_UUID, api_name="ReplayAPI", api_version="1.0.0", policy="Unlimited")
    key = sub["subscriptionUUID"]
    await stack.send_last_consumer_event()
    status = await stack.consumer_settled("subscription", key, 1)
    assert len(status["applied"]) == 2, status  # the Subscription and its ApplicationMapping
    changes: list[Callable[[], object]] = [
        lambda: cp.update_subscription(key, state="BLOCKED"),
        lambda: cp.update_subscription(key, state="UNBLOCKED"),
        lambda: cp.update_subscription(key, policy="Gold"),
        lambda: cp.update_subscription(key, state="PROD_ONLY_BLOCKED"),
        lambda: cp.unsubscribe(key),
    ]
    for processed, change in enumerate(changes, 2):
        change()
        await stack.send_last_consumer_event()
        status = await stack.consumer_settled("subscription", key, processed)
        if processed == 2:
            assert len(status["applied"]) == 1, status  # blocked: no mapping
    assert status["applied"] == [], status
    cp.delete_application(app["uuid"])
    await stack.send_last_consumer_event()
    await stack.consumer_settled("application", app["uuid"], 2)
    return consumer_ids("subscription", key) + consumer_ids("application", app["uuid"])


async def tier_refused_then_fixed_with_retry(stack: Stack) -> list[str]:
    """100 requests per 5 min has no exact gateway unit: refused; the CP's tier is fixed without an
    event, the operator retries (attempt 2 converges), then the tier is deleted."""
    cp = stack.cp
    name = "ReplayTierOdd"
    cp.add_subscription_policy(name, request_count=100, time_unit="min", unit_time=5)
    await stack.send_last_consumer_event()
    failed = await stack.consumer_settled("tier", name, 1, phase="failed")
    assert "cannot be expressed exactly" in (failed["last_error"] or ""), failed
    cp.update_subscription_policy(name, request_count=100, time_unit="min", unit_time=1, publish=False)
    await stack.consumer_retry("tier", name)
    fixed = await stack.consumer_settled("tier", name, 2)
    assert fixed["applied"], fixed
    cp.delete_subscription_policy(name)
    await stack.send_last_consumer_event()
    await stack.consumer_settled("tier", name, 3)
    return consumer_ids("tier", name)


async def apply_refused_restored_retry(stack: Stack) -> list[str]:
    """A tier change's Subscription is applied, its ApplicationMapping refused: the compensation
    restores the Subscription; the operator's retry converges."""
    cp = stack.cp
    app = cp.create_application("ReplayRestore", publish=False)
    sub = cp.subscribe(app["uuid"], API_UUID, api_name="ReplayAPI", api_version="1.0.0", policy="Unlimited")
    key = sub["subscriptionUUID"]
    await stack.send_last_consumer_event()
    await stack.consumer_settled("subscription", key, 1)
    stack.kube.inject_fault(
        verb="apply", kind="ApplicationMapping", status=422, reason="Invalid", message="refused", times=1
    )
    cp.update_subscription(key, policy="Gold")
    await stack.send_last_consumer_event()
    failed = await stack.consumer_settled("subscription", key, 2, phase="failed")
    assert "restored" in (failed["last_error"] or ""), failed
    await stack.consumer_retry("subscription", key)
    await stack.consumer_settled("subscription", key, 3)
    cp.unsubscribe(key)
    await stack.send_last_consumer_event()
    await stack.consumer_settled("subscription", key, 4)
    cp.delete_application(app["uuid"], publish=False)
    return consumer_ids("subscription", key)


async def consumer_continue_as_new(stack: Stack) -> list[str]:
    """Events per run is 2: five events sent at once continue-as-new twice with events pending."""
    cp = stack.cp
    app = cp.create_application("ReplayBusy")
    key = app["uuid"]
    await stack.send_last_consumer_event(events_per_run=2)
    cp.add_key(key, key_type="PRODUCTION", consumer_key="replay-busy-production-client-id")
    await stack.send_last_consumer_event(events_per_run=2)
    cp.add_key(key, key_type="SANDBOX", consumer_key="replay-busy-sandbox-client-id")
    await stack.send_last_consumer_event(events_per_run=2)
    cp.update_application(key, name="ReplayBusier", attributes={"tier": "silver"})
    await stack.send_last_consumer_event(events_per_run=2)
    cp.delete_application(key)
    await stack.send_last_consumer_event(events_per_run=2)
    await stack.consumer_settled("application", key, 5)
    return consumer_ids("application", key)


async def full_sync(stack: Stack) -> list[str]:
    """Consumers and one API in the control plane only (no events): a sync creates them and hands
    the API to its workflow; a sync while the CP answers 500 on subscriptions aborts; a report
    sync finds the drift a key removal without an event left and changes nothing."""
    cp = stack.cp
    uid = str(uuid.uuid4())
    cp.deploy(api(uid, "1"), publish=False)
    cp.add_subscription_policy("ReplaySyncGold", request_count=500, time_unit="min", unit_time=1, publish=False)
    apps = []
    for n in (1, 2):
        app = cp.create_application(f"ReplaySync{n}", publish=False)
        cp.add_key(app["uuid"], key_type="PRODUCTION", consumer_key=f"replay-sync-{n}-client-id", publish=False)
        cp.subscribe(app["uuid"], uid, policy="ReplaySyncGold", publish=False)
        apps.append(app)
    cp.subscribe(apps[0]["uuid"], API_UUID, api_name="ReplayAPI", api_version="1.0.0", state="BLOCKED", publish=False)

    applied = await stack.full_sync("apply")
    assert not applied.aborted and applied.created and [c.resource for c in applied.apis] == [f"API/{uid}"], applied
    await stack.reports(uid, 1)
    await stack.settled(uid)

    cp.fail_requests("subscriptions", status=500)
    try:
        await stack.full_sync("aborted")
    except WorkflowFailureError:
        pass
    else:
        raise AssertionError("the sync ran through a control plane answering 500 on subscriptions")
    finally:
        cp.clear_failures()

    cp.remove_key(apps[1]["uuid"], "replay-sync-2-client-id", publish=False)
    report = await stack.full_sync("report", mode="report")
    drifted = f"Application/{apps[1]['uuid']}"
    assert [c.resource for c in report.drifted] == [drifted], report
    kept = stack.kube.get_object("Application", stack.settings.namespace, apps[1]["uuid"])
    assert kept and kept["spec"].get("securitySchemes"), kept  # reported, not written: the key is still there
    return [SYNC_ID, *api_ids(uid)]


CONSUMER_SCENARIOS: dict[str, Scenario] = {
    "application-keys": application_keys,
    "subscription-block-unblock": subscription_block_unblock,
    "tier-refused-then-fixed-with-retry": tier_refused_then_fixed_with_retry,
    "apply-refused-restored-retry": apply_refused_restored_retry,
    "continue-as-new": consumer_continue_as_new,
    "full-sync": full_sync,
}

# The first letter of a prefix: which scenarios it records.
FAMILIES: dict[str, dict[str, Scenario]] = {"v": API_SCENARIOS, "c": CONSUMER_SCENARIOS}


def scenarios_of(prefix: str) -> dict[str, Scenario]:
    family = FAMILIES.get(prefix[:1])
    if family is None or not prefix[1:].isdigit():
        raise SystemExit(f"prefix {prefix!r}: one of {', '.join(f'{f}<N>' for f in FAMILIES)}, e.g. v3 or c2")
    return family


async def write_histories(client: Client, prefix: str, scenario: str, id_prefixes: list[str]) -> list[Path]:
    """Every run of every workflow the scenario started (those whose ids start with one of
    ``id_prefixes``: the entity's workflow runs and its deployments)."""
    written = []
    ids = " OR ".join(f"WorkflowId STARTS_WITH '{p}'" for p in id_prefixes)
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
    scenarios = scenarios_of(prefix)
    unknown = set(only) - set(scenarios)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; {prefix[:1]}<N> has {', '.join(scenarios)}")
    HISTORIES.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter
    )
    try:
        # As the worker does at its start: histories then hold the search attributes and memo.
        await ensure_search_attributes(env.client, env.client.namespace)
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
                for name, scenario in scenarios.items():
                    if only and name not in only:
                        continue
                    id_prefixes = await scenario(stack)
                    for path in await write_histories(env.client, prefix, name, id_prefixes):
                        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "prefix", help="the family (v: APIs, c: consumers) and code version the histories come from, e.g. v2, c1"
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        help="; ".join(f"{f}<N>: some of {', '.join(s)}" for f, s in FAMILIES.items()) + " (default: all)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.prefix, args.scenarios))
    sys.stdout.flush()
