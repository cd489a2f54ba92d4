"""End-to-end benchmark: control-plane event on the broker → API accepted → SUCCESS reported.

Runs the whole local stack on this machine (Temporal dev server, ActiveMQ, the API-server
emulator acting as the gateway operator, the control-plane simulator) and the agent in
this process, then measures:

- latency: APIs deployed one at a time, ``--interval`` seconds apart; time from publishing
  DEPLOY_API_IN_GATEWAY to the control plane receiving SUCCESS (p50, p90, max);
- burst: N APIs published at once; APIs per second until every SUCCESS arrived.

Usage: ``.venv/bin/python bench/e2e_bench.py [--latency 30] [--interval 1] [--burst 200] [--operator-delay 0]``.
Results are written down in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activities.cluster import KubeCluster  # noqa: E402
from agent.settings import Settings  # noqa: E402
from harness.activemq import ActiveMQ  # noqa: E402
from harness.api_projects import rest_api_project  # noqa: E402
from harness.control_plane import ControlPlaneSimulator  # noqa: E402
from harness.kube_emulator import KubeEmulator  # noqa: E402
from intake.listener import BrokerListener  # noqa: E402
from intake.submit import TemporalSubmitter  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from worker import build_worker  # noqa: E402


def project(index: int):  # noqa: ANN201 - the harness's ApiProjectFiles
    return rest_api_project(
        uuid=str(uuid.uuid4()), name=f"Bench{index}", version="1.0.0", context=f"/bench{index}"
    )


async def wait_for_file(path: Path, timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while not path.exists():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{path} did not appear")
        await asyncio.sleep(0.05)


async def wait_reports(cp: ControlPlaneSimulator, uuids: set[str], timeout: float) -> dict[str, float]:
    """Arrival time of the first SUCCESS report of each API."""
    arrived: dict[str, float] = {}
    seen = 0
    deadline = time.perf_counter() + timeout
    while len(arrived) < len(uuids):
        reports = cp.deployment_reports
        now = time.perf_counter()
        for report in reports[seen:]:
            if report["apiId"] in uuids and report["deploymentStatus"] == "SUCCESS":
                arrived.setdefault(report["apiId"], now)
            elif report["apiId"] in uuids:
                raise RuntimeError(f"deployment failed: {report}")
        seen = len(reports)
        if now > deadline:
            raise TimeoutError(f"{len(arrived)}/{len(uuids)} reports after {timeout:g}s")
        await asyncio.sleep(0.002)
    return arrived


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=int, default=30, help="APIs deployed one at a time")
    parser.add_argument("--burst", type=int, default=200, help="APIs published at once")
    parser.add_argument("--operator-delay", type=float, default=0.0, help="the emulated gateway's reaction time")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between the latency samples' events")
    parser.add_argument(
        "--emulator-process",
        action="store_true",
        help="run the API-server emulator in its own process, as a real API server would be",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    broker = ActiveMQ(work / "activemq", port=free_port())
    broker.start()
    kubeconfig = work / "kubeconfig"
    if args.emulator_process:
        port = free_port()
        emulator = subprocess.Popen(
            [sys.executable, "-m", "harness.kube_emulator", "--port", str(port), "--gateway-operator",
             "--operator-delay", str(args.operator_delay), "--kubeconfig", str(kubeconfig)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        await wait_for_file(kubeconfig)
        stop_emulator = emulator.terminate
    else:
        kube = KubeEmulator(gateway_operator=True, operator_delay=args.operator_delay)
        kube.start()
        kube.write_kubeconfig(kubeconfig)
        stop_emulator = kube.stop
    # As in production (activities.cluster.load_kube_api_client): the loaded configuration becomes
    # the client's default, which the kubernetes client copies for every watch.
    k8s_config.load_kube_config(config_file=str(kubeconfig))
    api_client = k8s_client.ApiClient()
    k8s_client.CoreV1Api(api_client).create_namespace({"metadata": {"name": "bench"}})
    cp = ControlPlaneSimulator(broker_url=broker.stomp_url)
    cp.start()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).with_name("temporal")),
        data_converter=pydantic_data_converter,
    )
    settings = Settings(
        temporal_address=env.client.service_client.config.target_host,
        broker_url=broker.stomp_url,
        cp_url=cp.url,
        namespace="bench",
        sealing_key="",
    )
    stop = asyncio.Event()
    try:
        worker = build_worker(env.client, settings, KubeCluster(api_client, "bench"))
        listener = BrokerListener(settings, TemporalSubmitter(env.client, settings))
        async with worker:
            task = asyncio.create_task(listener.run(stop))
            await asyncio.wait_for(listener.connected.wait(), 30)

            latencies = []
            for i in range(args.latency):
                p = project(i)
                start = time.perf_counter()
                cp.deploy(p)
                arrived = await wait_reports(cp, {p.uuid}, 60)
                latencies.append((arrived[p.uuid] - start) * 1000)
                await asyncio.sleep(args.interval)
            latencies.sort()

            burst = [project(10_000 + i) for i in range(args.burst)]
            start = time.perf_counter()
            for p in burst:
                cp.deploy(p)
            published = time.perf_counter() - start
            arrived = await wait_reports(cp, {p.uuid for p in burst}, 600)
            elapsed = max(arrived.values()) - start

            stop.set()
            await task
        where = "its own process" if args.emulator_process else "the agent's process"
        print(f"operator delay {args.operator_delay * 1000:.0f} ms, API-server emulator in {where}, 2 cores in all")
        print(
            f"latency, {args.latency} APIs one at a time, {args.interval:g} s apart "
            "(event published -> SUCCESS received):"
        )
        print(
            f"  p50 {statistics.median(latencies):.0f} ms   p90 {latencies[int(0.9 * (len(latencies) - 1))]:.0f} ms"
            f"   max {latencies[-1]:.0f} ms"
        )
        print(f"burst, {args.burst} APIs published at once (publishing took {published:.2f} s):")
        print(f"  all accepted and reported in {elapsed:.1f} s = {args.burst / elapsed:.1f} APIs/s")
    finally:
        await env.shutdown()
        cp.stop()
        stop_emulator()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
