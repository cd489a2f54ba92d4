"""`python -m bench`: the agent under load, against its targets, in one run (issue 11).

Starts on this machine the real Temporal dev server (in memory), ActiveMQ, the API-server
emulator in its own process acting as the gateway operator (no reaction delay), and the
control-plane simulator; runs the agent as production does, ``gateway-agent worker`` and
``gateway-agent listen`` as processes of their own with codec keys (history encrypted), and
measures, in this order:

1. translation: APIs parsed + translated per second on one core (``translate_bench.py``, in a
   process pinned to one core);
2. baseline: a plain Temporal workflow of five no-op activities (``noop_workflow.py``; its
   worker in this process, its own task queue, no codec) on the same server: isolated latency
   (interleaved with 2.) and burst throughput (before 3.);
3. latency: event published -> SUCCESS reported, ``--latency`` deployments one at a time;
4. burst: ``--burst`` distinct APIs published at once: seconds until every SUCCESS report,
   APIs/s, the worker process's peak RSS (sampled every 50 ms);
5. direct floor (burst): the same APIs' resources applied by one loop with server-side apply
   through the kubernetes client into an empty namespace, until the gateway accepted every API;
6. catch-up: a second worker (a fresh namespace, a second control plane with ``--apis`` APIs,
   ``--apps`` applications with a key each and ``--subs`` subscriptions, all without events)
   runs FullSync; seconds until every API is reported SUCCESS and every consumer object exists;
7. direct floor (catch-up): the same resources applied by the minimal loop into another empty
   namespace.

It writes ``bench/results/latest.{json,md,png}`` (and, with ``--label L``, ``bench-L.*`` too):
each figure, its ratio, the target and PASS/MISS; the PNG shows the latency distributions and
the burst's completion curve. Defaults are the issue's sizes; ``--quick`` runs small ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path[:0] = [str(BENCH), str(ROOT)]

import httpx  # noqa: E402
import psutil  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from e2e_bench import (  # noqa: E402
    CpuMeter,
    baseline_burst,
    baseline_once,
    build_noop_worker,
    git,
    machine,
    percentiles,
    start_broker,
    temporal_server_pid,
    wait_for_file,
    wait_reports,
)
from kubernetes import client as k8s_client  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from temporalio.client import Client, WorkflowExecutionStatus  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.service import RPCError  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from activities.cluster import KubeCluster  # noqa: E402
from activities.control_plane import ControlPlaneActivities, ControlPlaneClient  # noqa: E402
from activities.sealing import Sealer  # noqa: E402
from agent.codec import generate_key_line  # noqa: E402
from agent.settings import Settings  # noqa: E402
from agent.temporal import connect  # noqa: E402
from harness.api_projects import Deployment, apis_zip, gateway_environment, rest_api_project  # noqa: E402
from harness.control_plane import ControlPlaneSimulator  # noqa: E402
from harness.processes import AgentCommand  # noqa: E402
from models.consumers import ConsumerState, CpApplication, CpKeyMapping, CpSubscription, CpSubscriptionPolicy  # noqa: E402
from models.resources import CONSUMER_KINDS, known_kind, sort_for_apply  # noqa: E402
from translation.artifacts import parse_runtime_artifacts  # noqa: E402
from translation.consumers import ConsumerOptions, desired_consumer_resources  # noqa: E402
from translation.translate import translate  # noqa: E402
from worker import sync_input  # noqa: E402
from workflows.full_sync import SYNC_WORKFLOW_ID, FullSync  # noqa: E402

ORG = "carbon.super"
TIERS = ("Gold", "Silver", "Bronze", "Unlimited")
MiB = 1024 * 1024
QUICK = {"latency": 20, "burst": 50, "apis": 50, "apps": 100, "subs": 200, "translate_iterations": 200}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def project(prefix: str, index: int):  # noqa: ANN201 - the harness's ApiProjectFiles
    return rest_api_project(
        uuid=str(uuid.uuid4()), name=f"{prefix}{index}", version="1.0.0", context=f"/{prefix.lower()}{index}"
    )


# ---------------------------------------------------------------------------- observing


class RssSampler:
    """Peak and series of one process's resident set size, every ``period`` seconds, in a thread."""

    def __init__(self, pid: int, period: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.period = period
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples.append((time.perf_counter() - start, rss))
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def consumer_state(cp: ControlPlaneSimulator) -> ConsumerState:
    """The consumers as the control plane's lists serve them (read over HTTP, as the agent reads)."""

    def items(endpoint: str) -> list[dict[str, Any]]:
        response = httpx.get(
            cp.url + "internal/data/v1/" + endpoint,
            auth=(cp.username, cp.password),
            headers={"x-wso2-tenant": ORG, "xWSO2Tenant": ORG},
            timeout=120,
        )
        response.raise_for_status()
        return response.json()["list"]

    return ConsumerState(
        organization=ORG,
        applications=[CpApplication.model_validate(i) for i in items("applications")],
        key_mappings=[CpKeyMapping.model_validate(i) for i in items("application-key-mappings")],
        subscriptions=[CpSubscription.model_validate(i) for i in items("subscriptions")],
        subscription_policies=[CpSubscriptionPolicy.model_validate(i) for i in items("subscription-policies")],
    )


def count_objects(cluster: KubeCluster, kinds: tuple[Any, ...]) -> dict[str, int]:
    return {spec.kind: len(cluster.list_selected("", kinds=[spec])) for spec in kinds}


def accepted_apis(cluster: KubeCluster) -> int:
    return sum(
        1
        for api in cluster.list_selected("", kinds=[known_kind("API")])
        if ((api.get("status") or {}).get("deploymentStatus") or {}).get("accepted")
    )


# ---------------------------------------------------------------------------- the direct floor


def api_resources(settings: Settings, projects: list[Any]) -> list[dict[str, Any]]:
    """What the agent's deploy step writes for ``projects``: the control plane's zip, parsed and
    translated with the worker's options, but into ``settings.namespace``."""
    options = ControlPlaneActivities(
        ControlPlaneClient(settings), settings, Sealer(settings.sealing_key.get_secret_value(), seal_new=False)
    ).options
    resources: list[dict[str, Any]] = []
    for p in projects:
        archive = apis_zip([Deployment(p, [gateway_environment("Default", deployed_at_ms=1)])])
        resources.extend(sort_for_apply(translate(parse_runtime_artifacts(archive).apis[0], options).resources))
    return resources


def consumer_resources(settings: Settings, cp: ControlPlaneSimulator, projects: list[Any]) -> list[dict[str, Any]]:
    options = ConsumerOptions(
        application_namespace=settings.effective_application_namespace,
        tier_namespace=settings.namespace,
        gateway_id=settings.effective_gateway_id,
    )
    apis = {p.uuid: (p.name, p.version) for p in projects}
    translation = desired_consumer_resources(consumer_state(cp), apis, options)
    if translation.problems:
        raise RuntimeError(f"consumer translation problems: {translation.problems[:5]}")
    return list(translation.resources)


def direct_floor(cluster: KubeCluster, resources: list[dict[str, Any]], apis: int) -> dict[str, Any]:
    """One loop, one connection: server-side apply of every resource in order, then poll (every
    50 ms) until the gateway operator accepted all ``apis`` APIs."""
    start = time.perf_counter()
    for resource in resources:
        cluster.apply(resource)
    applied = time.perf_counter()
    while accepted_apis(cluster) < apis:
        if time.perf_counter() - applied > 300:
            raise TimeoutError("the direct floor's APIs were not accepted within 300 s")
        time.sleep(0.05)
    done = time.perf_counter()
    return {
        "objects": len(resources),
        "apis": apis,
        "apply_seconds": round(applied - start, 3),
        "seconds": round(done - start, 3),
        "objects_per_s": round(len(resources) / (applied - start), 1),
    }


# ---------------------------------------------------------------------------- the agent


class Stack:
    """The local stack and the agent's processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-"))
        self.codec_keys = generate_key_line("bench")
        self.sealing_key = Fernet.generate_key().decode()
        self.processes: list[AgentCommand] = []
        self.emulator: subprocess.Popen[bytes] | None = None
        self.broker = None
        self.cps: list[ControlPlaneSimulator] = []
        self.env: WorkflowEnvironment | None = None

    async def start(self) -> None:
        self.broker = start_broker(self.work)
        self.kubeconfig = self.work / "kubeconfig"
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.emulator = subprocess.Popen(
            [sys.executable, "-m", "harness.kube_emulator", "--port", "0", "--gateway-operator",
             "--operator-delay", "0", "--kubeconfig", str(self.kubeconfig)],
            stdout=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
        )  # fmt: skip
        await wait_for_file(self.kubeconfig, self.emulator)
        k8s_config.load_kube_config(config_file=str(self.kubeconfig))
        self.api_client = k8s_client.ApiClient()
        core = k8s_client.CoreV1Api(self.api_client)
        for ns in ("bench", "catchup", "floor-burst", "floor-catchup"):
            core.create_namespace({"metadata": {"name": ns}})
        self.cp = ControlPlaneSimulator(broker_url=self.broker.stomp_url)
        self.cp.start()
        self.cp_catchup = ControlPlaneSimulator(broker_url=None)  # the catch-up's truth: no events at all
        self.cp_catchup.start()
        self.cps = [self.cp, self.cp_catchup]
        self.env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(Path(sys.executable).with_name("temporal")),
            data_converter=pydantic_data_converter,
            dev_server_extra_args=["--log-level", "error"],
        )
        self.address = self.env.client.service_client.config.target_host

    def settings(self, namespace: str, cp: ControlPlaneSimulator, task_queue: str) -> Settings:
        return Settings(
            temporal_address=self.address,
            broker_url=self.broker.stomp_url,
            cp_url=cp.url,
            namespace=namespace,
            task_queue=task_queue,
            codec_keys=self.codec_keys,
            sealing_key=self.sealing_key,
            sync_interval_seconds=0,
        )

    def agent(self, command: str, namespace: str, cp: ControlPlaneSimulator, task_queue: str) -> AgentCommand:
        env = {
            "GATEWAY_AGENT_TEMPORAL_ADDRESS": self.address,
            "GATEWAY_AGENT_BROKER_URL": self.broker.stomp_url,
            "GATEWAY_AGENT_CP_URL": cp.url,
            "GATEWAY_AGENT_NAMESPACE": namespace,
            "GATEWAY_AGENT_TASK_QUEUE": task_queue,
            # As production runs: history encrypted, plaintext refused.
            "GATEWAY_AGENT_CODEC_KEYS": self.codec_keys,
            "GATEWAY_AGENT_ALLOW_PLAINTEXT_HISTORY": "false",
            "GATEWAY_AGENT_SEALING_KEY": self.sealing_key,
            "GATEWAY_AGENT_SYNC_INTERVAL_SECONDS": "0",
            "KUBECONFIG": str(self.kubeconfig),
            **self.args.agent_env,
        }
        process = AgentCommand(command, self.work / f"{command}-{len(self.processes)}.log", env)
        self.processes.append(process)
        return process

    async def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if self.env is not None:
            await self.env.shutdown()
        for cp in self.cps:
            cp.stop()
        if self.emulator is not None:
            self.emulator.terminate()
            self.emulator.wait(15)
        if self.broker is not None:
            self.broker.stop()
        if self.args.keep_logs:
            log(f"logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


async def sync_done(client: Client, workflow_id: str, timeout: float = 120) -> None:
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                return
        except RPCError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{workflow_id} still runs after {timeout:g}s")


async def agent_once(cp: ControlPlaneSimulator, index: int) -> float:
    p = project("Lat", index)
    start = time.perf_counter()
    cp.deploy(p)
    arrived = await wait_reports(cp, {p.uuid}, 120)
    return (arrived[p.uuid] - start) * 1000


class Profiler:
    """``py-spy record`` of processes while the block runs (``--profile``): their stacks, folded
    (``<out>/profile-<phase>-<process>.txt``, for flamegraph.pl or speedscope), and a summary of
    where each process's CPU went (``.md``: the functions with the most samples, inclusive and
    self). Nothing when py-spy is missing."""

    def __init__(self, out: Path | None, phase: str, pids: dict[str, int]) -> None:
        self.out, self.phase, self.pids = out, phase, {k: v for k, v in pids.items() if v}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.targets: list[Path] = []

    def __enter__(self) -> Profiler:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if self.out is None or not Path(spy).exists():
            return self
        self.out.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            target = self.out / f"profile-{self.phase}-{name}.txt"
            command = [spy, "record", "--pid", str(pid), "--output", str(target), "--rate", "50", "--nonblocking",
                       "--format", "raw", "--gil"]  # fmt: skip: --gil: CPU in Python, not threads waiting
            self.targets.append(target)
            self.processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def __exit__(self, *_: object) -> None:
        for process in self.processes:
            process.send_signal(2)  # SIGINT: py-spy writes what it recorded
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for target in self.targets:
            if target.exists():
                target.with_suffix(".md").write_text(profile_summary(target.read_text(), target.stem))


def profile_summary(folded: str, title: str, top: int = 40) -> str:
    """The functions with the most samples in py-spy's folded stacks (``frame;frame;... count``),
    inclusive (on the stack) and self (on top), as shares of all samples."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        for frame in dict.fromkeys(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
    lines = [f"# {title}: {total} samples", ""]
    for name, table in (("inclusive", inclusive), ("self", own)):
        lines += [f"## {name}", "", "| share | samples | function |", "|---:|---:|---|"]
        for frame, count in sorted(table.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"| {count / max(total, 1):.1%} | {count} | `{frame}` |")
        lines.append("")
    return "\n".join(lines)


