"""One validated settings object for every process, read from `BEEOCLOCK_*` variables.

Nothing connects to anything here: processes build their dependencies from these values in
their own composition root (`beeoclock.bootstrap`).
"""

from __future__ import annotations

import re
from functools import cached_property
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_WEAK_SECRETS = {"secret", "changeme", "change-me", "password", "jwt-secret", "dev"}
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{0,100}$")


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
    jwt_algorithms: str = Field("HS256", description="Accepted JWT algorithms, comma separated.")
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
    relay_name: str = Field(
        "relay", max_length=64, description="Name of the relay's tracked position."
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

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: str) -> str:
        if value and (len(value) < 32 or value.lower() in _WEAK_SECRETS):
            msg = "BEEOCLOCK_JWT_SECRET must be at least 32 characters and not a common word"
            raise ValueError(msg)
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in {"postgresql", "postgres"}:
            msg = "BEEOCLOCK_DATABASE_URL must start with postgresql://"
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
        if not _TOPIC_PREFIX.match(value):
            msg = "BEEOCLOCK_KAFKA_TOPIC_PREFIX may hold letters, digits, '.', '_' and '-' only"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _known_algorithms(self) -> Settings:
        unknown = set(self.algorithms) - {"HS256"}
        if unknown:
            msg = f"BEEOCLOCK_JWT_ALGORITHMS: unsupported {sorted(unknown)} (supported: HS256)"
            raise ValueError(msg)
        return self

    @property
    def algorithms(self) -> list[str]:
        return [a.strip() for a in self.jwt_algorithms.split(",") if a.strip()]

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

    def eventsourcing_env(self) -> dict[str, str]:
        """The `eventsourcing` library's settings for the panel application's event store."""
        url = urlsplit(self.database_url)
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
            "POSTGRES_PRE_PING": "y",
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
