"""End-to-end benchmark: control-plane event on the broker → API accepted → SUCCESS reported.

Runs the whole local stack on this machine (Temporal dev server, ActiveMQ, the API-server
emulator acting as the gateway operator, the control-plane simulator) and the agent in
this process, and beside the agent, on the same Temporal server and in the same run, a
**baseline**: a plain workflow of five no-op activities one after another
(``bench/noop_workflow.py``: pydantic converter, sandboxed workflow, regular activities on
its own task queue). The machine is shared and noisy, so the figures that compare across
runs are the ratios of the agent to the baseline.

- latency: ``--latency`` agent APIs deployed one at a time, time from publishing
  DEPLOY_API_IN_GATEWAY to the control plane receiving SUCCESS (p50, p95, p99); interleaved
  with as many baseline workflows, start → result. Every sample follows ``--interval``
  seconds with nothing to do; ``--warmup`` samples of each kind come first, unmeasured.
- burst: ``--burst`` baseline workflows started at once (workflows/s until the last
  result), then ``--burst`` APIs published at once (APIs/s until every SUCCESS arrived; the
  control plane publishes from its own thread, as it would from its own machine), then the
  baseline burst again: the baseline figure is the mean of the two that bracket the agent's.
- ratios: agent burst / baseline burst, agent latency p50 / baseline latency p50.
- CPU seconds of each component (this process, the Temporal server, ActiveMQ, the emulator)
  and of everything else on the machine (other people's work) during each phase, CPU per
  workflow / API in the bursts, and how often the listener lost its broker connection.

The agent is used only through ``worker.build_worker(client, settings, cluster=KubeCluster(...))``,
``intake.*``, ``agent.settings.Settings`` and the harness, and observed only at the control-plane
simulator, so the same file measures the agent before and after a redesign of its workflows.

Usage::

    .venv/bin/python bench/e2e_bench.py [--latency 30] [--interval 1] [--burst 200] [--operator-delay 0]
        [--emulator-process] [--warmup 3] [--label NAME] [--compare OTHER_LABEL]

With ``--label NAME`` the run is appended to ``bench/results/e2e-NAME.json`` (delete the file to
start afresh) and the Markdown table shows every run of that label, and of ``--compare``'s.
Results are written down in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import temporalio
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from noop_activities import STEPS, NoOpInput, noop  # noqa: E402
from noop_workflow import NoOpWorkflow  # noqa: E402

from activities.cluster import KubeCluster  # noqa: E402 - the type of build_worker's cluster
from agent.settings import Settings  # noqa: E402
from harness.activemq import ActiveMQ, BrokerError  # noqa: E402
from harness.api_projects import rest_api_project  # noqa: E402
from harness.control_plane import ControlPlaneSimulator  # noqa: E402
from harness.kube_emulator import KubeEmulator  # noqa: E402
from intake.listener import BrokerListener  # noqa: E402
from intake.submit import TemporalSubmitter  # noqa: E402
from worker import build_worker  # noqa: E402

BASELINE_QUEUE = "bench-noop-baseline"
BASELINE_THREADS = 32  # the agent's worker.ACTIVITY_THREADS, not imported: the redesign may move it
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BURST_PHASES = ("baseline_burst_1", "agent_burst", "baseline_burst_2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def project(index: int):  # noqa: ANN201 - the harness's ApiProjectFiles
    return rest_api_project(uuid=str(uuid.uuid4()), name=f"Bench{index}", version="1.0.0", context=f"/bench{index}")


def percentiles(samples: list[float]) -> dict[str, Any]:
    """p50/p90/p95/p99 (linear interpolation between order statistics), max, and the samples."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "n": len(ordered),
        **{f"p{int(q * 100)}": round(at(q), 1) for q in (0.5, 0.9, 0.95, 0.99)},
        "max": round(ordered[-1], 1),
        "samples": [round(s, 1) for s in samples],
    }


# ---------------------------------------------------------------------------- the local stack


def start_broker(directory: Path) -> ActiveMQ:
    """ActiveMQ on a free port (never 61613: others' tests use it); another port if one is taken meanwhile."""
    for attempt in range(3):
        broker = ActiveMQ(directory / f"activemq-{attempt}", port=free_port())
        try:
            broker.start()
            return broker
        except BrokerError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the API-server emulator exited ({process.returncode}) before writing {path}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{path} did not appear")
        await asyncio.sleep(0.05)


