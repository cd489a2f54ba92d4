"""``gateway-agent codec-server`` over real HTTP: Temporal's codec protocol, bearer tokens and OIDC
JWTs (a local RSA key and a JWKS served here), CORS for the UI's origin only, limits, quiet logs."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from agent.codec import ENCODING, EncryptionCodec, generate_key_line, parse_keys
from agent.codec_server import Authenticator, CodecServer, OidcConfig

TOKEN = "codec-token-4f1d9b"
UI = "http://localhost:8233"
SECRET_TEXT = '{"password": "codec-server-secret-77"}'


def request(
    url: str, method: str = "POST", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def payloads_json(*payloads: Payload) -> bytes:
    return json_format.MessageToJson(Payloads(payloads=list(payloads))).encode()


def plain() -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=SECRET_TEXT.encode())


@pytest.fixture
def codec() -> EncryptionCodec:
    return EncryptionCodec(parse_keys(generate_key_line("k1")))


@pytest.fixture
def server(codec: EncryptionCodec) -> Iterator[CodecServer]:
    srv = CodecServer(codec, Authenticator(TOKEN), UI, max_body_bytes=64 * 1024)
    srv.start()
    yield srv
    srv.stop()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "X-Namespace": "default"}


async def test_decode_and_encode_with_the_right_token(server: CodecServer, codec: EncryptionCodec, caplog):
    caplog.set_level(logging.DEBUG)
    [encrypted] = await codec.encode([plain()])
    status, headers, body = request(f"{server.url}/decode", body=payloads_json(encrypted), headers=auth())
    assert status == 200, body
    decoded = json_format.Parse(body, Payloads())
    assert list(decoded.payloads) == [plain()]
    # Only the last path segment counts (the UI may mount it anywhere).
    status, _, body = request(f"{server.url}/codec/default/encode", body=payloads_json(plain()), headers=auth())
    assert status == 200
    [reencoded] = json_format.Parse(body, Payloads()).payloads
    assert reencoded.metadata["encoding"] == ENCODING and await codec.decode([reencoded]) == [plain()]
    logged = caplog.text
    assert "POST decode -> 200" in logged
    assert TOKEN not in logged and "codec-server-secret-77" not in logged
    assert base64.b64encode(SECRET_TEXT.encode()).decode() not in logged


async def test_no_or_wrong_credentials_are_401_with_a_challenge(server: CodecServer, codec: EncryptionCodec):
    [encrypted] = await codec.encode([plain()])
    body = payloads_json(encrypted)
    for headers in ({"Content-Type": "application/json"}, auth("wrong-token"), {"Authorization": f"Basic {TOKEN}"}):
        status, answer_headers, answer = request(f"{server.url}/decode", body=body, headers=headers)
        assert status == 401, headers
        assert answer_headers["WWW-Authenticate"].startswith("Bearer")
        assert b"codec-server-secret-77" not in answer


def test_cors_only_for_the_ui_origin(server: CodecServer):
    preflight = {
        "Origin": UI,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    status, headers, _ = request(f"{server.url}/decode", method="OPTIONS", headers=preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == UI
    assert headers["Access-Control-Allow-Headers"] == "authorization, content-type, x-namespace"
    assert "POST" in headers["Access-Control-Allow-Methods"]

    status, headers, _ = request(
        f"{server.url}/decode", method="OPTIONS", headers={**preflight, "Origin": "http://evil.example"}
    )
    assert status == 403 and "Access-Control-Allow-Origin" not in headers

    # A POST from another origin is refused even with the right token; from the UI it carries CORS.
    status, headers, _ = request(
        f"{server.url}/decode", body=payloads_json(plain()), headers={**auth(), "Origin": "http://evil.example"}
    )
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = request(f"{server.url}/decode", body=payloads_json(plain()), headers={**auth(), "Origin": UI})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == UI


def test_bad_json_unknown_paths_and_big_bodies(server: CodecServer):
    assert request(f"{server.url}/decode", body=b"{not json", headers=auth())[0] == 400
    assert request(f"{server.url}/decode", body=b'{"payloads": 3}', headers=auth())[0] == 400
    assert request(f"{server.url}/other", body=b"{}", headers=auth())[0] == 404
    assert request(f"{server.url}/decode", body=b"x" * (64 * 1024 + 1), headers=auth())[0] == 413
    assert request(f"{server.url}/decode", method="GET")[0] == 405


async def test_a_payload_of_an_unknown_key_is_400_naming_the_key(server: CodecServer):
    [foreign] = await EncryptionCodec(parse_keys(generate_key_line("gone"))).encode([plain()])
    status, _, body = request(f"{server.url}/decode", body=payloads_json(foreign), headers=auth())
    assert status == 400 and b"'gone'" in body


def test_no_credentials_configured_refuses_to_build():
    with pytest.raises(ValueError, match="needs credentials"):
        Authenticator("")


# ---------------------------------------------------------------------- OIDC


class _Jwks:
    """A JWKS document on loopback, as an identity provider serves it."""

    def __init__(self, document: dict) -> None:
        body = json.dumps(document).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def oidc_server(codec: EncryptionCodec, rsa_key: rsa.RSAPrivateKey) -> Iterator[CodecServer]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwks = _Jwks({"keys": [{**jwk, "kid": "test-key", "use": "sig", "alg": "RS256"}]})
    oidc = OidcConfig(jwks.url, issuer="https://idp.example/", audience="temporal-ui")
    srv = CodecServer(codec, Authenticator("", oidc), UI)
    srv.start()
    yield srv
    srv.stop()
    jwks.stop()


def _jwt(key: rsa.RSAPrivateKey, **claims: object) -> str:
    body = {"iss": "https://idp.example/", "aud": "temporal-ui", "sub": "alice", "exp": int(time.time()) + 300}
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "test-key"})


async def test_oidc_tokens_verified_against_the_jwks(oidc_server: CodecServer, codec, rsa_key):
    [encrypted] = await codec.encode([plain()])
    body = payloads_json(encrypted)
    status, _, answer = request(f"{oidc_server.url}/decode", body=body, headers=auth(_jwt(rsa_key)))
    assert status == 200, answer
    assert list(json_format.Parse(answer, Payloads()).payloads) == [plain()]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (
        _jwt(rsa_key, aud="someone-else"),
        _jwt(rsa_key, iss="https://other-idp.example/"),
        _jwt(rsa_key, exp=int(time.time()) - 10),
        _jwt(other_key),  # signed by a key not in the JWKS
        TOKEN,
    ):
        status, headers, _ = request(f"{oidc_server.url}/decode", body=body, headers=auth(token))
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
