"""The Temporal worker: the API workflow and the activities that touch the world."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.cluster import ClusterActivities, KubeCluster, load_kube_api_client, quiet_urllib3
from activities.consumers import ConsumerActivities, ConsumerClusters
from activities.control_plane import ControlPlaneActivities, ControlPlaneClient
from activities.sealing import Sealer
from activities.sync import SyncActivities, SyncHandoff
from agent.health import Health
from agent.search_attributes import ensure_search_attributes
from agent.settings import Settings
from intake.submit import TemporalSubmitter, retry_options
from models.consumer_workflow import SyncInput
from workflows.api_deployment import ApiDeployment
from workflows.api_workflow import ApiWorkflow
from workflows.consumer_deployment import ConsumerDeployment
from workflows.consumer_workflow import ConsumerWorkflow
from workflows.full_sync import SYNC_SCHEDULE_ID, SYNC_WORKFLOW_ID, FullSync

log = logging.getLogger(__name__)

ACTIVITY_THREADS = 32


def build_worker(client: Client, settings: Settings, cluster: KubeCluster | None = None) -> Worker:
    """A worker with every workflow and activity registered; ``cluster`` defaults to the configured one."""
    quiet_urllib3()
    # With the codec all of history is encrypted: seal nothing new, unseal what was sealed before.
    sealer = Sealer(settings.sealing_key.get_secret_value(), seal_new=settings.payload_codec() is None)
    cluster = cluster or KubeCluster(
        load_kube_api_client(),
        settings.namespace,
        request_timeout=settings.kube_request_timeout_seconds,
        gateway_id=settings.effective_gateway_id,
    )
    if cluster.gateway_id != settings.effective_gateway_id:
        raise ValueError(
            f"the cluster is scoped to gateway id {cluster.gateway_id!r}, "
            f"the settings name {settings.effective_gateway_id!r}"
        )
    kube = ClusterActivities(cluster, settings, sealer)
    cp_client = ControlPlaneClient(settings)
    cp = ControlPlaneActivities(cp_client, settings, sealer)
    apps_namespace = settings.effective_application_namespace
    apps_cluster = (
        cluster
        if apps_namespace == cluster.namespace
        else KubeCluster(
            cluster.api_client, apps_namespace, request_timeout=cluster.request_timeout, gateway_id=cluster.gateway_id
        )
    )
    clusters = ConsumerClusters(applications=apps_cluster, tiers=cluster, apis=cluster)
    consumers = ConsumerActivities(cp_client, clusters, settings)
    sync = SyncActivities(cp_client, clusters, settings, sealer, cp.options, consumers.options)
    handoff = SyncHandoff(TemporalSubmitter(client, settings))
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ApiWorkflow, ApiDeployment, ConsumerWorkflow, ConsumerDeployment, FullSync],
        activities=[
            consumers.fetch_consumer_desired,
            consumers.snapshot_consumer_resources,
            consumers.apply_consumer_resources,
            consumers.prune_consumer_resources,
            consumers.restore_consumer_snapshot,
            sync.sync_consumers,
            handoff.converge_apis,
            cp.fetch_desired_state,
            cp.report_deployment_status,
            kube.snapshot_api_resources,
            kube.apply_api_resources,
            kube.prune_api_resources,
            kube.wait_until_accepted,
            kube.restore_api_resources,
            kube.restore_snapshot,
        ],
        activity_executor=ThreadPoolExecutor(max_workers=ACTIVITY_THREADS),
        max_concurrent_activities=ACTIVITY_THREADS,
        max_cached_workflows=settings.workflow_cache_size,
        graceful_shutdown_timeout=timedelta(seconds=30),
    )


async def run_worker(client: Client, settings: Settings, stop: asyncio.Event, health: Health | None = None) -> None:
    """Run until ``stop`` is set, then let running activities finish (graceful shutdown); ``health``
    learns whether the worker is polling."""
    cluster = KubeCluster(
        load_kube_api_client(),
        settings.namespace,
        request_timeout=settings.kube_request_timeout_seconds,
        gateway_id=settings.effective_gateway_id,
    )
    problem = await asyncio.to_thread(cluster.check)
    if problem:
        log.warning("the Kubernetes API server does not answer yet (%s); deployments retry until it does", problem)
    else:
        log.info("Kubernetes API server %s answers", cluster.server)
    await register_search_attributes(client)
    worker = build_worker(client, settings, cluster)
    async with worker:
        target = client.service_client.config.target_host
        log.info("worker polling task queue %s on %s namespace %s", settings.task_queue, target, client.namespace)
        await schedule_full_sync(client, settings)
        if health is not None:
            health.ready("worker", _polling(worker, settings.task_queue))
        await stop.wait()
        log.info("worker shutting down")


async def register_search_attributes(client: Client) -> frozenset[str]:
    """At worker start: register the search attributes the workflows set, where missing. Where the
    worker may not, an ERROR names the commands to run; the workflows then set what is there."""
    return await ensure_search_attributes(client, client.namespace)


def _polling(worker: Worker, task_queue: str) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        return None if worker.is_running else f"worker: not polling task queue {task_queue}"

    return check


def sync_input(settings: Settings, trigger: str, **overrides: object) -> SyncInput:
    return SyncInput(
        mode=settings.sync_mode,
        max_delete_ratio=settings.sync_max_delete_ratio,
        retry=retry_options(settings),
        trigger=trigger,
    ).model_copy(update=overrides)


async def schedule_full_sync(client: Client, settings: Settings) -> None:
    """One sync now (unless one is running), and the Schedule that runs it every
    ``sync_interval_seconds`` (removed when that is 0). Failures are logged, never fatal."""
    try:
        await client.start_workflow(
            FullSync.run,
            sync_input(settings, "startup"),
            id=f"{SYNC_WORKFLOW_ID}-startup",
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary="full sync at worker start",
        )
        handle = client.get_schedule_handle(SYNC_SCHEDULE_ID)
        if settings.sync_interval_seconds <= 0:
            try:
                await handle.delete()
                log.info("full sync schedule removed (GATEWAY_AGENT_SYNC_INTERVAL_SECONDS=0)")
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            return
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                FullSync.run,
                sync_input(settings, "schedule"),
                id=SYNC_WORKFLOW_ID,
                task_queue=settings.task_queue,
                static_summary=f"full sync every {settings.sync_interval_seconds:g}s (schedule)",
            ),
            spec=ScheduleSpec(
                intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.sync_interval_seconds))]
            ),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        )
        try:
            await client.create_schedule(SYNC_SCHEDULE_ID, schedule)
        except Exception as exc:  # already there: bring it to the current settings
            if "already" not in str(exc).lower():
                raise

            def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await handle.update(update)
        log.info("full sync every %gs (schedule %s)", settings.sync_interval_seconds, SYNC_SCHEDULE_ID)
    except Exception as exc:
        log.warning("could not start or schedule the full sync: %s", exc)