class CpuMeter:
    """CPU seconds of named processes and of the whole machine, from /proc, between two readings."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    @staticmethod
    def _process_seconds(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    @staticmethod
    def _machine_busy_seconds() -> float:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return (sum(values[:8]) - idle) / CLOCK_TICKS  # guest time is already in user

    def read(self) -> dict[str, float]:
        reading = {name: self._process_seconds(pid) for name, pid in self.pids.items()}
        reading["machine"] = self._machine_busy_seconds()
        reading["wall"] = time.perf_counter()
        reading["monotonic"] = time.monotonic()  # the clock of stomp.py's heartbeat log lines
        return reading

    def between(self, first: dict[str, float], second: dict[str, float]) -> dict[str, float]:
        used = {name: second[name] - first[name] for name in self.pids}
        wall = second["wall"] - first["wall"]
        others = max(0.0, second["machine"] - first["machine"] - sum(used.values()))
        return {
            "wall_s": round(wall, 2),
            **{f"{name}_cpu_s": round(seconds, 2) for name, seconds in used.items()},
            "ours_cpu_s": round(sum(used.values()), 2),
            "others_cpu_s": round(others, 2),
            "others_cores": round(others / wall, 2) if wall > 0 else 0.0,
        }


class CountingEvent(asyncio.Event):
    """Stands in for ``BrokerListener.connected`` and counts how often it is cleared (connection lost).

    A reconnect while the agent is measured distorts its figures; the table shows how many there were.
    """

    def __init__(self) -> None:
        super().__init__()
        self.drops = 0

    def clear(self) -> None:
        if self.is_set():
            self.drops += 1
        super().clear()


def temporal_server_pid() -> int | None:
    """The dev server is a child of this process (the SDK's core starts it)."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        if ppid == me and name == "temporal":
            return int(stat.parent.name)
    return None


def build_noop_worker(client: Client) -> Worker:
    """The baseline's worker, on its own task queue, set up as the agent's (thread pool of 32)."""
    return Worker(
        client,
        task_queue=BASELINE_QUEUE,
        workflows=[NoOpWorkflow],
        activities=[noop],
        activity_executor=ThreadPoolExecutor(max_workers=BASELINE_THREADS),
        max_concurrent_activities=BASELINE_THREADS,
        graceful_shutdown_timeout=timedelta(seconds=30),
    )


# ---------------------------------------------------------------------------- measures


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


async def agent_once(cp: ControlPlaneSimulator, index: int) -> float:
    """Milliseconds from publishing one DEPLOY event to its SUCCESS report."""
    p = project(index)
    start = time.perf_counter()
    cp.deploy(p)
    arrived = await wait_reports(cp, {p.uuid}, 60)
    return (arrived[p.uuid] - start) * 1000


async def baseline_once(client: Client, name: str) -> float:
    """Milliseconds from starting one baseline workflow to having its result."""
    start = time.perf_counter()
    result = await client.execute_workflow(
        NoOpWorkflow.run, NoOpInput(run=name), id=f"bench-noop-{name}", task_queue=BASELINE_QUEUE
    )
    elapsed = (time.perf_counter() - start) * 1000
    assert result.steps_done == STEPS, result
    return elapsed


async def baseline_burst(client: Client, count: int, name: str) -> dict[str, Any]:
    """``count`` baseline workflows started at once; workflows/s until the last result."""
    start = time.perf_counter()

    async def one(i: int) -> float:
        handle = await client.start_workflow(
            NoOpWorkflow.run, NoOpInput(run=f"{name}-{i}"), id=f"bench-noop-{name}-{i}", task_queue=BASELINE_QUEUE
        )
        result = await handle.result()
        assert result.steps_done == STEPS, result
        return time.perf_counter()

    done = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), 600)
    elapsed = max(done) - start
    return {"n": count, "seconds": round(elapsed, 3), "per_s": round(count / elapsed, 2)}


async def agent_burst(cp: ControlPlaneSimulator, count: int) -> dict[str, Any]:
    """``count`` APIs published at once (from a thread, so the agent starts as events arrive)."""
    burst = [project(10_000 + i) for i in range(count)]

    def publish_all() -> float:
        for p in burst:
            cp.deploy(p)
        return time.perf_counter()

    start = time.perf_counter()
    publishing = asyncio.create_task(asyncio.to_thread(publish_all))
    arrived = await wait_reports(cp, {p.uuid for p in burst}, 600)
    published = await publishing
    elapsed = max(arrived.values()) - start
    return {
        "n": count,
        "seconds": round(elapsed, 3),
        "per_s": round(count / elapsed, 2),
        "publish_seconds": round(published - start, 3),
        "report_ms": percentiles([(t - start) * 1000 for t in sorted(arrived.values())]) | {"samples": []},
    }


# ---------------------------------------------------------------------------- results


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def load_runs(label: str) -> list[dict[str, Any]]:
    path = RESULTS / f"e2e-{label}.json"
    if not path.exists():
        return []
    return json.loads(path.read_text())["runs"]


