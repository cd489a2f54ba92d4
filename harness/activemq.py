"""A local Apache ActiveMQ (Debian's ``activemq`` package) as the agent's STOMP broker.

The Debian package ships the broker but no STOMP listener and no service we can
use here, so this module writes its own configuration into a run directory and
runs the JVM directly. Tests use :class:`ActiveMQ`; people use the CLI::

    python -m harness.activemq start|stop|status [--dir .run/activemq] [--host 127.0.0.1] [--port 61613]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

ACTIVEMQ_HOME = Path("/usr/share/activemq")
INSTALL_HINT = "apt-get update && apt-get install -y --no-install-recommends activemq"
CONF_TEMPLATES = Path(__file__).with_name("broker_conf")
DEFAULT_DIR = Path(".run/activemq")
STOP_GRACE_SECONDS = 15.0

# ActiveMQ 5.17 reflects into these JDK internals; Java 17 refuses unless they are opened.
_JVM_OPTIONS = [
    "-Xmx256m",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "--add-opens", "java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens", "java.naming/javax.naming.spi=ALL-UNNAMED",
]  # fmt: skip


class BrokerError(RuntimeError):
    """The broker cannot be installed, started, stopped or reached; the message says what to do."""


def stomp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a STOMP ``CONNECT`` on host:port is answered by ``CONNECTED``.

    An open port is not enough: ActiveMQ binds its connector before the store is loaded.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
            reply = b""
            while b"\0" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            if reply.lstrip(b"\r\n").startswith(b"CONNECTED"):
                sock.sendall(b"DISCONNECT\n\n\0")
                return True
            return False
    except OSError:
        return False


def _process_alive(pid: int) -> bool:
    """True for a live process; a zombie waiting to be reaped counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return str(Path(java_home, "bin", "java"))
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "java is not on PATH; ActiveMQ needs a Java 17 runtime: "
            "apt-get install -y --no-install-recommends default-jre-headless"
        )
    return java


