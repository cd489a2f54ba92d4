"""The demo: a whole local stack and the agent, deploying a sample API end to end.

Starts the Temporal dev server (with its UI), ActiveMQ, the API-server emulator (acting as
the gateway operator) and the control-plane simulator, runs ``gateway-agent run`` against
them, and has the simulator deploy the sample API. Everything lives under ``.run/``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from agent.codec import generate_key_line
from harness.activemq import ActiveMQ
from harness.api_projects import load_project_dir
from harness.control_plane import ControlPlaneSimulator
from harness.kube_emulator import KubeEmulator
from harness.otlp_receiver import OtlpReceiver
from models.naming import api_selector, sha1_hex

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).resolve().parent / "samples" / "pizzashack"


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _wait_for_port(host: str, port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {host}:{port} after {timeout:g}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop after the sample API is deployed")
    parser.add_argument("--run-dir", type=Path, default=REPO / ".run")
    parser.add_argument("--temporal-port", type=int, default=7233)
    parser.add_argument("--ui-port", type=int, default=8233)
    parser.add_argument("--broker-port", type=int, default=61613)
    parser.add_argument("--kube-port", type=int, default=8001)
    parser.add_argument("--cp-port", type=int, default=9443)
    parser.add_argument("--metrics-port", type=int, default=9464, help="the agent's /metrics")
    parser.add_argument("--health-port", type=int, default=8080, help="the agent's /livez and /readyz")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)

    procs: list[subprocess.Popen[bytes]] = []
    stoppers = []
    try:
        print("starting Temporal dev server ...", flush=True)
        temporal_log = open(run_dir / "temporal.log", "wb")  # noqa: SIM115 - lives as long as the process
        procs.append(
            subprocess.Popen(
                [
                    _bin("temporal"),
                    "server",
                    "start-dev",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(args.temporal_port),
                    "--ui-port",
                    str(args.ui_port),
                    "--db-filename",
                    str(run_dir / "temporal.db"),
                    "--log-level",
                    "warn",
                ],
                stdout=temporal_log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait_for_port("127.0.0.1", args.temporal_port, 30)
        time.sleep(0.5)
        if procs[-1].poll() is not None:
            raise SystemExit(
                f"the Temporal dev server exited ({run_dir / 'temporal.log'}); is port {args.temporal_port} "
                "or the UI's in use? --temporal-port and --ui-port choose others"
            )

        print("starting ActiveMQ ...", flush=True)
        broker = ActiveMQ(run_dir / "activemq", port=args.broker_port)
        broker.start()
        stoppers.append(broker.stop)

        print("starting the Kubernetes API-server emulator ...", flush=True)
        kube = KubeEmulator(gateway_operator=True, operator_delay=0.2)
        kube.start(port=args.kube_port)
        stoppers.append(kube.stop)
        kubeconfig = kube.write_kubeconfig(run_dir / "kubeconfig")

        print("starting the control-plane simulator ...", flush=True)
        cp = ControlPlaneSimulator(broker_url=broker.stomp_url)
        cp.start(port=args.cp_port)
        stoppers.append(cp.stop)

        # Traces go to the collector OTEL_EXPORTER_OTLP_ENDPOINT names, else to a receiver of the
        # demo's own that shows the sample deployment's trace below.
        receiver = None
        tracing: dict[str, str] = {}
        if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            receiver = OtlpReceiver()
            tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.start(), "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
            stoppers.append(receiver.stop)
        # History is encrypted in the demo too, with a key of its own (kept beside temporal.db, whose
        # histories it decodes on the next run); the operator commands printed below read it.
        keys_file = run_dir / "codec-keys"
        if not keys_file.exists():
            keys_file.write_text(f"# the demo's codec key (gateway-agent codec-key)\n{generate_key_line('demo')}\n")
            keys_file.chmod(0o600)
        env = {
            "GATEWAY_AGENT_METRICS_PORT": str(args.metrics_port),
            "GATEWAY_AGENT_HEALTH_PORT": str(args.health_port),
            **tracing,
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "GATEWAY_AGENT_TEMPORAL_ADDRESS": f"127.0.0.1:{args.temporal_port}",
            "GATEWAY_AGENT_BROKER_URL": broker.stomp_url,
            "GATEWAY_AGENT_CP_URL": cp.url,
            "GATEWAY_AGENT_CP_USERNAME": "admin",
            "GATEWAY_AGENT_CP_PASSWORD": "admin",
            "GATEWAY_AGENT_NAMESPACE": "default",
            "GATEWAY_AGENT_CODEC_KEYS_FILE": str(keys_file),
        }
        print("starting the agent: gateway-agent run ...", flush=True)
        agent_log = open(run_dir / "agent.log", "wb")  # noqa: SIM115
        agent = subprocess.Popen([_bin("gateway-agent"), "run"], env=env, stdout=agent_log, stderr=subprocess.STDOUT)
        procs.append(agent)
        # A topic keeps events only for subscriptions that exist: wait for the listener's.
        _wait_for_log_line(run_dir / "agent.log", "subscribed to", timeout=60, agent=agent)

        project = load_project_dir(SAMPLE)
        cp.deploy(project, labels=["Default"])
        print(f"published DEPLOY_API_IN_GATEWAY for {project.name} {project.version} ({project.uuid})", flush=True)

        report = _wait_for_report(cp, project.uuid, timeout=60, agent=agent)
        print(f"control plane received: {json.dumps(report)}")
        if receiver is not None:
            _print_trace(receiver, project.uuid, timeout=15)
        _print_metrics(int(env["GATEWAY_AGENT_METRICS_PORT"]))

        # A Dev Portal user subscribes an application with a production key on a Gold tier.
        cp.add_subscription_policy("Gold", request_count=5000, time_unit="min", unit_time=1)
        app = cp.create_application("PizzaLover", owner="alice")
        key = cp.add_key(app["uuid"], key_type="PRODUCTION")
        sub = cp.subscribe(app["uuid"], project.uuid, policy="Gold")
        mapping = sha1_hex(f"{app['uuid']}:{sub['subscriptionUUID']}")
        _wait_for_objects(
            kube,
            [
                ("Application", app["uuid"]),
                ("Subscription", sub["subscriptionUUID"]),
                ("ApplicationMapping", mapping),
                ("RateLimitPolicy", sha1_hex("Gold-carbon.super")),
            ],
            timeout=60,
            agent=agent,
        )
        print(
            f"subscribed application {app['name']} ({app['uuid']}, production key {key['consumerKey']}) "
            f"to {project.name} {project.version} on tier Gold: Application, Subscription, ApplicationMapping "
            "and RateLimitPolicy are in the cluster",
            flush=True,
        )
        selector = api_selector("carbon.super", project.uuid)
        cli = f"GATEWAY_AGENT_CODEC_KEYS_FILE={keys_file} .venv/bin/gateway-agent"
        print(
            "\nWhere to look:\n"
            f"  Temporal UI:      http://127.0.0.1:{args.ui_port}/namespaces/default/workflows "
            f"(workflow id api:carbon.super:{project.uuid})\n"
            "  (history is encrypted: the UI shows binary/encrypted payloads; the commands below decode)\n"
            f"  workflow status:  {cli} status {project.uuid}\n"
            f"  the subscription: {cli} status {sub['subscriptionUUID']} --kind subscription\n"
            f"  applications:     curl -s '{kube.url}/apis/cp.wso2.com/v1alpha2/namespaces/default/applications'\n"
            f"  a full sync:      {cli} sync --dry-run\n"
            f"  gateway resources: curl -s '{kube.url}/apis/dp.wso2.com/v1alpha3/namespaces/default/apis"
            f"?labelSelector={selector}'\n"
            f"  reports to CP:    curl -s {cp.url}_sim/reports\n"
            f"  metrics:          curl -s http://127.0.0.1:{env['GATEWAY_AGENT_METRICS_PORT']}/metrics"
            " | grep ^gateway_agent_\n"
            f"  health:           curl -s http://127.0.0.1:{env['GATEWAY_AGENT_HEALTH_PORT']}/readyz\n"
            f"  agent log:        {run_dir / 'agent.log'}\n"
            f"  kubeconfig:       {kubeconfig}\n"
        )
        if report.get("deploymentStatus") != "SUCCESS":
            return 1
        if args.once:
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(timeout=60)
            print(f"the agent shut down on SIGTERM with exit code {code}")
            return 0 if code == 0 else 1
        print("running; Ctrl-C stops everything", flush=True)
        try:
            while agent.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        print(f"the agent exited with {agent.returncode}; see {run_dir / 'agent.log'}")
        return 1
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for stop in reversed(stoppers):
            stop()


def _print_trace(receiver: OtlpReceiver, api_uuid: str, timeout: float) -> None:
    """The trace of the API's deployment event, as the receiver got it: one line a span, indented
    under its parent (spans are exported in batches: wait for the HTTP calls to arrive)."""
    deadline = time.monotonic() + timeout
    spans: list = []
    while time.monotonic() < deadline:
        roots = [
            s for s in receiver.spans if s.attributes.get("gateway_agent.api.id") == api_uuid and not s.parent_span_id
        ]
        if roots:
            spans = [s for s in receiver.spans if s.trace_id == roots[0].trace_id]
            if sum(s.kind == 3 for s in spans) >= 3:  # client spans: the calls to the CP and the API server
                break
        time.sleep(0.5)
    if not spans:
        print("no trace of the deployment arrived (is tracing on? see the agent log)")
        return
    children: dict[str, list] = {}
    for span in spans:
        children.setdefault(span.parent_span_id, []).append(span)
    print(f"trace {spans[0].trace_id} of the deployment ({len(spans)} spans):")

    def show(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            print(f"  {'  ' * depth}{span.name}")
            show(span.span_id, depth + 1)

    known = {s.span_id for s in spans}
    for span in spans:
        if span.parent_span_id not in known:
            print(f"  {span.name}")
            show(span.span_id, 1)


def _print_metrics(port: int) -> None:
    """The agent's deployment and event counters, as Prometheus would scrape them."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError as exc:
        print(f"the agent's metrics on port {port} do not answer: {exc}")
        return
    wanted = (
        "gateway_agent_deployments_total",
        "gateway_agent_events_total",
        "gateway_agent_event_to_accepted_seconds_count",
    )
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    print(f"metrics (http://127.0.0.1:{port}/metrics):")
    for line in lines:
        print(f"  {line}")


