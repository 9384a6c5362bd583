"""Bearer tokens: `{"sub": "<user>", "exp": <unix time>, "tenants": {"<tenant>": [perms]}}`;
the `x-business-tenant-id` header picks one of the token's tenants.

Tokens are verified with the algorithms the settings pin (`jwt_algorithms`): HS256 with the
shared secret (development, tests, a gateway that re-signs), RS256/ES256 with the identity
provider's public key or its JWKS. The algorithm a token names only selects among the pinned
ones, and each algorithm has its own key: an HS256 token is never checked against a public
key (the classic "alg confusion"), and `none` is never accepted. `exp` and a non-empty `sub`
are required; `nbf` and `iat` are honoured with a small leeway; `iss` and `aud` are checked
when configured.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from beeoclock.settings import Settings

log = logging.getLogger(__name__)

TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Tokens larger than this are refused before any parsing (proxies commonly cap a header at
#: 8 KiB; a token that large is a mistake or an attack).
MAX_TOKEN_BYTES = 6 * 1024
#: A JWKS document larger than this is not a key set.
MAX_JWKS_BYTES = 512 * 1024
JWKS_TIMEOUT_S = 5.0
#: verified tokens remembered (and for how long at most)
VERIFIED_TOKENS = 4096
VERIFIED_FOR_S = 60.0

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class Unauthenticated(Exception):
    """401: no valid token. The panel client refreshes its token on 401, so only for this."""


class Forbidden(Exception):
    """403: the tenant is not granted to the token, or a permission is missing."""


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant_id: str
    permissions: frozenset[str]


def _fits(algorithm: str, key: Any) -> bool:
    """Whether a public key can verify an algorithm (RS256: RSA; ES256: EC on P-256)."""
    if algorithm == "RS256":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    if algorithm == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    return False


def load_public_key(value: str) -> PublicKey:
    """A PEM public key given as text or as the path of a PEM file."""
    text = value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()
    key = load_pem_public_key(text.encode())
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        msg = "BEEOCLOCK_JWT_PUBLIC_KEY must be an RSA or EC (P-256) public key"
        raise ValueError(msg)  # noqa: TRY004 (a settings value, not a type)
    return key


class TokenVerifier:
    """Verifies bearer tokens per the settings; keeps the JWKS keys it fetched.

    JWKS keys are fetched on first use, used for `jwt_jwks_cache_s`, and fetched again early
    when a token names an unknown `kid`, at most once per `jwt_jwks_refetch_s` (so a flood of
    made-up `kid`s can't turn into a flood of requests to the identity provider). When a
    refresh fails, the keys already known stay in use.
    """

    def __init__(self, settings: Settings) -> None:
        problem = settings.token_settings_problem()
        if problem:
            raise ValueError(problem)
        self.settings = settings
        self.algorithms = frozenset(settings.algorithms)
        self.static_key = (
            load_public_key(settings.jwt_public_key) if settings.jwt_public_key else None
        )
        self._jwks: dict[str, tuple[str | None, Any]] = {}
        #: token -> (claims, until): a token verified moments ago is not verified again
        self._verified: dict[str, tuple[dict[str, Any], float]] = {}
        self._fetched_at = 0.0
        self._tried_at = -1e9
        self._fetch_lock = threading.Lock()

    # -- keys --------------------------------------------------------------------------

    def _jwks_stale(self) -> bool:
        return time.monotonic() - self._fetched_at > self.settings.jwt_jwks_cache_s

    def _may_fetch(self) -> bool:
        return (
            bool(self.settings.jwt_jwks_url)
            and time.monotonic() - self._tried_at >= self.settings.jwt_jwks_refetch_s
        )

    def fetch_jwks(self) -> None:
        """Fetch the key set (blocking; called off the event loop)."""
        with self._fetch_lock:
            if not self._may_fetch():
                return  # another thread fetched meanwhile
            self._tried_at = time.monotonic()
            try:
                # the URL is the operator's setting, http(s) only (see Settings)
                request = urllib.request.Request(  # noqa: S310
                    self.settings.jwt_jwks_url, headers={"Accept": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=JWKS_TIMEOUT_S) as response:  # noqa: S310
                    document = json.loads(response.read(MAX_JWKS_BYTES + 1)[:MAX_JWKS_BYTES])
                keys = self._usable_keys(document)
            except (OSError, ValueError) as exc:
                log.warning("JWKS fetch failed, keeping %d known keys: %s", len(self._jwks), exc)
                return
            self._jwks = keys
            self._fetched_at = time.monotonic()
            log.info("fetched %d signing keys from the JWKS", len(keys))

    def _usable_keys(self, document: Any) -> dict[str, tuple[str | None, Any]]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            msg = "not a JWKS document"
            raise ValueError(msg)  # noqa: TRY004 (ValueError is what the caller handles)
        keys: dict[str, tuple[str | None, Any]] = {}
        for entry in document["keys"]:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            kid = entry.get("kid")
            if not isinstance(kid, str) or entry.get("kty") not in ("RSA", "EC"):
                continue
            try:
                key = jwt.PyJWK.from_dict(entry).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue
            alg = entry.get("alg") if isinstance(entry.get("alg"), str) else None
            keys[kid] = (alg, key)
        return keys

    def _key(self, header: dict[str, Any]) -> Any | None:
        alg = header["alg"]
        if alg == "HS256":
            return self.settings.jwt_secret or None
        kid = header.get("kid")
        candidates: list[tuple[str | None, Any]] = []
        if isinstance(kid, str) and self.settings.jwt_jwks_url:
            found = self._jwks.get(kid)
            candidates = [found] if found else []
        elif kid is None or not self.settings.jwt_jwks_url:
            if self.static_key is not None:
                candidates = [(None, self.static_key)]
            else:  # no kid: acceptable only if the key set holds one key for the algorithm
                fitting = [c for c in self._jwks.values() if _fits(alg, c[1])]
                candidates = fitting if len(fitting) == 1 else []
        for pinned, key in candidates:
            if (pinned is None or pinned == alg) and _fits(alg, key):
                return key
        return None

    # -- verification ------------------------------------------------------------------

    def _header(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_BYTES:
            msg = "token too large"
            raise Unauthenticated(msg)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _refused(exc) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            msg = "invalid token: signing algorithm not accepted"
            raise Unauthenticated(msg)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            msg = "invalid token: kid must be a string"
            raise Unauthenticated(msg)
        return header

    def _decode(self, token: str, header: dict[str, Any], key: Any) -> dict[str, Any]:
        settings = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[header["alg"]],
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": bool(settings.jwt_audience),
                    "verify_iss": bool(settings.jwt_issuer),
                },
                audience=settings.jwt_audience or None,
                issuer=settings.jwt_issuer or None,
                leeway=settings.jwt_leeway_s,
            )
        except jwt.PyJWTError as exc:
            raise _refused(exc) from None
        if settings.jwt_issuer and "iss" not in claims:
            msg = "invalid token: no issuer"
            raise Unauthenticated(msg)
        tenants = claims.get(settings.jwt_tenants_claim)
        subject = claims.get("sub")
        # an empty subject names nobody: events would record no actor and every such token
        # would share one rate-limit bucket
        if not isinstance(subject, str) or not subject.strip() or not isinstance(tenants, dict):
            msg = f"invalid token: claims 'sub' and '{settings.jwt_tenants_claim}' are required"
            raise Unauthenticated(msg)
        return claims

    def _should_fetch(self, header: dict[str, Any], key: Any) -> bool:
        """Fetch the key set for a key not known, or when the known ones are old."""
        stale = header["alg"] != "HS256" and self._jwks_stale()
        return (key is None or stale) and self._may_fetch()

    def _missing_key(self) -> Unauthenticated:
        return Unauthenticated("invalid token: unknown signing key")

    def claims(self, token: str) -> dict[str, Any]:
        """Verify a token, fetching JWKS keys in this thread if needed (blocking)."""
        header = self._header(token)
        key = self._key(header)
        if self._should_fetch(header, key):
            self.fetch_jwks()
            key = self._key(header)
        if key is None:
            raise self._missing_key()
        return self._decode(token, header, key)

    def _remembered(self, token: str) -> dict[str, Any] | None:
        known = self._verified.get(token)
        if known is None:
            return None
        if time.time() >= known[1]:
            self._verified.pop(token, None)
            return None
        return known[0]

    def _remember(self, token: str, claims: dict[str, Any]) -> dict[str, Any]:
        """Keep a verified token's claims for a short while (never past its expiry), so a
        client's run of requests costs one signature check, not one each."""
        if len(self._verified) >= VERIFIED_TOKENS:
            self._verified.pop(next(iter(self._verified)))
        until = min(time.time() + VERIFIED_FOR_S, float(claims["exp"]) + self.settings.jwt_leeway_s)
        self._verified[token] = (claims, until)
        return claims

    async def claims_async(self, token: str) -> dict[str, Any]:
        """Verify a token on the event loop; a JWKS fetch, if needed, runs in a thread."""
        if (known := self._remembered(token)) is not None:
            return known
        header = self._header(token)
        key = self._key(header)
        if self._should_fetch(header, key):
            await anyio.to_thread.run_sync(self.fetch_jwks)
            key = self._key(header)
        if key is None:
            raise self._missing_key()
        return self._remember(token, self._decode(token, header, key))

    def principal(self, claims: dict[str, Any], tenant_id: str | None) -> Principal:
        if not tenant_id or not TENANT_ID.fullmatch(tenant_id):
            msg = "x-business-tenant-id header is missing or malformed"
            raise Forbidden(msg)
        granted = claims[self.settings.jwt_tenants_claim].get(tenant_id)
        if not isinstance(granted, list):
            msg = "the token does not grant this tenant"
            raise Forbidden(msg)
        return Principal(
            claims["sub"], tenant_id, frozenset(p for p in granted if isinstance(p, str))
        )


#: What a client is told about a token PyJWT refused, most specific class first. PyJWT's own
#: text describes its internals ("Invalid header string: 'utf-8' codec can't decode byte
#: 0xb7 ..."): it goes to the log, and the client gets one of these fixed messages.
_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "invalid token: expired"),
    (jwt.ImmatureSignatureError, "invalid token: not yet valid"),
    (jwt.InvalidSignatureError, "invalid token: signature"),
    (jwt.InvalidAudienceError, "invalid token: audience"),
    (jwt.InvalidIssuerError, "invalid token: issuer"),
    (jwt.DecodeError, "invalid token: malformed"),
    (jwt.InvalidAlgorithmError, "invalid token: signing algorithm not accepted"),
)


def _refused(exc: jwt.PyJWTError) -> Unauthenticated:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        # the claim is one this module requires (exp, sub, iss, aud): a fixed set of names
        message = f"invalid token: claim '{exc.claim}' is missing"
    else:
        fallback = "invalid token: a claim is malformed"
        message = next((m for t, m in _REFUSALS if isinstance(exc, t)), fallback)
    log.info("token refused (%s): %s: %s", message, type(exc).__name__, exc)
    return Unauthenticated(message)


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        msg = "missing bearer token"
        raise Unauthenticated(msg)
    return token.strip()


def authenticate(authorization: str | None, tenant_id: str | None, settings: Settings) -> Principal:
    """Verify a request's token and tenant header (blocking; for tools and tests)."""
    verifier = TokenVerifier(settings)
    return verifier.principal(verifier.claims(bearer_token(authorization)), tenant_id)


def mint_token(secret: str, subject: str, tenants: dict[str, list[str]], ttl_s: int = 3600) -> str:
    """An HS256 token for development and tests (`beeoclock token`)."""
    now = int(time.time())
    claims = {"sub": subject, "iat": now, "exp": now + ttl_s, "tenants": tenants}
    return jwt.encode(claims, secret, algorithm="HS256")
