"""The alternative to relay + Kafka + projector: the `eventsourcing` library's own
`ProjectionRunner`, subscribed to the event store (LISTEN/NOTIFY), folding customer events
into a table of its own (`bench_es_customers`, the same columns and document as the read
model) with its tracking record in the same transaction, one event per transaction, as the
library's projections do.

Run as `python -m bench.es_projection` with the BEEOCLOCK_* settings in the environment: it
starts from the store's current end, prints `ready` and projects until SIGTERM.
"""

from __future__ import annotations

import inspect
import signal
import sys
import threading
from typing import Any

import orjson
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import Environment, get_topic
from psycopg.sql import SQL

TABLE = "bench_es_customers"

_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (tenant_id text NOT NULL, id text NOT NULL, "
    "version integer NOT NULL, state text NOT NULL, updated_at text NOT NULL, "
    "search text NOT NULL, doc text NOT NULL, PRIMARY KEY (tenant_id, id))"
)
_LOAD = f"SELECT doc FROM {TABLE} WHERE tenant_id = %s AND id = %s FOR UPDATE"
_UPSERT = (
    f"INSERT INTO {TABLE} (tenant_id, id, version, state, updated_at, search, doc) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, id) DO UPDATE SET "
    "version = EXCLUDED.version, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at, "
    f"search = EXCLUDED.search, doc = EXCLUDED.doc WHERE {TABLE}.version < EXCLUDED.version"
)


def _search(personal: dict[str, Any]) -> str:
    name = " ".join(v for f in ("firstName", "lastName") if (v := personal.get(f)))
    lines = [name, *(personal.get(f) for f in ("email", "phone", "note"))]
    return "\n".join(v for v in lines if v).lower()


class CustomerView(PostgresTrackingRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.append(SQL(_CREATE))  # type: ignore[arg-type]

    def apply(self, event: Any, tracking: Tracking) -> None:
        from events.customer import CustomerState, evolve

        _, tenant, entity_id = event.originator_id.split(":", 2)
        with self.datastore.transaction(commit=True) as curs:
            state = None
            if event.originator_version > 1:
                curs.execute(_LOAD, (tenant, entity_id))
                row = curs.fetchone()
                if row is not None:
                    state = CustomerState.from_dto(tenant, orjson.loads(row["doc"]))
            new = evolve(state, event)
            curs.execute(
                _UPSERT,
                (
                    new.tenant_id,
                    new.id,
                    new.version,
                    new.state,
                    new.updated_at,
                    _search(new.personal),
                    orjson.dumps(new.to_dto()).decode(),
                ),
                prepare=True,
            )
            self._insert_tracking(curs, tracking)


def _customer_topics() -> tuple[str, ...]:
    from events.customer import CUSTOMER_EVENTS

    return tuple(get_topic(cls) for cls in CUSTOMER_EVENTS)


class BenchCustomers(Projection[CustomerView]):
    name = "bench_es"
    topics = _customer_topics()

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.apply(domain_event, tracking)


def application_class(settings: Any) -> Any:
    """PanelApplication, opening sealed personal data with the master key where the project
    seals it (the runner constructs the application from `env` alone)."""
    from commands.application import PanelApplication

    parameters = inspect.signature(PanelApplication.__init__).parameters
    if "master_key" not in parameters or not getattr(settings, "master_key", ""):
        return PanelApplication
    key = settings.master_key_bytes

    class Sealed(PanelApplication):
        name = PanelApplication.name

        def __init__(self, env: Any = None) -> None:
            super().__init__(env, master_key=key)

    return Sealed


def main() -> None:
    from beeoclock.settings import load_settings
    from commands.application import PanelApplication

    settings = load_settings()
    env: dict[str, str] = dict(settings.eventsourcing_env())
    env["POSTGRES_POOL_SIZE"] = "3"
    env["BENCH_ES_CREATE_TABLE"] = "y"
    # Start from the store's current end: only events written from now on are projected.
    app = PanelApplication(env=env)
    start = app.recorder.max_notification_id() or 0
    app.close()
    view = InfrastructureFactory.construct(
        env=Environment(BenchCustomers.name, env)
    ).tracking_recorder(CustomerView)
    if (view.max_tracking_id(PanelApplication.name) or 0) < start:
        view.insert_tracking(Tracking(PanelApplication.name, start))
    view.datastore.close()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with ProjectionRunner(
        application_class=application_class(settings),
        projection_class=BenchCustomers,
        view_class=CustomerView,
        env=env,
    ) as runner:
        print("ready", flush=True)
        while not stop.is_set():
            runner.run_forever(timeout=0.5)
    sys.exit(0)


if __name__ == "__main__":
    main()