async def agent_burst(cp: ControlPlaneSimulator, projects: list[Any], worker_pid: int) -> dict[str, Any]:
    """Every project published at once (from a thread, as the control plane's own machine would)."""

    def publish_all() -> float:
        for p in projects:
            cp.deploy(p)
        return time.perf_counter()

    with RssSampler(worker_pid) as rss:
        start = time.perf_counter()
        publishing = asyncio.create_task(asyncio.to_thread(publish_all))
        arrived = await wait_reports(cp, {p.uuid for p in projects}, 900)
        published = await publishing
    elapsed = max(arrived.values()) - start
    return {
        "n": len(projects),
        "seconds": round(elapsed, 3),
        "per_s": round(len(projects) / elapsed, 2),
        "publish_seconds": round(published - start, 3),
        "worker_peak_rss_mib": round(rss.peak / MiB, 1),
        "worker_rss_mib": [[round(t, 2), round(r / MiB, 1)] for t, r in rss.samples[::10]],
        "completions_s": [round(t - start, 3) for t in sorted(arrived.values())],
    }


def populate_catchup(cp: ControlPlaneSimulator, apis: int, apps: int, subs: int) -> list[Any]:
    """``apis`` deployed APIs, ``apps`` applications with a PRODUCTION key each, ``subs``
    subscriptions over four tiers, all without events (publish=False)."""
    cp.add_subscription_policy("Gold", request_count=1000, time_unit="min", publish=False)
    cp.add_subscription_policy("Silver", request_count=100, time_unit="min", publish=False)
    cp.add_subscription_policy("Bronze", request_count=5000, time_unit="day", publish=False)
    projects = [project("Sync", i) for i in range(apis)]
    for p in projects:
        cp.deploy(p, publish=False)
    app_ids = []
    for i in range(apps):
        app = cp.create_application(f"App {i}", owner=f"owner{i % 7}", publish=False)
        cp.add_key(app["uuid"], key_type="PRODUCTION", publish=False)
        app_ids.append(app["uuid"])
    if subs > apps * apis:
        raise ValueError("more subscriptions than application x API pairs")
    for n in range(subs):
        app_index, round_ = n % apps, n // apps
        api = projects[(app_index + round_ * 17) % apis]
        cp.subscribe(app_ids[app_index], api.uuid, policy=TIERS[n % len(TIERS)], publish=False)
    return projects


