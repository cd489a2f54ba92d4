"""Intake: a durable STOMP subscription to the control plane's notification topic.

Each message is acknowledged only after Temporal has durably accepted the event (or after
it was dead-lettered with a reason, or deliberately passed over). Messages are handled one
at a time in arrival order, so events of one API reach its workflow in the order sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import stomp
from opentelemetry import trace
from stomp.exception import StompException
from temporalio.service import RPCError, RPCStatusCode

from agent import telemetry
from agent.metrics import EVENTS, LISTENER_CONNECTED
from agent.settings import Settings
from models.api_workflow import ApiEventSignal
from models.consumer_workflow import ConsumerEventSignal, ConsumerRef
from models.events import (
    ApiChangeEvent,
    ApiGatewayEvent,
    ApplicationEvent,
    ApplicationKeyEvent,
    ConsumerEvent,
    EventBase,
    MalformedEvent,
    PolicyEvent,
    SubscriptionEvent,
    UnknownEvent,
    parse_message,
)

log = logging.getLogger(__name__)


class _RedactPasscode(logging.Filter):
    """stomp.py logs every frame it sends at DEBUG, the CONNECT frame's ``passcode`` too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "passcode:" in message:
            record.msg, record.args = _PASSCODE.sub(r"\1***", message), None
        return True


# To the end of the header line (``\n'`` in the frame's repr), whatever the passcode holds.
_PASSCODE = re.compile(r"(passcode:).*?(?=\\n['\"]|\n|$)")
logging.getLogger("stomp.py").addFilter(_RedactPasscode())

Submit = Callable[[ApiEventSignal | ConsumerEventSignal], Awaitable[None]]
REASON_HEADER = "x-dead-letter-reason"
MAX_REASON = 1000
PREFETCH = 100


@dataclass
class _Frame:
    headers: dict[str, str]
    body: bytes  # as the broker sent it: a body that is not UTF-8 is dead-lettered unchanged