def save_run(label: str, run: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"e2e-{label}.json"
    runs = [*load_runs(label), run]
    path.write_text(json.dumps({"label": label, "runs": runs}, indent=1) + "\n")
    return path


def table(columns: list[tuple[str, dict[str, Any]]]) -> str:
    def row(title: str, cell) -> str:  # noqa: ANN001
        return f"| {title} | " + " | ".join(cell(run) for _, run in columns) + " |"

    def ms(part: dict[str, Any], *keys: str) -> str:
        return " / ".join(f"{part[k]:.0f}" for k in keys) + " ms"

    lines = [
        "| measure | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
        row("baseline isolated latency p50 / p95", lambda r: ms(r["baseline"]["latency_ms"], "p50", "p95")),
        row(
            "baseline burst (mean of the two around the agent's)",
            lambda r: (
                f"{r['baseline']['burst']['per_s']:.1f} wf/s ("
                + " / ".join(f"{b['per_s']:.1f}" for b in r["baseline"]["burst"]["runs"])
                + ")"
            ),
        ),
        row("agent latency p50 / p95 / p99", lambda r: ms(r["agent"]["latency_ms"], "p50", "p95", "p99")),
        row("agent burst", lambda r: f"{r['agent']['burst']['per_s']:.1f} APIs/s"),
        row("**agent burst / baseline burst**", lambda r: f"**{r['ratios']['burst']:.2f}**"),
        row("**agent p50 / baseline p50**", lambda r: f"**{r['ratios']['latency_p50']:.2f}**"),
        row(
            "others' load during the bursts (cores)",
            lambda r: " / ".join(f"{r['phases'][p]['others_cores']:.2f}" for p in BURST_PHASES),
        ),
        row(
            "CPU per workflow / API, our processes (baseline / agent)",
            lambda r: (
                f"{r['baseline']['burst']['cpu_ms_per_workflow']:.0f} / {r['agent']['burst']['cpu_ms_per_api']:.0f} ms"
            ),
        ),
        row("agent CPU per API / baseline CPU per workflow", lambda r: f"{r['ratios']['cpu_per_item']:.2f}"),
        row(
            "listener reconnects during latency / agent burst",
            lambda r: f"{r['phases']['latency']['listener_drops']} / {r['phases']['agent_burst']['listener_drops']}",
        ),
        row("commit", lambda r: f"`{r['commit']}`" + (" (dirty)" if r["dirty"] else "")),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=int, default=30, help="APIs (and baseline workflows) one at a time")
    parser.add_argument("--burst", type=int, default=200, help="APIs (and baseline workflows) at once")
    parser.add_argument("--operator-delay", type=float, default=0.0, help="the emulated gateway's reaction time")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between the latency samples' events")
    parser.add_argument(
        "--emulator-process",
        action="store_true",
        help="run the API-server emulator in its own process, as a real API server would be",
    )
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured latency samples of each kind first")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of quiet before each burst")
    parser.add_argument("--label", default="", help="append the run to bench/results/e2e-LABEL.json")
    parser.add_argument("--compare", default="", help="also show the runs of bench/results/e2e-LABEL.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    broker = start_broker(work)
    kubeconfig = work / "kubeconfig"
    pids = {"bench_process": os.getpid(), "activemq": broker.running_pid() or 0}
    if args.emulator_process:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        emulator = subprocess.Popen(
            [sys.executable, "-m", "harness.kube_emulator", "--port", "0", "--gateway-operator",
             "--operator-delay", str(args.operator_delay), "--kubeconfig", str(kubeconfig)],
            stdout=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
        )  # fmt: skip
        await wait_for_file(kubeconfig, emulator)
        stop_emulator = emulator.terminate
        pids["emulator"] = emulator.pid
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
    pids["temporal_server"] = temporal_server_pid() or 0
    meter = CpuMeter({name: pid for name, pid in pids.items() if pid})
    settings = Settings(
        temporal_address=env.client.service_client.config.target_host,
        broker_url=broker.stomp_url,
        cp_url=cp.url,
        namespace="bench",
        sealing_key="",
    )
    stop = asyncio.Event()
    run_id = uuid.uuid4().hex[:8]
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = machine()["loadavg"]
    phases: dict[str, dict[str, float]] = {}
    try:
        agent_worker = build_worker(env.client, settings, cluster=KubeCluster(api_client, "bench"))
        baseline_worker = build_noop_worker(env.client)
        listener = BrokerListener(settings, TemporalSubmitter(env.client, settings))
        watch = listener.connected = CountingEvent()
        async with agent_worker, baseline_worker:
            task = asyncio.create_task(listener.run(stop))
            await asyncio.wait_for(listener.connected.wait(), 30)

            for i in range(args.warmup):
                await baseline_once(env.client, f"{run_id}-warmup-{i}")
                await agent_once(cp, 20_000 + i)
                await asyncio.sleep(args.interval)
            baseline_latencies, agent_latencies = [], []
            reading, drops = meter.read(), watch.drops
            for i in range(args.latency):
                baseline_latencies.append(await baseline_once(env.client, f"{run_id}-latency-{i}"))
                await asyncio.sleep(args.interval)
                agent_latencies.append(await agent_once(cp, i))
                await asyncio.sleep(args.interval)
            phases["latency"] = meter.between(reading, meter.read()) | {"listener_drops": watch.drops - drops}
            phases["latency"]["monotonic"] = [round(reading["monotonic"], 1), round(time.monotonic(), 1)]

            bursts: dict[str, dict[str, Any]] = {}
            for n, phase in enumerate(BURST_PHASES):
                # One unmeasured sample of the same kind first: warm again after the other's burst, and
                # a message on the listener's connection, whose heartbeat check fails after 15 quiet
                # seconds (ActiveMQ may leave 20 s between heartbeats).
                if phase == "agent_burst":
                    await agent_once(cp, 30_000 + n)
                else:
                    await baseline_once(env.client, f"{run_id}-{phase}-primer")
                await asyncio.sleep(args.settle)
                reading, drops = meter.read(), watch.drops
                if phase == "agent_burst":
                    bursts[phase] = await agent_burst(cp, args.burst)
                else:
                    bursts[phase] = await baseline_burst(env.client, args.burst, f"{run_id}-{phase}")
                phases[phase] = meter.between(reading, meter.read()) | {"listener_drops": watch.drops - drops}
                phases[phase]["monotonic"] = [round(reading["monotonic"], 1), round(time.monotonic(), 1)]
                per_item = phases[phase]["ours_cpu_s"] * 1000 / args.burst
                bursts[phase]["cpu_ms_per_api" if phase == "agent_burst" else "cpu_ms_per_workflow"] = round(per_item)

            stop.set()
            await task
    finally:
        await env.shutdown()
        cp.stop()
        stop_emulator()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    baseline_runs = [bursts["baseline_burst_1"], bursts["baseline_burst_2"]]
    baseline_per_s = statistics.mean(b["per_s"] for b in baseline_runs)
    baseline_latency = percentiles(baseline_latencies)
    agent_latency = percentiles(agent_latencies)
    run = {
        "label": args.label,
        "started_at": started_at,
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench")),
        "machine": machine() | {"loadavg_before": load_before},
        "args": vars(args),
        "setup": {
            "emulator": "own process" if args.emulator_process else "agent's process",
            "baseline": f"{STEPS} no-op activities in a row, pydantic converter, sandboxed, own task queue",
        },
        "baseline": {
            "latency_ms": baseline_latency,
            "burst": {
                "n": args.burst,
                "per_s": round(baseline_per_s, 2),
                "cpu_ms_per_workflow": round(statistics.mean(b["cpu_ms_per_workflow"] for b in baseline_runs)),
                "runs": baseline_runs,
            },
        },
        "agent": {"latency_ms": agent_latency, "burst": bursts["agent_burst"]},
        "ratios": {
            "burst": round(bursts["agent_burst"]["per_s"] / baseline_per_s, 3),
            "latency_p50": round(agent_latency["p50"] / baseline_latency["p50"], 3),
            "cpu_per_item": round(
                bursts["agent_burst"]["cpu_ms_per_api"]
                / statistics.mean(b["cpu_ms_per_workflow"] for b in baseline_runs),
                3,
            ),
        },
        "phases": phases,
    }

    where = "its own process" if args.emulator_process else "the agent's process"
    print(
        f"operator delay {args.operator_delay * 1000:.0f} ms, API-server emulator in {where}, "
        f"{os.cpu_count()} cores in all; latency: {args.latency} samples of each, {args.interval:g} s apart; "
        f"bursts of {args.burst}"
    )
    for phase, used in phases.items():
        print(f"  {phase}: " + ", ".join(f"{k} {v}" for k, v in used.items()))
    print(f"  agent burst: publishing took {bursts['agent_burst']['publish_seconds']:.2f} s")
    columns = [("this run", run)]
    if args.label:
        path = save_run(args.label, run)
        runs = load_runs(args.label)
        columns = [(f"{args.label} {i + 1}", r) for i, r in enumerate(runs)]
        print(f"written to {path.relative_to(ROOT)} (run {len(runs)})")
    if args.compare:
        columns = [(f"{args.compare} {i + 1}", r) for i, r in enumerate(load_runs(args.compare))] + columns
    print()
    print(table(columns))


if __name__ == "__main__":
    asyncio.run(main())
