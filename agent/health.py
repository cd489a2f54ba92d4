"""Liveness and readiness over HTTP (GATEWAY_AGENT_HEALTH_PORT): ``/livez`` and ``/readyz``.

A small stdlib HTTP server in a thread asks the process's asyncio loop for every answer, so a
loop that stopped answering is itself a failed check.

- ``/livez``: the loop answers, and the listener's and the worker's tasks are still running.
- ``/readyz``: Temporal answers a health check; the listener holds its broker subscription; the
  worker is polling.

Both answer ``200`` with ``{"status": "ok", "checks": {name: {"ok": true}}}``, or ``503`` with
``"status": "failing"``, the names in ``"failing"`` and each failing check's ``"error"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from temporalio.client import Client

log = logging.getLogger(__name__)

# A check that does not answer within this is failing.
CHECK_TIMEOUT_SECONDS = 2.0

# A check answers None when healthy, else what is wrong.
LiveCheck = Callable[[], str | None]
ReadyCheck = Callable[[], Awaitable[str | None]]


class Health:
    """The process's checks, registered by the parts it runs (listener, worker, Temporal client)."""

    def __init__(self, expected: tuple[str, ...] = ()) -> None:
        """``expected``: readiness checks that fail as "starting" until their part registers them."""
        self._live: dict[str, LiveCheck] = {}
        self._ready: dict[str, ReadyCheck] = {name: _starting(name) for name in expected}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ThreadingHTTPServer | None = None

    def live(self, name: str, check: LiveCheck) -> None:
        self._live[name] = check

    def ready(self, name: str, check: ReadyCheck) -> None:
        self._ready[name] = check

    def task(self, name: str, task: asyncio.Task[Any]) -> None:
        """A task that must keep running while the process does (live), e.g. the listener."""

        def running() -> str | None:
            if not task.done():
                return None
            error = None if task.cancelled() else task.exception()
            return f"{name} stopped" + (f": {type(error).__name__}: {error}" if error else "")

        self.live(name, running)

    def temporal(self, client: Client) -> None:
        """Temporal's frontend answers its gRPC health check."""

        async def answers() -> str | None:
            target = client.service_client.config.target_host
            try:
                ok = await client.service_client.check_health(timeout=timedelta(seconds=CHECK_TIMEOUT_SECONDS))
            except Exception as exc:  # noqa: BLE001 - any failure is the answer
                return f"Temporal at {target} does not answer: {type(exc).__name__}: {exc}"
            return None if ok else f"Temporal at {target} reports its service as not serving"

        self.ready("temporal", answers)

    async def livez(self) -> tuple[bool, dict[str, Any]]:
        return _report({"loop": None, **{name: check() for name, check in self._live.items()}})

    async def readyz(self) -> tuple[bool, dict[str, Any]]:
        names = list(self._ready)
        results = await asyncio.gather(
            *(asyncio.wait_for(self._ready[name](), CHECK_TIMEOUT_SECONDS + 1) for name in names),
            return_exceptions=True,
        )
        problems = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                result = f"{name} check failed: {type(result).__name__}: {result}"
            problems[name] = result
        return _report(problems)

    def serve(self, port: int) -> None:
        """Answer on ``port`` (all interfaces) from a thread; call from the running loop."""
        self._loop = asyncio.get_running_loop()
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path not in ("/livez", "/readyz"):
                    self._answer(404, {"status": "not found", "paths": ["/livez", "/readyz"]})
                    return
                ok, body = health.answer(path)
                self._answer(200 if ok else 503, body)

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds; nothing worth a log line

        self._server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()
        log.info("health checks on :%d/livez and /readyz", port)

    def answer(self, path: str) -> tuple[bool, dict[str, Any]]:
        """From the server's thread: the loop's answer, or a failing ``loop`` check if it gives none."""
        assert self._loop is not None
        check = self.livez if path == "/livez" else self.readyz
        try:
            future = asyncio.run_coroutine_threadsafe(check(), self._loop)
            return future.result(timeout=CHECK_TIMEOUT_SECONDS + 2)
        except Exception as exc:  # noqa: BLE001 - a loop that is closed, blocked or gone
            return _report({"loop": f"the event loop did not answer: {type(exc).__name__}: {exc!s}"})

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _starting(name: str) -> ReadyCheck:
    async def starting() -> str | None:
        return f"{name}: starting"

    return starting


def _report(problems: dict[str, str | None]) -> tuple[bool, dict[str, Any]]:
    checks = {name: {"ok": True} if p is None else {"ok": False, "error": p} for name, p in problems.items()}
    failing = [name for name, p in problems.items() if p is not None]
    body: dict[str, Any] = {"status": "failing" if failing else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
    return not failing, body