class _Bridge(stomp.ConnectionListener):
    """Hands frames from stomp.py's receiver thread to the asyncio consumer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[_Frame]) -> None:
        self._loop = loop
        self._queue = queue
        self.disconnected = asyncio.Event()
        self._receipts: dict[str, asyncio.Future[None]] = {}
        self._lock = threading.Lock()

    def expect_receipt(self, receipt: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            self._receipts[receipt] = future
        return future

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop is closed: nobody listens any more (an un-acked message is redelivered)

    def on_message(self, frame: stomp.utils.Frame) -> None:
        body = frame.body if isinstance(frame.body, bytes) else (frame.body or "").encode()
        self._call(self._queue.put_nowait, _Frame(dict(frame.headers), body))

    def on_receipt(self, frame: stomp.utils.Frame) -> None:
        with self._lock:
            future = self._receipts.pop(frame.headers.get("receipt-id", ""), None)
        if future is not None:
            self._call(lambda: future.done() or future.set_result(None))

    def on_error(self, frame: stomp.utils.Frame) -> None:
        body = frame.body.decode("utf-8", "replace") if isinstance(frame.body, bytes) else frame.body or ""
        log.error("broker error: %s %s", frame.headers.get("message", ""), body[:200])

    def on_disconnected(self) -> None:
        self._call(self.disconnected.set)

    def on_heartbeat_timeout(self) -> None:
        log.warning("broker heartbeat timed out")


class BrokerListener:
    """Subscribes, hands events to ``submit``, dead-letters what it cannot read, reconnects."""

    def __init__(self, settings: Settings, submit: Submit) -> None:
        self._settings = settings
        self._submit = submit
        self._labels = set(settings.gateway_labels)
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            queue: asyncio.Queue[_Frame] = asyncio.Queue()
            bridge = _Bridge(asyncio.get_running_loop(), queue)
            conn = self._connection(bridge)
            try:
                await asyncio.to_thread(self._connect, conn)
                # Messages published before the broker processed SUBSCRIBE would not be kept.
                receipt = f"subscribe-{uuid.uuid4()}"
                subscribed = bridge.expect_receipt(receipt)
                await asyncio.to_thread(self._subscribe, conn, receipt)
                await asyncio.wait_for(subscribed, timeout=30)
            except (StompException, OSError, TimeoutError) as exc:
                if conn.is_connected():
                    await asyncio.to_thread(_disconnect_quietly, conn)
                log.warning(
                    "cannot reach the broker at %s: %s; retrying in %.1fs", self._settings.broker_url, exc, delay
                )
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, self._settings.broker_reconnect_max_seconds) * random.uniform(0.8, 1.2)
                continue
            delay = 0.5
            LISTENER_CONNECTED.set(1)
            self.connected.set()
            log.info("subscribed to %s on %s", self._settings.broker_topic, self._settings.broker_url)
            try:
                await self._consume(conn, bridge, queue, stop)
            finally:
                self.connected.clear()
                LISTENER_CONNECTED.set(0)
                if conn.is_connected():
                    await asyncio.to_thread(_disconnect_quietly, conn)
            if not stop.is_set():
                log.warning("lost the broker connection; reconnecting")

    def _connection(self, bridge: _Bridge) -> stomp.Connection12:
        host, port = self._settings.broker_host_and_port
        # ActiveMQ may leave up to twice the agreed 10 s between frames after a message; stomp.py's
        # default grace (1.5x) then reads a healthy connection as dead and reconnects.
        conn = stomp.Connection12(
            [(host, port)],
            heartbeats=(10000, 10000),
            heart_beat_receive_scale=2.5,
            reconnect_attempts_max=1,
            timeout=10,
            auto_decode=False,  # bodies stay bytes: stomp.py would replace what is not UTF-8
        )
        if self._settings.broker_uses_tls:
            conn.set_ssl(
                for_hosts=[(host, port)],
                ssl_version=ssl.PROTOCOL_TLS_CLIENT,
                ca_certs=self._settings.broker_ca_file or None,
                # The certificate against the CAs, and (PROTOCOL_TLS_CLIENT) the host name; off only
                # with GATEWAY_AGENT_BROKER_VERIFY_TLS=false, which the command warns about.
                verify=self._settings.broker_verify_tls,
            )
        conn.set_listener("intake", bridge)
        return conn

    def _connect(self, conn: stomp.Connection12) -> None:
        s = self._settings
        conn.connect(
            s.broker_username or None,
            s.broker_password.get_secret_value() or None,
            wait=True,
            headers={"client-id": s.broker_client_id},
        )

    def _subscribe(self, conn: stomp.Connection12, receipt: str) -> None:
        s = self._settings
        conn.subscribe(
            s.broker_topic,
            id=s.broker_subscription_name,
            ack="client-individual",
            headers={
                "activemq.subscriptionName": s.broker_subscription_name,
                "activemq.prefetchSize": str(PREFETCH),
                "receipt": receipt,
            },
        )

    async def _consume(
        self, conn: stomp.Connection12, bridge: _Bridge, queue: asyncio.Queue[_Frame], stop: asyncio.Event
    ) -> None:
        gone = asyncio.create_task(bridge.disconnected.wait())
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return
                handled = asyncio.create_task(self._handle(conn, bridge, getter.result()))
                done, _ = await asyncio.wait({handled, gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if handled not in done:
                    # Not acknowledged: the broker redelivers it; the workflow drops a duplicate.
                    handled.cancel()
                    return
                try:
                    handled.result()
                except (StompException, OSError, TimeoutError) as exc:
                    log.warning("broker connection failed while handling a message: %s", exc)
                    return
        finally:
            gone.cancel()
            stopping.cancel()

    async def _handle(self, conn: stomp.Connection12, bridge: _Bridge, frame: _Frame) -> None:
        """One message, in its own span: the root of the event's trace."""
        with telemetry.receiving(frame.headers.get("message-id", ""), self._settings.broker_topic):
            await self._handle_message(conn, bridge, frame)

    async def _handle_message(self, conn: stomp.Connection12, bridge: _Bridge, frame: _Frame) -> None:
        ack_id = frame.headers.get("ack") or frame.headers.get("message-id", "")
        try:
            event = parse_message(frame.body)
        except MalformedEvent as exc:
            await self._dead_letter(conn, bridge, frame, str(exc))
            await asyncio.to_thread(conn.ack, ack_id)
            _count("malformed", "dead-lettered")
            return
        if isinstance(event, UnknownEvent):
            log.info("passing over unknown event type %s", event.event_type)
            await asyncio.to_thread(conn.ack, ack_id)
            _count("unknown", "unknown")
            return
        if isinstance(event, ApiGatewayEvent) and event.gateway_labels and not self._labels & set(event.gateway_labels):
            await asyncio.to_thread(conn.ack, ack_id)
            _count(event.type, "other-gateway")
            return
        try:
            signal = _signal_of(event)
        except MalformedEvent as exc:
            await self._dead_letter(conn, bridge, frame, str(exc))
            await asyncio.to_thread(conn.ack, ack_id)
            _count(event.type, "dead-lettered")
            return
        if signal is None:
            log.debug("event %s (%s) has nothing for this gateway", event.event_id, event.type)
            await asyncio.to_thread(conn.ack, ack_id)
            _count(event.type, "ignored")
            return
        try:
            with telemetry.event_context(_trace_attributes(signal)):
                await self._submit_until_accepted(signal)
        except MalformedEvent as exc:
            await self._dead_letter(conn, bridge, frame, str(exc))
            await asyncio.to_thread(conn.ack, ack_id)
            _count(event.type, "dead-lettered")
            return
        await asyncio.to_thread(conn.ack, ack_id)
        _count(event.type, "submitted")
        subject = f"API {signal.api_uuid}" if isinstance(signal, ApiEventSignal) else signal.ref.label
        log.info("event %s %s for %s accepted by Temporal", event.event_id, event.type, subject)

    async def _submit_until_accepted(self, signal: ApiEventSignal | ConsumerEventSignal) -> None:
        delay = 0.2
        while True:
            try:
                await self._submit(signal)
                return
            except asyncio.CancelledError:
                raise
            except RPCError as exc:
                if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                    # This event can never be accepted; retrying would block the topic.
                    raise MalformedEvent(f"Temporal refuses event {signal.event_id}: {exc.message}") from exc
                log.warning("Temporal did not accept event %s: %s; retrying in %.1fs", signal.event_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # the event stays un-acked on the broker meanwhile
                log.warning("Temporal did not accept event %s: %s; retrying in %.1fs", signal.event_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _dead_letter(self, conn: stomp.Connection12, bridge: _Bridge, frame: _Frame, reason: str) -> None:
        log.warning("dead-lettering message %s: %s", frame.headers.get("message-id"), reason)
        receipt = f"dlq-{uuid.uuid4()}"
        confirmed = bridge.expect_receipt(receipt)
        headers = {
            "persistent": "true",
            REASON_HEADER: reason[:MAX_REASON],
            "x-original-destination": frame.headers.get("destination", ""),
            "x-original-message-id": frame.headers.get("message-id", ""),
            "receipt": receipt,
        }
        await asyncio.to_thread(conn.send, self._settings.dead_letter_destination, frame.body, headers=headers)
        # Ack the original only once the broker has the copy.
        await asyncio.wait_for(confirmed, timeout=30)


def _count(event_type: str, outcome: str) -> None:
    EVENTS.labels(event_type=event_type, outcome=outcome).inc()
    trace.get_current_span().set_attributes({telemetry.EVENT_TYPE: event_type, telemetry.EVENT_OUTCOME: outcome})


def _trace_attributes(signal: ApiEventSignal | ConsumerEventSignal) -> dict[str, str]:
    """What names the event on every span of its trace."""
    common = {telemetry.EVENT_TYPE: signal.event_type, telemetry.EVENT_ID: signal.event_id}
    if isinstance(signal, ApiEventSignal):
        return {**common, telemetry.API_ID: signal.api_uuid, telemetry.ORGANIZATION: signal.organization}
    return {
        **common,
        telemetry.CONSUMER_KIND: signal.ref.kind,
        telemetry.CONSUMER_KEY: signal.ref.key,
        telemetry.ORGANIZATION: signal.ref.organization,
    }


def _signal_of(event: EventBase) -> ApiEventSignal | ConsumerEventSignal | None:
    """The workflow signal an event becomes; None for events with nothing for the gateway
    (scopes, API and application throttling policies: API tiers come with the API's artifact)."""
    if isinstance(event, ApiGatewayEvent | ApiChangeEvent):
        return ApiEventSignal.from_event(event)
    org = event.organization
    if isinstance(event, ApplicationEvent):
        ref = ConsumerRef(organization=org, kind="application", key=event.uuid)
    elif isinstance(event, ApplicationKeyEvent):
        if not event.application_uuid:
            raise MalformedEvent(
                f"{event.type} for application {event.application_id} names no applicationUUID (an older "
                "control plane); the agent keys applications by UUID: the next full sync applies this key change"
            )
        ref = ConsumerRef(organization=org, kind="application", key=event.application_uuid)
    elif isinstance(event, SubscriptionEvent):
        ref = ConsumerRef(organization=org, kind="subscription", key=event.subscription_uuid)
    elif isinstance(event, PolicyEvent) and event.policy_type.strip().upper() == "SUBSCRIPTION":
        ref = ConsumerRef(organization=org, kind="tier", key=event.policy_name)
    else:
        return None
    return ConsumerEventSignal(
        event_id=event.event_id,
        event_type=event.type,
        timestamp_ms=event.time_stamp,
        ref=ref,
        fields=event.fields() if isinstance(event, ConsumerEvent) else {},
    )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


def _disconnect_quietly(conn: stomp.Connection12) -> None:
    try:
        conn.disconnect()
    except (StompException, OSError):
        pass
