"""The event-sourced application: the one boundary through which commands reach the store."""

from __future__ import annotations

from collections.abc import Mapping

from eventsourcing.application import Application
from eventsourcing.domain import BaseAggregate
from eventsourcing.postgres import PostgresDatastore

from beeoclock import consistency


class PanelApplication(Application[str]):
    """Customers and services of every tenant, in one event store (table `panel_events`).

    One store keeps one global order (the notification log) that the relay publishes.
    """

    name = "Panel"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)

    @property
    def datastore(self) -> PostgresDatastore:
        datastore: PostgresDatastore = self.factory.datastore  # type: ignore[attr-defined]
        return datastore

    def commit(self, *aggregates: BaseAggregate[str], tenant_id: str, stream: str) -> int | None:
        """Save the aggregates' new events in one transaction and return the position of the
        last one, after recording it as the tenant's latest write (read-your-writes)."""
        recordings = self.save(*aggregates)
        if not recordings:
            return None
        position = max(r.notification.id for r in recordings)
        with self.datastore.get_connection() as conn:
            consistency.record_written(conn, tenant_id, stream, position)
        return position
