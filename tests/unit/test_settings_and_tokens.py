"""Settings refuse bad values with clear messages; tokens are checked strictly."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable

import jwt
import pytest

from beeoclock.auth import Forbidden, Unauthenticated, authenticate, mint_token
from beeoclock.settings import Settings, SettingsError, load_settings

# the HS512 token below reuses the HS256 secret on purpose (an algorithm not accepted)
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is")

SECRET = "s" * 20 + "-0123456789abcdefghij"


def test_weak_jwt_secret_is_refused_with_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEEOCLOCK_JWT_SECRET", "short")
    with pytest.raises(SettingsError, match="jwt_secret"):
        load_settings()


def test_a_non_postgres_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEEOCLOCK_DATABASE_URL", "mysql://x")
    with pytest.raises(SettingsError, match="postgresql"):
        load_settings()


def test_missing_settings_are_named_together() -> None:
    with pytest.raises(SettingsError, match="BEEOCLOCK_DATABASE_URL, BEEOCLOCK_REDIS_URL"):
        Settings(database_url="", redis_url="").require("database_url", "redis_url")


def test_event_store_settings_follow_the_database_url() -> None:
    env = Settings(database_url="postgresql://u:p%40ss@db.local:6543/panel").eventsourcing_env()
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "db.local",
        "6543",
        "panel",
    )
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("u", "p@ss")
    socket = Settings(
        database_url="postgresql://postgres:@/postgres?host=/tmp/pg"
    ).eventsourcing_env()
    assert socket["POSTGRES_HOST"] == "/tmp/pg"


def settings() -> Settings:
    return Settings(jwt_secret=SECRET)


def test_a_valid_token_grants_its_tenants_permissions() -> None:
    token = mint_token(SECRET, "u1", {"t1": ["READ_CUSTOMER"]})
    principal = authenticate(f"Bearer {token}", "t1", settings())
    assert (principal.subject, principal.tenant_id) == ("u1", "t1")
    assert principal.permissions == {"READ_CUSTOMER"}


@pytest.mark.parametrize(
    "make",
    [
        lambda: "",
        lambda: "Bearer",
        lambda: "Basic abc",
        lambda: "Bearer not.a.jwt",
        lambda: "Bearer " + mint_token("x" * 40, "u1", {"t1": []}),
        lambda: "Bearer " + mint_token(SECRET, "u1", {"t1": []}, ttl_s=-120),
        lambda: "Bearer " + jwt.encode({"sub": "u1", "tenants": {"t1": []}}, SECRET),
        lambda: (
            "Bearer "
            + jwt.encode(
                {"sub": "u1", "exp": time.time() + 60, "tenants": {"t1": []}},
                SECRET,
                algorithm="HS512",
            )
        ),
        lambda: (
            "Bearer "
            + jwt.encode(
                {"sub": "u1", "exp": time.time() + 60, "tenants": {"t1": []}},
                None,
                algorithm="none",
            )
        ),
        lambda: "Bearer " + mint_token(SECRET, "", {"t1": []}),
        lambda: "Bearer " + mint_token(SECRET, "  ", {"t1": []}),
    ],
    ids=[
        "missing",
        "no-token",
        "basic",
        "malformed",
        "other-key",
        "expired",
        "no-exp",
        "other-alg",
        "alg-none",
        "empty-sub",
        "blank-sub",
    ],
)
def test_a_bad_token_is_unauthenticated(make: object) -> None:
    with pytest.raises(Unauthenticated):
        authenticate(make(), "t1", settings())  # type: ignore[operator]


def test_a_tenant_not_in_the_token_is_forbidden() -> None:
    token = mint_token(SECRET, "u1", {"t1": ["READ_CUSTOMER"]})
    with pytest.raises(Forbidden):
        authenticate(f"Bearer {token}", "t2", settings())
    with pytest.raises(Forbidden):
        authenticate(f"Bearer {token}", None, settings())


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    """Verified tokens are remembered (one signature check per client run), never past exp."""
    import asyncio

    from beeoclock.auth import TokenVerifier

    verifier = TokenVerifier(Settings(jwt_secret=SECRET, jwt_leeway_s=0))
    now = int(time.time())
    token = jwt.encode(
        {"sub": "u1", "exp": now + 1, "tenants": {"t1": []}}, SECRET, algorithm="HS256"
    )
    assert asyncio.run(verifier.claims_async(token))["sub"] == "u1"
    assert verifier._remembered(token) is not None
    time.sleep(max(0.0, now + 1 - time.time()) + 0.05)
    with pytest.raises(Unauthenticated):
        asyncio.run(verifier.claims_async(token))


def _garbage_header_token() -> str:
    """The reviewer's token: a header segment that is not UTF-8."""
    head = base64.urlsafe_b64encode(b"\xb7\xfa\x01").decode().rstrip("=")
    return f"{head}.e30.c2ln"


@pytest.mark.parametrize(
    ("make", "message", "logged"),
    [
        (_garbage_header_token, "invalid token: malformed", "utf-8"),
        (lambda: "not.a.jwt", "invalid token: malformed", "Invalid"),
        (lambda: "a.b.c.d", "invalid token: malformed", "DecodeError"),
        (
            lambda: mint_token(SECRET, "u1", {"t1": []}, ttl_s=-120),
            "invalid token: expired",
            "expired",
        ),
        (
            lambda: mint_token("x" * 40, "u1", {"t1": []}),
            "invalid token: signature",
            "Signature verification failed",
        ),
        (
            lambda: jwt.encode({"sub": "u1", "tenants": {"t1": []}}, SECRET),
            "invalid token: claim 'exp' is missing",
            "exp",
        ),
        (
            lambda: jwt.encode(
                {"sub": "u1", "exp": time.time() + 60, "nbf": time.time() + 600, "tenants": {}},
                SECRET,
            ),
            "invalid token: not yet valid",
            "not yet valid",
        ),
    ],
    ids=["non-utf8-header", "not-a-jwt", "bad-padding", "expired", "signature", "no-exp", "nbf"],
)
def test_a_refused_token_gets_a_fixed_message_and_the_library_text_is_only_logged(
    make: Callable[[], str], message: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PyJWT's own text ("Invalid header string: 'utf-8' codec can't decode byte 0xb7...")
    describes its internals, not what the client should do: it goes to the server's log."""
    caplog.set_level(logging.INFO, logger="beeoclock.auth")
    with pytest.raises(Unauthenticated) as refused:
        authenticate(f"Bearer {make()}", "t1", settings())
    assert str(refused.value) == message
    assert logged in caplog.text


def _public_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


@pytest.mark.parametrize(
    ("algorithms", "audience", "warned"),
    [
        ("RS256", "", True),
        ("HS256,ES256", "", True),
        ("RS256", "beeoclock-panel", False),
        ("HS256", "", False),
    ],
)
def test_an_api_verifying_public_key_tokens_without_an_audience_warns_at_start(
    algorithms: str, audience: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Without `aud`, a token the identity provider minted for another of its APIs (with the
    same tenants claim) is accepted here: the API still starts, and says so loudly."""
    from beeoclock.app import create_app
    from tests.support import offline_settings

    settings = offline_settings().model_copy(
        update={
            "jwt_algorithms": algorithms,
            "jwt_public_key": _public_key_pem(),
            "jwt_audience": audience,
        }
    )
    caplog.set_level(logging.WARNING, logger="beeoclock.app")
    create_app(settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("BEEOCLOCK_JWT_AUDIENCE" in w for w in warnings) == warned, warnings
