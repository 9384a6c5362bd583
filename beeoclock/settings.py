"""One validated settings object for every process, read from `BEEOCLOCK_*` variables.

Nothing connects to anything here: processes build their dependencies from these values in
their own composition root (`beeoclock.bootstrap`).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_WEAK_SECRETS = {"secret", "changeme", "change-me", "password", "jwt-secret", "dev"}
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{0,100}$")
#: JWT algorithms a deployment may accept (pinned by `jwt_algorithms`).
ALGORITHMS = ("HS256", "RS256", "ES256")
#: What a request is, for rate limiting (see beeoclock/permissions.py).
REQUEST_KINDS = ("read", "write", "upload")
_RATE = re.compile(r"^\s*([0-9]{1,9})\s*/\s*([0-9]{0,6})\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PERIOD_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_PERIOD_S |= {"h": 3600, "hour": 3600}


@dataclass(frozen=True)
class Rate:
    """`count` requests per `period_s` seconds."""

    count: int
    period_s: int

    def __str__(self) -> str:
        return f"{self.count}/{self.period_s}s"


def parse_rate(value: str) -> Rate | None:
    """`100/min`, `30/m`, `5000/h`, `10/15s`; `off` (no limit) gives None."""
    if value.strip().lower() == "off":
        return None
    match = _RATE.fullmatch(value.lower())
    if not match or int(match[1]) == 0:
        msg = f"{value!r} is not a rate such as 100/min, 5000/h or off"
        raise ValueError(msg)
    return Rate(int(match[1]), int(match[2] or 1) * _PERIOD_S[match[3]])


def _words(value: str) -> list[str]:
    return [w.strip() for w in value.split(",") if w.strip()]


class Settings(BaseSettings):
    """Configuration of the panel service; every field maps to `BEEOCLOCK_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="BEEOCLOCK_", extra="ignore", frozen=True)

    database_url: str = Field(
        "",
        description="PostgreSQL URL (postgresql://user:pass@host:port/db). "
        "Empty: `dev` starts an embedded PostgreSQL.",
    )
    kafka_bootstrap_servers: str = Field(
        "", description="Kafka bootstrap servers, host:port[,host:port]. Empty: `dev` starts tansu."
    )
    redis_url: str = Field("", description="Redis URL. Empty: `dev` starts an embedded Redis.")
    jwt_secret: str = Field(
        "", description="HS256 secret for bearer tokens (at least 32 characters)."
    )
    master_key: str = Field(
        "",
        description="The key that wraps each customer's data key (crypto-shredding): 32 random "
        "bytes, base64. Empty: `dev` makes a random one.",
    )
    jwt_algorithms: str = Field(
        "HS256",
        description="Accepted JWT algorithms, comma separated: HS256, RS256, ES256. A token "
        "signed with any other (`none` included) is refused.",
    )
    jwt_public_key: str = Field(
        "",
        description="RS256/ES256: the identity provider's public key, as PEM text or the path "
        "of a PEM file.",
    )
    jwt_jwks_url: str = Field(
        "",
        description="RS256/ES256: the identity provider's JWKS URL; keys are cached and "
        "fetched again (at most every `jwt_jwks_refetch_s`) for an unknown `kid`.",
    )
    jwt_jwks_cache_s: int = Field(
        3600, ge=10, le=86400, description="How long fetched JWKS keys are used."
    )
    jwt_jwks_refetch_s: int = Field(
        30, ge=1, le=3600, description="Least interval between two JWKS fetches."
    )
    jwt_issuer: str = Field("", description="When set, tokens must carry this `iss`.")
    jwt_audience: str = Field(
        "",
        description="When set, tokens must carry this `aud`. Set it with RS256/ES256: without it "
        "tokens the identity provider minted for its other APIs are accepted (a warning at start).",
    )
    jwt_leeway_s: int = Field(
        30, ge=0, le=300, description="Clock skew allowed on `exp`, `nbf` and `iat`."
    )
    jwt_tenants_claim: str = Field(
        "tenants",
        min_length=1,
        max_length=200,
        description="The claim holding `{tenant: [permissions]}` (an identity provider's "
        "namespaced custom claim, e.g. `https://beeoclock.com/tenants`).",
    )
    kafka_topic_prefix: str = Field(
        "beeoclock.", description="Prefix of the Kafka topics (`<prefix>customer`, ...)."
    )
    kafka_partitions: int = Field(6, ge=1, le=1024, description="Partitions per topic created.")
    kafka_replication_factor: int = Field(
        1, ge=1, le=16, description="Replicas per topic created (3 on a production cluster)."
    )
    projector_group: str = Field("beeoclock-projector", description="Kafka consumer group.")
    projector_rebalance_timeout_ms: int = Field(
        5000,
        ge=1000,
        le=300000,
        description="Kafka rebalance timeout (kafka-python's max_poll_interval_ms): a batch must "
        "be applied within it; tansu completes every group join only after it passes.",
    )
    relay_send_timeout_ms: int = Field(
        30000,
        ge=100,
        le=600000,
        description="How long the relay waits for the broker to acknowledge a batch before it "
        "gives up, records nothing, and sends again from its recorded position.",
    )
    relay_round_interval_ms: int = Field(
        10,
        ge=0,
        le=1000,
        description="Least time from the start of one relay round to the next while events "
        "come faster than rounds (a round sent more than one): they go together, as fewer and "
        "larger Kafka batches, instead of one batch per commit. An event alone goes at once; "
        "0: rounds back to back.",
    )
    relay_name: str = Field(
        "relay",
        max_length=64,
        description="Name of the relay's tracked position (the projector reads it to know "
        "when it may doze at rest).",
    )
    consistency_timeout_ms: int = Field(
        3000,
        ge=0,
        le=60000,
        description="How long a read waits for the projections to reach the tenant's last write.",
    )
    cache_entity_ttl_s: int = Field(900, ge=1, description="Redis TTL of a cached entity.")
    cache_page_ttl_s: int = Field(300, ge=1, description="Redis TTL of a cached page.")
    db_pool_size: int = Field(10, ge=1, le=200, description="PostgreSQL pool size per process.")
    log_level: str = Field("INFO", description="Log level of every process.")
    cors_origins: str = Field(
        "",
        description="Origins (scheme://host[:port], exactly as a browser sends them, comma "
        "separated) whose browser pages may call the APIs, e.g. the panel's "
        "`https://panel.example.com`. Empty: no CORS headers at all (same-origin or non-browser "
        "clients only). `*` is refused.",
    )
    read_database_url: str = Field(
        "",
        description="PostgreSQL URL of the read API's read-model queries (a login role that "
        "is a member of `beeoclock_reader`). Empty: `database_url`, narrowed to that role.",
    )
    audit_database_url: str = Field(
        "",
        description="PostgreSQL URL of the read API's event-store reads (history, time travel, "
        "GDPR export): a login role in `beeoclock_auditor`. Empty: `database_url`.",
    )
    rate_limit_customer_read: str = Field(
        "600/min", description="Customer reads per tenant and user (`N/s|min|h`, or `off`)."
    )
    rate_limit_customer_write: str = Field("300/min", description="Customer writes.")
    rate_limit_service_read: str = Field("100/min", description="Service reads.")
    rate_limit_service_write: str = Field("30/min", description="Service writes.")
    rate_limit_media_upload: str = Field("10/min", description="Service media uploads.")
    rate_limit_without_redis: str = Field(
        "read",
        description="Kinds of request (`read`, `write`, `upload`) served without a limit while "
        "Redis is unreachable; the others are refused with 503.",
    )

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: str) -> str:
        if value and (len(value) < 32 or value.lower() in _WEAK_SECRETS):
            msg = "BEEOCLOCK_JWT_SECRET must be at least 32 characters and not a common word"
            raise ValueError(msg)
        return value

    @field_validator("master_key")
    @classmethod
    def _master_key(cls, value: str) -> str:
        if value:
            try:
                key = base64.b64decode(
                    value.strip() + "=" * (-len(value.strip()) % 4), altchars=b"-_", validate=True
                )
            except ValueError:
                key = b""
            if len(key) != 32 or len(set(key)) < 8:
                msg = "BEEOCLOCK_MASTER_KEY must be 32 random bytes in base64"
                raise ValueError(msg)
        return value

    @property
    def master_key_bytes(self) -> bytes:
        value = self.master_key.strip()
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_")

    @field_validator("database_url", "read_database_url", "audit_database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in {"postgresql", "postgres"}:
            msg = "a PostgreSQL URL must start with postgresql://"
            raise ValueError(msg)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            msg = "BEEOCLOCK_REDIS_URL must start with redis://, rediss:// or unix://"
            raise ValueError(msg)
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in filter(None, (s.strip() for s in value.split(","))):
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                msg = f"BEEOCLOCK_KAFKA_BOOTSTRAP_SERVERS entry {server!r} is not host:port"
                raise ValueError(msg)
        return value

    @field_validator("kafka_topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if not _TOPIC_PREFIX.fullmatch(value):
            msg = "BEEOCLOCK_KAFKA_TOPIC_PREFIX may hold letters, digits, '.', '_' and '-' only"
            raise ValueError(msg)
        return value

    @field_validator(
        "rate_limit_customer_read",
        "rate_limit_customer_write",
        "rate_limit_service_read",
        "rate_limit_service_write",
        "rate_limit_media_upload",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("rate_limit_without_redis")
    @classmethod
    def _kinds(cls, value: str) -> str:
        unknown = set(_words(value)) - set(REQUEST_KINDS)
        if unknown:
            msg = f"unknown kinds {sorted(unknown)} (known: {', '.join(REQUEST_KINDS)})"
            raise ValueError(msg)
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in _words(value):
            parts = urlsplit(origin)
            exact = f"{parts.scheme}://{parts.netloc}"
            if (
                origin != exact
                or parts.scheme not in {"http", "https"}
                or not parts.hostname
                or "@" in parts.netloc
                or origin != origin.lower()
            ):
                msg = (
                    f"BEEOCLOCK_CORS_ORIGINS entry {origin!r} is not an origin such as "
                    "https://panel.example.com or http://localhost:4200 (lower case, no path, "
                    "no trailing slash; `*` is never allowed)"
                )
                raise ValueError(msg)
        return value

    @property
    def cors_origin_list(self) -> list[str]:
        return _words(self.cors_origins)

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in {"https", "http"}:
            msg = "BEEOCLOCK_JWT_JWKS_URL must be an https:// URL"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _known_algorithms(self) -> Settings:
        unknown = set(self.algorithms) - set(ALGORITHMS)
        if unknown or not self.algorithms:
            msg = (
                f"BEEOCLOCK_JWT_ALGORITHMS: unsupported {sorted(unknown)} "
                f"(supported: {', '.join(ALGORITHMS)})"
            )
            raise ValueError(msg)
        return self

    @property
    def algorithms(self) -> list[str]:
        return _words(self.jwt_algorithms)

    @property
    def asymmetric_algorithms(self) -> list[str]:
        return [a for a in self.algorithms if a != "HS256"]

    def token_settings_problem(self) -> str | None:
        """Why tokens can't be verified with these settings (checked by the APIs at start)."""
        if "HS256" in self.algorithms and not self.jwt_secret:
            return "BEEOCLOCK_JWT_SECRET is needed for HS256 (BEEOCLOCK_JWT_ALGORITHMS)"
        if self.asymmetric_algorithms and not (self.jwt_public_key or self.jwt_jwks_url):
            return (
                f"BEEOCLOCK_JWT_PUBLIC_KEY or BEEOCLOCK_JWT_JWKS_URL is needed for "
                f"{', '.join(self.asymmetric_algorithms)} (BEEOCLOCK_JWT_ALGORITHMS)"
            )
        return None

    def token_settings_warnings(self) -> list[str]:
        """What is unsafe, though workable, in these token settings (logged by the APIs at
        start)."""
        if self.asymmetric_algorithms and not self.jwt_audience:
            return [
                f"BEEOCLOCK_JWT_AUDIENCE is not set: {', '.join(self.asymmetric_algorithms)} "
                "tokens that the identity provider minted for any other API (or its ID tokens) "
                "are accepted here; set it to this API's audience"
            ]
        return []

    def rate_limit(self, name: str) -> Rate | None:
        """The limit of a class (`customer_read`, ...); None when `off`."""
        value: str = getattr(self, f"rate_limit_{name}")
        return parse_rate(value)

    @property
    def kinds_without_redis(self) -> frozenset[str]:
        return frozenset(_words(self.rate_limit_without_redis))

    def require(self, *names: str) -> None:
        """Fail with one clear message naming every missing setting a process needs."""
        missing = [f"BEEOCLOCK_{n.upper()}" for n in names if not getattr(self, n)]
        if missing:
            msg = f"missing settings: {', '.join(missing)}"
            raise SettingsError(msg)

    @cached_property
    def topic_customer(self) -> str:
        return f"{self.kafka_topic_prefix}customer"

    @cached_property
    def topic_service(self) -> str:
        return f"{self.kafka_topic_prefix}service"

    def eventsourcing_env(self, database_url: str | None = None) -> dict[str, str]:
        """The `eventsourcing` library's settings for the panel application's event store."""
        url = urlsplit(database_url or self.database_url)
        host = url.hostname or ""
        # A unix socket folder may travel as ?host=/path (libpq's convention).
        for part in url.query.split("&"):
            key, _, val = part.partition("=")
            if key == "host" and val:
                host = unquote(val)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": (url.path or "/postgres").lstrip("/") or "postgres",
            "POSTGRES_HOST": host or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_POOL_SIZE": str(self.db_pool_size),
            "POSTGRES_MAX_OVERFLOW": "0",
            "POSTGRES_LOCK_TIMEOUT": "5",
            # no ping before each use (a round trip per command): a connection found broken
            # fails with OperationalError, and the library retries on a fresh one
            "POSTGRES_PRE_PING": "n",
            "ORIGINATOR_ID_TYPE": "text",
            "CREATE_TABLE": "n",
        }


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message says which and why."""


def load_settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        ]
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
