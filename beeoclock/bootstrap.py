"""Composition helpers shared by the processes: the event-sourced application built from the
settings (event store, personal-data vault)."""

from __future__ import annotations

from beeoclock.settings import Settings
from commands.application import PanelApplication


def panel_application(
    settings: Settings, *, pool_size: int | None = None, database_url: str | None = None
) -> PanelApplication:
    """The application on the configured event store (as `database_url`'s role, if given).
    Without BEEOCLOCK_MASTER_KEY it can publish and migrate but neither store nor read
    personal data."""
    env = settings.eventsourcing_env(database_url)
    if pool_size is not None:
        env["POSTGRES_POOL_SIZE"] = str(pool_size)
    master = settings.master_key_bytes if settings.master_key else None
    return PanelApplication(env=env, master_key=master)
