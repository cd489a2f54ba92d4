"""The agent as its own process (``python -m agent run|listen|worker``), configured by environment
variables from a test's ``Settings``, with its metrics and health ports on free ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from agent.settings import Settings
from harness.processes import settings_env
from tests.conftest import free_port
from tests.integration.conftest import REPO
from workflows.full_sync import SYNC_WORKFLOW_ID


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    metrics_port: int
    health_port: int
    log: Path

    def get(self, path: str, port: int | None = None) -> tuple[int, str]:
        url = f"http://127.0.0.1:{port or self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    async def health(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body = await asyncio.to_thread(self.get, path)
        return status, json.loads(body)

    async def metrics_text(self) -> str:
        status, body = await asyncio.to_thread(self.get, "/metrics", self.metrics_port)
        assert status == 200, body
        return body

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def until_health(self, path: str, status: int, timeout: float = 30.0) -> dict[str, Any]:
        """Poll ``path`` until it answers ``status``; its body."""
        deadline = time.monotonic() + timeout
        last: tuple[int, Any] = (0, None)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the agent exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                last = await self.health(path)
            except OSError as exc:
                last = (0, str(exc))
            if last[0] == status:
                return last[1]
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path} never answered {status}; last {last}\n{self.log_tail()}")


@asynccontextmanager
async def agent_process(
    settings: Settings,
    kubeconfig: Path,
    log: Path,
    *,
    command: str = "run",
    env: Mapping[str, str] | None = None,
    ready: bool = True,
) -> AsyncIterator[AgentProcess]:
    """Start the agent; with ``ready``, return once ``/readyz`` answers 200. SIGTERM at the end.

    A port taken between choosing it and the agent binding it (other test runs share the machine)
    means another start on other ports.
    """
    for attempt in range(3):
        agent = _start(settings, kubeconfig, log, command, env)
        try:
            if ready:
                await agent.until_health("/readyz", 200)
        except AssertionError:
            await _stop(agent.process)
            if attempt < 2 and "Address already in use" in log.read_text(errors="replace"):
                continue
            raise
        break
    try:
        yield agent
    finally:
        await _stop(agent.process)


def _start(
    settings: Settings, kubeconfig: Path, log: Path, command: str, env: Mapping[str, str] | None
) -> AgentProcess:
    metrics_port, health_port = free_port(), free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GATEWAY_AGENT_"))}
    full_env.update(settings_env(settings))
    # Test processes are development: without codec keys they may write plaintext history (the
    # worker refuses to otherwise). A test of that refusal overrides it.
    full_env.setdefault("GATEWAY_AGENT_ALLOW_PLAINTEXT_HISTORY", "true")
    full_env.update(
        {
            "KUBECONFIG": str(kubeconfig),
            "GATEWAY_AGENT_METRICS_PORT": str(metrics_port),
            "GATEWAY_AGENT_HEALTH_PORT": str(health_port),
            "GATEWAY_AGENT_SYNC_INTERVAL_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", command], cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    return AgentProcess(process, metrics_port, health_port, log)


async def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 5)


async def startup_sync_done(client: Client, task_queue: str, timeout: float = 30.0) -> None:
    """Wait until the full sync the agent started at its start (on ``task_queue``) has finished."""
    handle = client.get_workflow_handle(f"{SYNC_WORKFLOW_ID}-startup")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            described = await handle.describe()
        except RPCError:
            return
        if described.status != WorkflowExecutionStatus.RUNNING or described.task_queue != task_queue:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the startup sync did not finish")
