"""The event-sourced application: the one boundary through which commands reach the store."""

from __future__ import annotations

from functools import cached_property

from eventsourcing.application import Application
from eventsourcing.domain import BaseAggregate
from eventsourcing.postgres import PostgresApplicationRecorder


class PanelApplication(Application[str]):
    """Customers and services of every tenant, in one event store (table `panel_events`).

    One store keeps one global order (the notification log) that the relay publishes.
    """

    name = "Panel"

    def commit(self, *aggregates: BaseAggregate[str]) -> int | None:
        """Save the aggregates' new events in one transaction; returns the position of the last
        one. The same transaction records it as the tenant's latest write (a trigger, see
        projections/migrations/002), which reads wait for (read-your-writes)."""
        recordings = self.save(*aggregates)
        if not recordings:
            return None
        return max(r.notification.id for r in recordings)

    @cached_property
    def uniqueness_key(self) -> bytes:
        """The HMAC key of uniqueness record ids (see commands/uniqueness.py)."""
        recorder = self.recorder
        if not isinstance(recorder, PostgresApplicationRecorder):
            msg = "uniqueness records need the PostgreSQL event store"
            raise TypeError(msg)
        with recorder.datastore.transaction(commit=False) as cur:
            cur.execute("SELECT key FROM panel_keys WHERE name = 'uniqueness'")
            row = cur.fetchone()
        if row is None:
            msg = "the uniqueness key is missing: run `beeoclock migrate`"
            raise RuntimeError(msg)
        return bytes(row["key"])