async def catch_up(
    stack: Stack, client: Client, settings: Settings, projects: list[Any], expected: dict[str, int], worker_pid: int
) -> dict[str, Any]:
    """FullSync into the empty namespace; seconds until every API is reported SUCCESS and every
    consumer object the control plane calls for exists (checked by listing them)."""
    cp = stack.cp_catchup
    cluster = KubeCluster(stack.api_client, settings.namespace)
    with RssSampler(worker_pid) as rss:
        start = time.perf_counter()
        handle = await client.start_workflow(
            FullSync.run,
            sync_input(settings, "bench"),
            id=f"bench-catchup-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
        )
        result = await handle.result()
        synced = time.perf_counter()
        arrived = await wait_reports(cp, {p.uuid for p in projects}, 900)
        reported = max(arrived.values())
        counts = count_objects(cluster, CONSUMER_KINDS)
        accepted = accepted_apis(cluster)
        checked = time.perf_counter()
    missing = {k: n - counts.get(k, 0) for k, n in expected.items() if counts.get(k, 0) < n}
    if missing or accepted < len(projects):
        raise RuntimeError(f"catch-up did not converge: missing {missing}, {accepted}/{len(projects)} APIs accepted")
    return {
        "apis": len(projects),
        "consumer_objects": counts,
        "seconds": round(max(synced, reported) - start, 3),
        "sync_workflow_seconds": round(synced - start, 3),
        "sync_created": len(result.created),
        "apis_handed_over": len(result.apis),
        "check_seconds": round(checked - reported, 3),
        "worker_peak_rss_mib": round(rss.peak / MiB, 1),
        "completions_s": [round(t - start, 3) for t in sorted(arrived.values())],
    }


