"""`python -m harness.kube_emulator`: run the emulator in the foreground until SIGTERM/SIGINT (for the demo)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from .server import KubeEmulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.kube_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--gateway-operator", action="store_true", help="write API deployment status like APK")
    parser.add_argument("--operator-delay", type=float, default=0.05)
    parser.add_argument("--crd-dir", type=Path, default=None)
    parser.add_argument("--kubeconfig", type=Path, default=None, help="write a kubeconfig pointing here")
    parser.add_argument("--namespace", default="default", help="default namespace in the kubeconfig")
    args = parser.parse_args(argv)

    emulator = KubeEmulator(args.crd_dir, gateway_operator=args.gateway_operator, operator_delay=args.operator_delay)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    url = emulator.start(args.host, args.port)
    if args.kubeconfig:
        emulator.write_kubeconfig(args.kubeconfig, args.namespace)
    print(url, flush=True)
    try:
        stop.wait()
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