class ActiveMQ:
    """One ActiveMQ broker whose configuration, data, log and pid file live in ``directory``.

    The KahaDB store stays in the directory, so persistent messages and durable
    subscriptions survive :meth:`restart` and a later :meth:`start`.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 61613) -> None:
        self.directory = Path(directory).resolve()
        self.host = host
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def stomp_url(self) -> str:
        return f"stomp://{self.host}:{self.port}"

    @property
    def conf_dir(self) -> Path:
        return self.directory / "conf"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "activemq.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "activemq.pid"

    def is_ready(self) -> bool:
        """True when the broker answers a STOMP CONNECT on its host and port."""
        return stomp_answers(self.host, self.port)

    def running_pid(self) -> int | None:
        """The pid from the pid file, if that process is alive and is this directory's broker.

        Checking the command line guards against a stale pid file whose pid was reused.
        """
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _process_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        marker = f"-Dactivemq.base={self.directory}".encode()
        return pid if marker in cmdline else None

    def start(self, timeout: float = 60.0) -> None:
        """Start the broker and wait until it answers STOMP; a running broker is left as it is."""
        pid = self.running_pid()
        if pid is not None:
            self._wait_until_ready(pid, timeout)
            return
        self.pid_file.unlink(missing_ok=True)
        if self.is_ready():
            raise BrokerError(
                f"another STOMP broker already answers on {self.host}:{self.port} and was not "
                f"started from {self.directory}; stop it or choose another --port"
            )
        if not (ACTIVEMQ_HOME / "bin" / "activemq.jar").exists():
            raise BrokerError(f"ActiveMQ is not installed ({ACTIVEMQ_HOME} is missing); install it: {INSTALL_HINT}")
        command = self._command(_find_java())
        self._write_config()
        with self.log_file.open("ab") as log:
            log.write(f"\n--- starting ActiveMQ on {self.stomp_url} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            # A session of its own keeps the broker alive after the CLI exits and out of
            # the terminal's Ctrl-C; stop() signals it by pid.
            self._process = subprocess.Popen(
                command,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        try:
            self._wait_until_ready(self._process.pid, timeout)
        except BrokerError:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the broker, SIGKILL it after 15 s, and remove the pid file. No-op if not running."""
        pid = self.running_pid()
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            if not self._wait_for_exit(pid, STOP_GRACE_SECONDS):
                os.killpg(pid, signal.SIGKILL)
                if not self._wait_for_exit(pid, 5.0):
                    raise BrokerError(f"ActiveMQ (pid {pid}) survived SIGKILL; inspect it: ps -o pid,stat,cmd -p {pid}")
        self._reap()
        self.pid_file.unlink(missing_ok=True)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log written)"

    def _failure(self, what: str) -> BrokerError:
        """An error naming the root cause first; Java's tail is mostly stack frames."""
        tail = self.log_tail()
        causes = [line.strip() for line in tail.splitlines() if "Caused by:" in line or "| ERROR |" in line]
        cause = f"\ncause: {causes[-1]}" if causes else ""
        return BrokerError(f"{what}{cause}\nlast lines of {self.log_file}:\n{tail}")

    def _command(self, java: str) -> list[str]:
        return [
            java,
            *_JVM_OPTIONS,
            f"-Dactivemq.classpath={self.conf_dir}:{ACTIVEMQ_HOME}/lib/",
            f"-Dactivemq.home={ACTIVEMQ_HOME}",
            f"-Dactivemq.base={self.directory}",
            f"-Dactivemq.conf={self.conf_dir}",
            f"-Dactivemq.data={self.data_dir}",
            "-jar",
            str(ACTIVEMQ_HOME / "bin" / "activemq.jar"),
            "start",
            f"xbean:file:{self.conf_dir / 'activemq.xml'}",
        ]

    def _write_config(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        template = string.Template((CONF_TEMPLATES / "activemq.xml").read_text())
        config = template.substitute(data_dir=self.data_dir, host=self.host, port=self.port)
        (self.conf_dir / "activemq.xml").write_text(config)
        shutil.copyfile(CONF_TEMPLATES / "log4j.properties", self.conf_dir / "log4j.properties")

    def _wait_until_ready(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if not _process_alive(pid):
                self._reap()
                raise self._failure(f"ActiveMQ (pid {pid}) exited before answering on {self.stomp_url}")
            if time.monotonic() > deadline:
                raise self._failure(f"ActiveMQ (pid {pid}) did not answer on {self.stomp_url} within {timeout:g} s")
            time.sleep(0.1)

    def _wait_for_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _process_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        self._reap()
        return True

    def _reap(self) -> None:
        """Collect our own child's exit status so it does not linger as a zombie."""
        if self._process is not None and self._process.poll() is not None:
            self._process = None


def _run_start(broker: ActiveMQ, timeout: float) -> int:
    pid = broker.running_pid()
    if pid is not None and broker.is_ready():
        print(f"ActiveMQ already running at {broker.stomp_url} (pid {pid}, dir {broker.directory})")
        return 0
    began = time.monotonic()
    broker.start(timeout)
    print(
        f"ActiveMQ ready at {broker.stomp_url} in {time.monotonic() - began:.1f} s "
        f"(pid {broker.running_pid()}, log {broker.log_file})"
    )
    return 0


def _run_stop(broker: ActiveMQ) -> int:
    pid = broker.running_pid()
    if pid is None:
        broker.pid_file.unlink(missing_ok=True)
        print(f"ActiveMQ is not running from {broker.directory}")
        return 0
    broker.stop()
    print(f"ActiveMQ stopped (pid {pid})")
    return 0


def _run_status(broker: ActiveMQ) -> int:
    pid = broker.running_pid()
    owner = f"pid {pid}" if pid is not None else f"not started from {broker.directory}"
    if broker.is_ready():
        print(f"ActiveMQ answers at {broker.stomp_url} ({owner})")
        return 0
    if pid is not None:
        print(f"ActiveMQ (pid {pid}) is running but not answering at {broker.stomp_url}; see {broker.log_file}")
    else:
        print(f"nothing answers at {broker.stomp_url}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.activemq", description="Start, stop or check the local ActiveMQ STOMP broker."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (
        ("start", "start the broker (no-op if it already runs) and wait until it answers STOMP"),
        ("stop", "stop the broker started from --dir"),
        ("status", "exit 0 if a broker answers STOMP on --host:--port"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="run directory (default: %(default)s)")
        command.add_argument("--host", default="127.0.0.1", help="STOMP listen address (default: %(default)s)")
        command.add_argument("--port", type=int, default=61613, help="STOMP port (default: %(default)s)")
        if name == "start":
            command.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default: %(default)s)")
    args = parser.parse_args(argv)
    broker = ActiveMQ(args.dir, host=args.host, port=args.port)
    try:
        if args.command == "start":
            return _run_start(broker, args.timeout)
        if args.command == "stop":
            return _run_stop(broker)
        return _run_status(broker)
    except BrokerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