def translation(iterations: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH / "translate_bench.py"), "--iterations", str(iterations), "--json"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------- results


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: the figure, the ratio it is judged by, the target, PASS/MISS."""
    base, agent = r["baseline"], r["agent"]
    rows = []

    def row(name: str, figure: str, ratio: float, target: str, ok: bool) -> None:
        rows.append({"target": name, "figure": figure, "ratio": round(ratio, 3), "wanted": target, "pass": ok})

    burst_ratio = agent["burst"]["per_s"] / base["burst"]["per_s"]
    row(
        "burst throughput vs the baseline's burst",
        f"{agent['burst']['per_s']:.1f} APIs/s vs {base['burst']['per_s']:.1f} wf/s",
        burst_ratio, "≥ 1.5×", burst_ratio >= 1.5,
    )  # fmt: skip
    latency_ratio = agent["latency_ms"]["p50"] / base["latency_ms"]["p50"]
    row(
        "latency p50 vs the baseline's isolated p50",
        f"{agent['latency_ms']['p50']:.0f} ms vs {base['latency_ms']['p50']:.0f} ms",
        latency_ratio, "≤ 1.0×", latency_ratio <= 1.0,
    )  # fmt: skip
    catchup_ratio = agent["catchup"]["seconds"] / r["floor"]["catchup"]["seconds"]
    row(
        "catch-up time vs the direct floor (same objects)",
        f"{agent['catchup']['seconds']:.1f} s vs {r['floor']['catchup']['seconds']:.1f} s",
        catchup_ratio, "≤ 3×", catchup_ratio <= 3.0,
    )  # fmt: skip
    floor_ratio = agent["burst"]["seconds"] / r["floor"]["burst"]["seconds"]
    row(
        "burst time vs the direct floor (same APIs)",
        f"{agent['burst']['seconds']:.1f} s vs {r['floor']['burst']['seconds']:.1f} s",
        floor_ratio, "≤ 3×", floor_ratio <= 3.0,
    )  # fmt: skip
    rss = agent["burst"]["worker_peak_rss_mib"]
    row("worker peak RSS during the burst", f"{rss:.0f} MiB", rss / 300, "≤ 300 MiB", rss <= 300)
    rate = r["translation"]["rest"]["parse_translate_per_cpu_s"]
    row(
        "translation, REST API (20 operations), parse + translate, per CPU second of one core",
        f"{rate:.0f} APIs/s", rate / 1000, "≥ 1,000 APIs/s", rate >= 1000,
    )  # fmt: skip
    return rows


def markdown(r: dict[str, Any]) -> str:
    m, a, b, f = r["machine"], r["agent"], r["baseline"], r["floor"]
    lines = [
        f"# `python -m bench` — {r['started_at']}, commit `{r['commit']}`" + (" (dirty)" if r["dirty"] else ""),
        "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}, temporalio {m['temporalio']}; "
        f"load average before {' '.join(m['loadavg_before'])}. Codec ON (AES-GCM, as production); "
        "worker and listener as their own processes; emulator in its own process, operator delay 0.",
        f"Sizes: latency {r['sizes']['latency']} sequential, burst {r['sizes']['burst']}, catch-up "
        f"{r['sizes']['apis']} APIs / {r['sizes']['apps']} applications / {r['sizes']['subs']} subscriptions; "
        f"wall time {r['wall_seconds']:.0f} s.",
        "",
        "| target | figure | ratio | wanted | result |",
        "|---|---:|---:|---:|:---:|",
    ]
    for v in r["verdicts"]:
        lines.append(
            f"| {v['target']} | {v['figure']} | {v['ratio']:.2f} | {v['wanted']} | {'PASS' if v['pass'] else 'MISS'} |"
        )
    lines += [
        "",
        "| measure | value |",
        "|---|---:|",
        f"| baseline isolated latency p50 / p95 / p99 | {b['latency_ms']['p50']:.0f} / {b['latency_ms']['p95']:.0f} / "
        f"{b['latency_ms']['p99']:.0f} ms |",
        f"| baseline burst ({b['burst']['n']} workflows) | {b['burst']['seconds']:.1f} s, "
        f"{b['burst']['per_s']:.1f} wf/s |",
        f"| agent latency p50 / p95 / p99 | {a['latency_ms']['p50']:.0f} / {a['latency_ms']['p95']:.0f} / "
        f"{a['latency_ms']['p99']:.0f} ms |",
        f"| agent burst ({a['burst']['n']} APIs) | {a['burst']['seconds']:.1f} s, {a['burst']['per_s']:.1f} APIs/s "
        f"(published in {a['burst']['publish_seconds']:.1f} s) |",
        f"| worker peak RSS, burst / catch-up | {a['burst']['worker_peak_rss_mib']:.0f} / "
        f"{a['catchup']['worker_peak_rss_mib']:.0f} MiB |",
        f"| catch-up: sync workflow / all converged | {a['catchup']['sync_workflow_seconds']:.1f} / "
        f"{a['catchup']['seconds']:.1f} s |",
        f"| direct floor, burst ({f['burst']['objects']} objects) | apply {f['burst']['apply_seconds']:.1f} s, "
        f"accepted {f['burst']['seconds']:.1f} s |",
        f"| direct floor, catch-up ({f['catchup']['objects']} objects) | apply {f['catchup']['apply_seconds']:.1f} s, "
        f"accepted {f['catchup']['seconds']:.1f} s |",
        *(
            f"| translation {name}, parse+translate / translate alone, per wall s (per CPU s) | "
            f"{t['parse_translate_per_s']:.0f} ({t['parse_translate_per_cpu_s']:.0f}) / "
            f"{t['translate_per_s']:.0f} ({t['translate_per_cpu_s']:.0f}) APIs/s |"
            for name, t in (("REST", r["translation"]["rest"]), ("GraphQL", r["translation"]["graphql"]))
        ),
    ]
    lines += ["", "CPU seconds by process, per phase (others: the rest of the machine):", ""]
    names = sorted({k for p in r["phases"].values() for k in p if k.endswith("_cpu_s")})
    lines.append("| phase | wall s | " + " | ".join(n.removesuffix("_cpu_s") for n in names) + " |")
    lines.append("|---|---:|" + "---:|" * len(names))
    for phase, used in r["phases"].items():
        lines.append(f"| {phase} | {used['wall_s']} | " + " | ".join(str(used.get(n, "")) for n in names) + " |")
    return "\n".join(lines) + "\n"


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, samples in (("agent: event → SUCCESS", r["agent"]["latency_ms"]["samples"]),
                          ("baseline: 5 no-op activities", r["baseline"]["latency_ms"]["samples"])):  # fmt: skip
        ordered = sorted(samples)
        left.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=f"{name} (n={len(ordered)})")
    for q in ("p50", "p95", "p99"):
        left.axvline(r["agent"]["latency_ms"][q], color="tab:blue", alpha=0.25, linestyle=":")
    left.set_xlabel("latency (ms)")
    left.set_ylabel("fraction of deployments")
    left.set_title("latency, one deployment at a time (CDF)")
    left.grid(alpha=0.3)
    left.legend()
    for name, done in (("agent burst", r["agent"]["burst"]["completions_s"]),
                       ("agent catch-up (APIs)", r["agent"]["catchup"]["completions_s"])):  # fmt: skip
        right.plot(done, range(1, len(done) + 1), label=name)
    right.axvline(r["floor"]["burst"]["seconds"], color="tab:blue", linestyle="--", label="direct floor, burst")
    right.axvline(r["floor"]["catchup"]["seconds"], color="tab:orange", linestyle="--", label="direct floor, catch-up")
    right.set_xlabel("seconds since start")
    right.set_ylabel("APIs reported SUCCESS")
    right.set_title("burst and catch-up")
    right.grid(alpha=0.3)
    right.legend()
    fig.suptitle(f"python -m bench, {r['started_at']}, commit {r['commit']}, {r['machine']['nproc']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(r: dict[str, Any], label: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem in ["latest", *([f"bench-{label}"] if label else [])]:
        (out / f"{stem}.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
        (out / f"{stem}.md").write_text(markdown(r))
        chart(r, out / f"{stem}.png")
        written += [out / f"{stem}.{ext}" for ext in ("json", "md", "png")]
    return written


# ---------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wall = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = machine()["loadavg"]
    log("translation (one core)")
    translated = translation(args.translate_iterations)
    stack = Stack(args)
    phases: dict[str, dict[str, float]] = {}
    try:
        await stack.start()
        assert stack.env is not None and stack.emulator is not None and stack.broker is not None
        base_client = stack.env.client
        settings = stack.settings("bench", stack.cp, "gateway-agent")
        agent_client = await connect(settings)
        worker = stack.agent("worker", "bench", stack.cp, "gateway-agent")
        listener = stack.agent("listen", "bench", stack.cp, "gateway-agent")
        await asyncio.to_thread(worker.start_and_wait, 90)
        await asyncio.to_thread(listener.start_and_wait, 90)
        await sync_done(agent_client, f"{SYNC_WORKFLOW_ID}-startup")
        pids = {
            "bench": os.getpid(),
            "temporal": temporal_server_pid() or 0,
            "activemq": stack.broker.running_pid() or 0,
            "emulator": stack.emulator.pid,
            "worker": worker.pid or 0,
            "listener": listener.pid or 0,
        }
        meter = CpuMeter({k: v for k, v in pids.items() if v})
        run_id = uuid.uuid4().hex[:8]

        async with build_noop_worker(base_client):
            log("warm-up")
            for i in range(args.warmup):
                await baseline_once(base_client, f"{run_id}-warmup-{i}")
                await agent_once(stack.cp, 90_000 + i)
            log(f"latency: {args.latency} of each, {args.interval:g} s apart")
            base_lat, agent_lat = [], []
            reading = meter.read()
            for i in range(args.latency):
                await asyncio.sleep(args.interval)
                base_lat.append(await baseline_once(base_client, f"{run_id}-latency-{i}"))
                await asyncio.sleep(args.interval)
                agent_lat.append(await agent_once(stack.cp, i))
            phases["latency"] = meter.between(reading, meter.read())

            log(f"baseline burst of {args.burst}")
            await asyncio.sleep(args.settle)
            reading = meter.read()
            base_burst = await baseline_burst(base_client, args.burst, f"{run_id}-burst")
            phases["baseline_burst"] = meter.between(reading, meter.read())

        log(f"agent burst of {args.burst}")
        burst_projects = [project("Burst", i) for i in range(args.burst)]
        await agent_once(stack.cp, 99_999)  # a message on the listener's connection right before
        await asyncio.sleep(args.settle)
        reading = meter.read()
        with Profiler(args.profile, "burst", {"worker": worker.pid or 0, "emulator": stack.emulator.pid}):
            burst = await agent_burst(stack.cp, burst_projects, worker.pid or 0)
        phases["agent_burst"] = meter.between(reading, meter.read())

        log("direct floor, burst")
        floor_settings = stack.settings("floor-burst", stack.cp, "unused")
        resources = api_resources(floor_settings, burst_projects)
        reading = meter.read()
        floor_burst = await asyncio.to_thread(
            direct_floor, KubeCluster(stack.api_client, "floor-burst"), resources, len(burst_projects)
        )
        phases["floor_burst"] = meter.between(reading, meter.read())

        log("catch-up: second worker, populating the control plane")
        listener.stop()
        worker.stop()
        catchup_settings = stack.settings("catchup", stack.cp_catchup, "gateway-agent-catchup")
        worker2 = stack.agent("worker", "catchup", stack.cp_catchup, "gateway-agent-catchup")
        await asyncio.to_thread(worker2.start_and_wait, 90)
        await sync_done(agent_client, f"{SYNC_WORKFLOW_ID}-startup")
        projects = await asyncio.to_thread(populate_catchup, stack.cp_catchup, args.apis, args.apps, args.subs)
        floor_catchup_settings = stack.settings("floor-catchup", stack.cp_catchup, "unused")
        consumers_floor = consumer_resources(floor_catchup_settings, stack.cp_catchup, projects)
        expected: dict[str, int] = {}
        for resource in consumers_floor:
            expected[resource["kind"]] = expected.get(resource["kind"], 0) + 1
        meter = CpuMeter({**{k: v for k, v in pids.items() if v and k not in ("worker", "listener")},
                          "worker": worker2.pid or 0})  # fmt: skip
        log(f"catch-up: FullSync of {args.apis} APIs, {args.apps} applications, {args.subs} subscriptions")
        await asyncio.sleep(args.settle)
        reading = meter.read()
        with Profiler(args.profile, "catchup", {"worker": worker2.pid or 0}):
            catchup = await catch_up(stack, agent_client, catchup_settings, projects, expected, worker2.pid or 0)
        phases["catchup"] = meter.between(reading, meter.read())
        worker2.stop()

        log("direct floor, catch-up")
        resources = api_resources(floor_catchup_settings, projects) + consumers_floor
        reading = meter.read()
        floor_catchup = await asyncio.to_thread(
            direct_floor, KubeCluster(stack.api_client, "floor-catchup"), resources, len(projects)
        )
        phases["floor_catchup"] = meter.between(reading, meter.read())
        counts = count_objects(KubeCluster(stack.api_client, "floor-catchup"), CONSUMER_KINDS)
        assert all(counts.get(k, 0) >= n for k, n in expected.items()), (counts, expected)
        floor_catchup["consumer_objects"] = counts
    finally:
        await stack.stop()

    result: dict[str, Any] = {
        "started_at": started_at,
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench")),
        "machine": machine() | {"loadavg_before": load_before},
        "sizes": {k: getattr(args, k) for k in ("latency", "burst", "apis", "apps", "subs")},
        "args": {k: v for k, v in vars(args).items() if k != "agent_env"} | {"agent_env": args.agent_env},
        "codec": "on: every payload of the agent's workflows AES-256-GCM encrypted (GATEWAY_AGENT_CODEC_KEYS)",
        "translation": translated,
        "baseline": {"latency_ms": percentiles(base_lat), "burst": base_burst},
        "agent": {"latency_ms": percentiles(agent_lat), "burst": burst, "catchup": catchup},
        "floor": {"burst": floor_burst, "catchup": floor_catchup},
        "phases": phases,
    }
    result["verdicts"] = verdicts(result)
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=int, default=200, help="sequential deployments (and baseline runs)")
    parser.add_argument("--burst", type=int, default=1000, help="APIs (and baseline workflows) at once")
    parser.add_argument("--apis", type=int, default=1000, help="APIs in the catch-up")
    parser.add_argument("--apps", type=int, default=5000, help="applications in the catch-up")
    parser.add_argument("--subs", type=int, default=10000, help="subscriptions in the catch-up")
    parser.add_argument("--translate-iterations", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.2, help="idle seconds before each latency sample")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before each burst")
    parser.add_argument("--quick", action="store_true", help="small sizes: " + str(QUICK))
    parser.add_argument("--label", default="", help="also write bench/results/bench-LABEL.*")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write (default bench/results)")
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR",
        help="record py-spy (folded stacks and a summary of the top functions) of the worker in the burst"
        " and the catch-up, and of the emulator in the burst, into DIR",
    )  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (printed at the end)")
    parser.add_argument(
        "--agent-env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for the agent"
    )
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if parser.get_default(key) == getattr(args, key):
                setattr(args, key, value)
    args.agent_env = dict(item.split("=", 1) for item in args.agent_env)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    for path in write(result, args.label, args.out):
        log(f"wrote {path}")
    print(markdown(result))
    return 1 if args.strict and not all(v["pass"] for v in result["verdicts"]) else 0


if __name__ == "__main__":
    sys.exit(main())
