"""The event-sourced application: the one boundary through which commands reach the store."""

from __future__ import annotations

from eventsourcing.application import Application
from eventsourcing.domain import BaseAggregate


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
