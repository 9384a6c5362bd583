"""Production tokens: an API process that accepts HS256, RS256 and ES256, with the identity
provider's keys from a JWKS endpoint (a real HTTP server on loopback), `iss` and `aud`
checked. Every forged, expired, misdirected or oversized token is 401; good ones work."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from beeoclock.embedded import free_port
from tests.support import isolated, running

pytestmark = pytest.mark.slow

ISSUER = "https://idp.example.test/"
AUDIENCE = "beeoclock-panel"
TENANT = "t-tokens"


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(key.public_key())), "kid": kid, "alg": alg, "use": "sig"}


@dataclass
class IdentityProvider:
    """Signing keys and a JWKS endpoint that counts its fetches."""

    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    url: str = ""

    def publish(self) -> None:
        self.keys = [_jwk(self.rsa_key, "rsa-1", "RS256"), _jwk(self.ec_key, "ec-1", "ES256")]

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "sub": "user-1",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
            "tenants": {TENANT: ["READ_CUSTOMER", "CREATE_CUSTOMER"]},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def rs256(self, kid: str = "rsa-1", key: Any = None, **claims: Any) -> str:
        return jwt.encode(
            self.claims(**claims), key or self.rsa_key, algorithm="RS256", headers={"kid": kid}
        )

    def es256(self, kid: str = "ec-1", **claims: Any) -> str:
        return jwt.encode(
            self.claims(**claims), self.ec_key, algorithm="ES256", headers={"kid": kid}
        )


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.publish()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.fetches += 1
            body = json.dumps({"keys": provider.keys}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    provider.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    try:
        yield provider
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def api(servers: dict[str, str], idp: IdentityProvider) -> Iterator[tuple[httpx.Client, str]]:
    with (
        isolated(
            servers,
            jwt_algorithms="HS256,RS256,ES256",
            jwt_jwks_url=idp.url,
            jwt_jwks_refetch_s=2,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_leeway_s=5,
        ) as settings,
        running(settings, "api") as stack,
        httpx.Client(base_url=stack.base_url, timeout=15) as client,
    ):
        yield client, settings.jwt_secret


def call(client: httpx.Client, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "x-business-tenant-id": TENANT}
    return client.get("/api/v1/customer/paged", headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_tokens_from_the_identity_provider_and_the_shared_secret_are_accepted(
    api: tuple[httpx.Client, str], idp: IdentityProvider
) -> None:
    client, secret = api
    assert call(client, idp.rs256()).status_code == 200
    assert call(client, idp.es256()).status_code == 200
    hs256 = jwt.encode(idp.claims(), secret, algorithm="HS256")
    assert call(client, hs256).status_code == 200


def hs256_by_hand(claims: dict[str, Any], secret: bytes) -> str:
    """What PyJWT refuses to make: an HS256 token keyed with a PEM public key."""
    signing_input = ".".join(
        b64(json.dumps(part).encode())
        for part in ({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims)
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _with_header(header: dict[str, Any], token: str) -> str:
    _, payload, signature = token.split(".")
    return f"{b64(json.dumps(header).encode())}.{payload}.{signature}"


def forged_tokens(idp: IdentityProvider, secret: str) -> dict[str, str]:
    rsa_public_pem = idp.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header_none = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    good = idp.rs256()
    head, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenants"] = {TENANT: ["READ_CUSTOMER", "DELETE_CUSTOMER", "READ_AUDIT"]}
    tampered = f"{head}.{b64(json.dumps(claims).encode())}.{signature}"
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    big_tenants = {f"tenant-{i:05d}": ["READ_CUSTOMER"] for i in range(220)}
    return {
        "alg none": f"{header_none}.{b64(json.dumps(idp.claims()).encode())}.",
        # the public key as an HMAC secret: the "alg confusion" forgery
        "HS256 signed with the RS public key": hs256_by_hand(idp.claims(), rsa_public_pem),
        "wrong key": idp.rs256(key=other_key),
        "expired": idp.rs256(exp=int(time.time()) - 120),
        "missing exp": idp.rs256(exp=None),
        "future nbf": idp.rs256(nbf=int(time.time()) + 600),
        "future iat": idp.rs256(iat=int(time.time()) + 600),
        "wrong aud": idp.rs256(aud="another-service"),
        "missing aud": idp.rs256(aud=None),
        "wrong iss": idp.rs256(iss="https://evil.example/"),
        "missing iss": idp.rs256(iss=None),
        "unknown kid": idp.rs256(kid="no-such-key"),
        "ES256 header on the RSA key's kid": jwt.encode(
            idp.claims(), idp.ec_key, algorithm="ES256", headers={"kid": "rsa-1"}
        ),
        "tampered payload": tampered,
        "HS256 with the wrong secret": jwt.encode(idp.claims(), "x" * 40, algorithm="HS256"),
        "HS512 (not accepted)": jwt.encode(idp.claims(), secret, algorithm="HS512"),
        "no tenants claim": idp.rs256(tenants=None),
        "empty sub": idp.rs256(sub=""),
        "8 KB token": idp.rs256(tenants={TENANT: ["READ_CUSTOMER"], **big_tenants}),
        "not a JWT": "definitely.not.a-jwt",
        "alg as a list": _with_header({"alg": ["HS256"], "typ": "JWT"}, good),
        "alg as an object": _with_header({"alg": {"x": 1}, "typ": "JWT"}, good),
        "kid as a number": _with_header({"alg": "RS256", "kid": 7}, good),
    }


CASES = (
    "alg none",
    "HS256 signed with the RS public key",
    "wrong key",
    "expired",
    "missing exp",
    "future nbf",
    "future iat",
    "wrong aud",
    "missing aud",
    "wrong iss",
    "missing iss",
    "unknown kid",
    "ES256 header on the RSA key's kid",
    "tampered payload",
    "HS256 with the wrong secret",
    "HS512 (not accepted)",
    "no tenants claim",
    "empty sub",
    "8 KB token",
    "not a JWT",
    "alg as a list",
    "alg as an object",
    "kid as a number",
)


@pytest.mark.filterwarnings("ignore:The HMAC key is")
@pytest.mark.parametrize("case", CASES)
def test_a_bad_token_is_401(
    api: tuple[httpx.Client, str], idp: IdentityProvider, case: str
) -> None:
    client, secret = api
    token = forged_tokens(idp, secret)[case]
    if case == "8 KB token":
        assert len(token) >= 8 * 1024
    response = call(client, token)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["statusCode"] == 401


def test_a_refused_token_is_told_why_in_a_fixed_message(api: tuple[httpx.Client, str]) -> None:
    """Never PyJWT's own text: the reviewer's garbage token got "invalid token: Invalid header
    string: 'utf-8' codec can't decode byte 0xb7 ..."."""
    client, _ = api
    garbage = f"{b64(bytes([0xB7, 0xFA, 0x01]))}.e30.c2ln"
    assert call(client, garbage).json()["message"] == "invalid token: malformed"
    assert call(client, "definitely.not.a-jwt").json()["message"] == "invalid token: malformed"


def test_a_rotated_key_is_fetched_once_and_unknown_kids_cannot_flood_the_provider(
    api: tuple[httpx.Client, str], idp: IdentityProvider
) -> None:
    client, _ = api
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    time.sleep(2.1)  # past the refetch interval of earlier fetches
    idp.keys = [*idp.keys, _jwk(new_key, "rsa-2", "RS256")]
    before = idp.fetches
    assert call(client, idp.rs256(kid="rsa-2", key=new_key)).status_code == 200
    assert idp.fetches == before + 1

    # a burst of made-up kids: at most one more fetch within the refetch interval
    before = idp.fetches
    for _ in range(30):
        kid = uuid.uuid4().hex
        assert call(client, idp.rs256(kid=kid)).status_code == 401
    assert idp.fetches - before <= 1
