"""``gateway-agent codec-server``: the Temporal UI's (and CLI's) remote codec.

Temporal's codec server protocol: ``POST .../encode`` and ``POST .../decode`` (only the path's last
segment counts) take ``{"payloads": [...]}`` (``temporal.api.common.v1.Payloads`` as protobuf JSON)
and answer the same shape; the UI sends ``X-Namespace``. Every POST must carry
``Authorization: Bearer <token>``: the configured token (compared in constant time), or, with
``GATEWAY_AGENT_CODEC_SERVER_OIDC_JWKS_URL``, a JWT signed by a key of that JWKS with the configured
issuer and audience. Browsers may call it from the configured UI origin only (CORS). The log has the
method, path, status and client, never payloads or credentials.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from agent.codec import CodecError, EncryptionCodec

log = logging.getLogger("gateway-agent.codec-server")

ALLOWED_HEADERS = "authorization, content-type, x-namespace"
REALM = 'Bearer realm="gateway-agent codec server"'
JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


@dataclass
class OidcConfig:
    jwks_url: str
    issuer: str
    audience: str


class Authenticator:
    """A static bearer token, an OIDC provider's JWTs, or both (either passes)."""

    def __init__(self, token: str = "", oidc: OidcConfig | None = None) -> None:
        if not token and oidc is None:
            raise ValueError(
                "the codec server needs credentials: GATEWAY_AGENT_CODEC_SERVER_TOKEN(_FILE), or "
                "GATEWAY_AGENT_CODEC_SERVER_OIDC_JWKS_URL with _OIDC_ISSUER and _OIDC_AUDIENCE"
            )
        if oidc is not None and not (oidc.issuer and oidc.audience):
            raise ValueError("OIDC needs GATEWAY_AGENT_CODEC_SERVER_OIDC_ISSUER and _OIDC_AUDIENCE")
        self._token = token.encode()
        self._oidc = oidc
        self._jwks: Any = None
        if oidc is not None:
            import jwt

            self._jwks = jwt.PyJWKClient(oidc.jwks_url, cache_keys=True, lifespan=300, timeout=10)

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def __repr__(self) -> str:
        return f"Authenticator(token={'set' if self._token else 'none'}, oidc={self._oidc!r})"

    def check(self, header: str | None) -> str | None:
        """None when ``header`` is acceptable credentials, else why not (no secret in it)."""
        if not header:
            return "no credentials"
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return "not a bearer token"
        if self._token and hmac.compare_digest(credential.encode(), self._token):
            return None
        if self._oidc is not None:
            import jwt

            try:
                key = self._jwks.get_signing_key_from_jwt(credential)
                jwt.decode(
                    credential,
                    key.key,
                    algorithms=JWT_ALGORITHMS,
                    audience=self._oidc.audience,
                    issuer=self._oidc.issuer,
                    options={"require": ["exp", "iss", "aud"]},
                )
                return None
            except jwt.PyJWTError as exc:
                return f"token refused ({type(exc).__name__})"
        return "wrong token"


class CodecServer:
    """A ThreadingHTTPServer in a thread of its own; ``serve_forever`` for the command."""

    def __init__(
        self,
        codec: EncryptionCodec,
        auth: Authenticator,
        ui_origin: str,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.codec = codec
        self.auth = auth
        self.ui_origin = ui_origin.rstrip("/")
        self.max_body_bytes = max_body_bytes
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="codec-server", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    server_state: CodecServer
    protocol_version = "HTTP/1.1"
    server_version = "gateway-agent-codec"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the request line could hold anything a client put in the path; _answer logs instead

    def _origin_allowed(self) -> bool | None:
        """None: no Origin (not a browser); else whether it is the UI's."""
        origin = self.headers.get("Origin")
        if origin is None:
            return None
        return origin.rstrip("/") == self.server_state.ui_origin

    def _answer(self, status: HTTPStatus, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if self._origin_allowed():
            self.send_header("Access-Control-Allow-Origin", self.server_state.ui_origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
        self.send_header("Vary", "Origin")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        log.info("%s %s -> %d (%s)", self.command, self._endpoint() or "?", status, self.client_address[0])

    def _error(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        self._answer(status, json.dumps({"error": message}).encode(), headers)

    def _endpoint(self) -> str | None:
        last = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return last if last in ("encode", "decode") else None

    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's names
        if not self._origin_allowed():
            self.close_connection = True
            self._error(HTTPStatus.FORBIDDEN, "origin not allowed")
            return
        self._answer(
            HTTPStatus.NO_CONTENT,
            headers={
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )

    def do_GET(self) -> None:  # noqa: N802
        self.close_connection = True
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "POST /encode or /decode", {"Allow": "POST, OPTIONS"})

    def do_POST(self) -> None:  # noqa: N802
        state = self.server_state
        self.close_connection = True  # the body may not have been read: never reuse the connection
        if self._origin_allowed() is False:
            self._error(HTTPStatus.FORBIDDEN, "origin not allowed")
            return
        endpoint = self._endpoint()
        if endpoint is None:
            self._error(HTTPStatus.NOT_FOUND, "POST /encode or /decode")
            return
        problem = state.auth.check(self.headers.get("Authorization"))
        if problem is not None:
            challenge = REALM if problem == "no credentials" else f'{REALM}, error="invalid_token"'
            self._error(HTTPStatus.UNAUTHORIZED, problem, {"WWW-Authenticate": challenge})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return
        if length < 0 or length > state.max_body_bytes:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {state.max_body_bytes} bytes")
            return
        body = self.rfile.read(length)
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError, ValueError):
            self._error(HTTPStatus.BAD_REQUEST, 'expected {"payloads": [...]} (Payloads as protobuf JSON)')
            return
        try:
            if endpoint == "encode":
                out = [state.codec.encrypt(p) for p in payloads.payloads]
            else:
                out = [state.codec.decrypt(p) for p in payloads.payloads]
        except CodecError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        self._answer(HTTPStatus.OK, json_format.MessageToJson(Payloads(payloads=out)).encode())