def _wait_for_log_line(path: Path, text: str, timeout: float, agent: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if agent.poll() is not None:
            raise SystemExit(f"the agent exited with {agent.returncode}; see {path}")
        time.sleep(0.1)
    raise SystemExit(f"the agent did not subscribe within {timeout:g}s; see {path}")


def _wait_for_objects(
    kube: KubeEmulator, wanted: list[tuple[str, str]], timeout: float, agent: subprocess.Popen
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and agent.poll() is None:
        if all(kube.get_object(kind, "default", name) is not None for kind, name in wanted):
            return
        time.sleep(0.1)
    missing = [f"{k}/{n}" for k, n in wanted if kube.get_object(k, "default", n) is None]
    raise SystemExit(f"not in the cluster within {timeout:g}s: {', '.join(missing)}; see .run/agent.log")


def _wait_for_report(cp: ControlPlaneSimulator, api_uuid: str, timeout: float, agent: subprocess.Popen) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reports = [r for r in cp.deployment_reports if r.get("apiId") == api_uuid]
        if reports:
            return reports[-1]
        if agent.poll() is not None:
            raise SystemExit(f"the agent exited with {agent.returncode}; see .run/agent.log")
        time.sleep(0.1)
    raise SystemExit(f"no deployment report for {api_uuid} within {timeout:g}s; see .run/agent.log")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
