"""The README's first command: the demo deploys the sample API end to end and stops cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_deploys_the_sample_api_and_shuts_down_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("temporal", "ui", "broker", "kube", "cp", "metrics", "health")}
    cmd = [
        sys.executable, "-m", "harness.demo", "--once", "--run-dir", str(tmp_path),
        "--temporal-port", str(ports["temporal"]), "--ui-port", str(ports["ui"]),
        "--broker-port", str(ports["broker"]), "--kube-port", str(ports["kube"]), "--cp-port", str(ports["cp"]),
        "--metrics-port", str(ports["metrics"]), "--health-port", str(ports["health"]),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    log = (tmp_path / "agent.log").read_text() if (tmp_path / "agent.log").exists() else ""
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{log}"
    assert '"deploymentStatus": "SUCCESS"' in done.stdout
    assert "subscribed application PizzaLover" in done.stdout and "are in the cluster" in done.stdout
    assert "shut down on SIGTERM with exit code 0" in done.stdout
    assert f"http://127.0.0.1:{ports['ui']}" in done.stdout
    # The deployment's trace, from the listener's receive to the HTTP calls, and the metrics.
    trace = done.stdout.split("trace ", 1)[1].split("metrics (", 1)[0]
    assert "receive event" in trace and "RunActivity:" in trace and ("PATCH" in trace or "GET" in trace), trace
    deployed = [line for line in done.stdout.splitlines() if "gateway_agent_deployments_total{" in line]
    assert any('outcome="succeeded"' in line and float(line.rsplit(" ", 1)[1]) >= 1 for line in deployed), deployed
