"""The Temporal worker: the API workflow and the activities that touch the world."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.cluster import ClusterActivities, KubeCluster, load_kube_api_client, quiet_urllib3
from activities.control_plane import ControlPlaneActivities, ControlPlaneClient
from activities.sealing import Sealer
from agent.settings import Settings
from workflows.api_deployment import ApiDeployment
from workflows.api_workflow import ApiWorkflow

log = logging.getLogger(__name__)

ACTIVITY_THREADS = 32


def build_worker(client: Client, settings: Settings, cluster: KubeCluster | None = None) -> Worker:
    """A worker with every workflow and activity registered; ``cluster`` defaults to the configured one."""
    quiet_urllib3()
    sealer = Sealer(settings.sealing_key.get_secret_value())
    cluster = cluster or KubeCluster(
        load_kube_api_client(), settings.namespace, request_timeout=settings.kube_request_timeout_seconds
    )
    kube = ClusterActivities(cluster, settings, sealer)
    cp = ControlPlaneActivities(ControlPlaneClient(settings), settings, sealer)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ApiWorkflow, ApiDeployment],
        activities=[
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
        graceful_shutdown_timeout=timedelta(seconds=30),
    )


async def run_worker(client: Client, settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then let running activities finish (graceful shutdown)."""
    cluster = KubeCluster(
        load_kube_api_client(), settings.namespace, request_timeout=settings.kube_request_timeout_seconds
    )
    problem = await asyncio.to_thread(cluster.check)
    if problem:
        log.warning("the Kubernetes API server does not answer yet (%s); deployments retry until it does", problem)
    else:
        log.info("Kubernetes API server %s answers", cluster.server)
    worker = build_worker(client, settings, cluster)
    async with worker:
        log.info("worker polling task queue %s on %s", settings.task_queue, settings.temporal_address)
        await stop.wait()
        log.info("worker shutting down")
