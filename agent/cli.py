"""``gateway-agent``: run the listener and the worker, and operate the API workflows."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import NoReturn

import typer
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.runtime import Runtime

from agent import metrics, telemetry
from agent.codec import CREATE_KEY_HINT, CodecKeyError, generate_key_line
from agent.console import exit_after as _exit_after
from agent.health import Health
from agent.history_command import history
from agent.settings import Settings, get_settings
from agent.status_command import retry, status
from agent.sync_command import sync
from agent.temporal import connect
from agent.translate_command import translate

HELP = """Kubernetes Gateway Agent on Temporal.

Operator commands print tables for people, or one JSON document with --output json; progress goes
to stderr. Exit codes: 0 ok, 1 the operation failed, aborted or timed out, 2 a usage error or
nothing by that name.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
log = logging.getLogger("gateway-agent")


def _setup(settings: Settings) -> Runtime | None:
    """Logging, tracing (``OTEL_*``), metrics and health of a long-running command; the Temporal
    runtime that serves the SDK's metrics (None: metrics off)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    telemetry.setup_tracing()
    warn_insecure(settings)
    return metrics.serve(settings.metrics_port)


def warn_insecure(settings: Settings) -> None:
    """One WARNING per process for each TLS verification turned off."""
    if not settings.cp_verify_tls:
        log.warning(
            "GATEWAY_AGENT_CP_VERIFY_TLS=false: the control plane's TLS certificate is NOT verified; "
            "anyone on the path can read its credentials (set GATEWAY_AGENT_CP_CA_FILE instead)"
        )
    if settings.broker_uses_tls and not settings.broker_verify_tls:
        log.warning(
            "GATEWAY_AGENT_BROKER_VERIFY_TLS=false: the broker's TLS certificate and host name are NOT verified "
            "(set GATEWAY_AGENT_BROKER_CA_FILE instead)"
        )


def require_encrypted_history(settings: Settings) -> None:
    """A worker writes resources, consumer keys and credentials into workflow history: without codec
    keys it starts only when plaintext history was allowed explicitly (demo, development)."""
    if settings.payload_codec() is not None:
        log.info("workflow history is encrypted (codec key %s encrypts)", settings.payload_codec().encrypting_key_id)
        return
    if settings.allow_plaintext_history:
        log.warning(
            "GATEWAY_AGENT_ALLOW_PLAINTEXT_HISTORY=true: workflow history is NOT encrypted (demo and development "
            "only); Secret data is sealed with GATEWAY_AGENT_SEALING_KEY"
        )
        return
    log.error(
        "no codec keys: the worker refuses to write unencrypted workflow history. %s; "
        "or, for a demo or development, set GATEWAY_AGENT_ALLOW_PLAINTEXT_HISTORY=true",
        CREATE_KEY_HINT,
    )
    raise SystemExit(2)


def load_settings() -> Settings:
    """The settings, or exit 2 with what is wrong (bad codec keys, an unreadable ``*_FILE``)."""
    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            print(f"error: {where}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_until_signalled(
    main: Callable[[asyncio.Event, Health], Awaitable[None]], settings: Settings, parts: tuple[str, ...]
) -> NoReturn:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        health = Health(expected=("temporal", *parts))
        if settings.health_port:
            health.serve(settings.health_port)
        try:
            await main(stop, health)
        finally:
            health.close()
            telemetry.shutdown()

    _exit_after(runner())


async def _listen(client: Client, settings: Settings, stop: asyncio.Event, health: Health) -> None:
    from intake.listener import BrokerListener
    from intake.submit import TemporalSubmitter

    listener = BrokerListener(settings, TemporalSubmitter(client, settings))

    async def subscribed() -> str | None:
        if listener.connected.is_set():
            return None
        return f"broker: not subscribed to {settings.broker_topic} on {settings.broker_url}"

    health.ready("broker", subscribed)
    health.task("listener", asyncio.current_task())  # type: ignore[arg-type]
    await listener.run(stop)


async def _work(client: Client, settings: Settings, stop: asyncio.Event, health: Health) -> None:
    from worker import run_worker

    health.task("worker", asyncio.current_task())  # type: ignore[arg-type]
    await run_worker(client, settings, stop, health)


@app.command()
def listen() -> None:
    """Subscribe to the control plane's events and hand each to its API's workflow."""
    settings = load_settings()
    runtime = _setup(settings)

    async def main(stop: asyncio.Event, health: Health) -> None:
        client = await connect(settings, runtime)
        health.temporal(client)
        await _listen(client, settings, stop, health)

    _run_until_signalled(main, settings, ("broker",))


@app.command()
def worker() -> None:
    """Run the Temporal worker (workflows and activities); SIGTERM shuts it down gracefully."""
    settings = load_settings()
    runtime = _setup(settings)
    require_encrypted_history(settings)

    async def main(stop: asyncio.Event, health: Health) -> None:
        client = await connect(settings, runtime)
        health.temporal(client)
        await _work(client, settings, stop, health)

    _run_until_signalled(main, settings, ("worker",))


@app.command()
def run() -> None:
    """Run the listener and the worker in one process."""
    settings = load_settings()
    runtime = _setup(settings)
    require_encrypted_history(settings)

    async def main(stop: asyncio.Event, health: Health) -> None:
        client = await connect(settings, runtime)
        health.temporal(client)
        await asyncio.gather(_listen(client, settings, stop, health), _work(client, settings, stop, health))

    _run_until_signalled(main, settings, ("broker", "worker"))


@app.command("codec-key")
def codec_key(
    key_id: str = typer.Option("", "--id", help="the key's id (letters, digits, . _ -); default: a random one"),
) -> None:
    """Print a new codec key line, <id>:<base64 of 32 random bytes>, for GATEWAY_AGENT_CODEC_KEYS(_FILE)."""
    try:
        print(generate_key_line(key_id or None))
    except CodecKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@app.command("codec-server")
def codec_server(
    port: int = typer.Option(0, help="port to listen on (default GATEWAY_AGENT_CODEC_SERVER_PORT)"),
    host: str = typer.Option("", help="address to bind (default GATEWAY_AGENT_CODEC_SERVER_HOST)"),
) -> None:
    """Serve Temporal's codec server protocol (POST /encode, /decode) for the Temporal UI and CLI, with
    the agent's codec keys, behind a bearer token or OIDC, to the configured UI origin only."""
    from agent.codec_server import Authenticator, CodecServer, OidcConfig

    settings = load_settings()
    _setup(settings)
    codec = settings.payload_codec()
    if codec is None:
        log.error("no codec keys: nothing to decode with. %s", CREATE_KEY_HINT)
        raise SystemExit(2)
    oidc = (
        OidcConfig(
            settings.codec_server_oidc_jwks_url, settings.codec_server_oidc_issuer, settings.codec_server_oidc_audience
        )
        if settings.codec_server_oidc_jwks_url
        else None
    )
    try:
        auth = Authenticator(settings.codec_server_token.get_secret_value(), oidc)
    except ValueError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    server = CodecServer(
        codec,
        auth,
        settings.codec_server_ui_origin,
        host=host or settings.codec_server_host,
        port=port or settings.codec_server_port,
        max_body_bytes=settings.codec_server_max_body_bytes,
    )
    log.info(
        "codec server on %s for UI origin %s (keys %s; auth: %s)",
        server.url,
        settings.codec_server_ui_origin,
        ", ".join(codec.key_ids),
        " or ".join(n for n, on in (("token", auth.has_token), ("OIDC", oidc is not None)) if on),
    )

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.httpd.serve_forever()
    server.httpd.server_close()
    log.info("codec server stopped")


for command in (status, history, retry, sync, translate):
    app.command()(command)


def main() -> None:
    app()
