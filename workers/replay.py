"""`beeoclock replay`: rebuild a read model from the event store, while the APIs keep serving.

1. Bulk: the events of the projection (and tenant) up to the store's last position are read
   entity by entity, each entity's whole history at once, their personal data opened, folded
   with the projection's own code from nothing, and the rows copied into a staging table
   (`customers__rebuild`, or one per tenant): no row is read back, locked or upserted. A big
   whole-table rebuild splits the entities into parts (by a hash of their id), one worker
   process per core. Each batch commits with its part's last entity in `replay_runs`, so an
   interrupted replay resumes where it stopped. A whole-table staging table then gets the
   live table's indexes, and each of its partitions a VACUUM (ANALYZE).
2. The events written since are applied in notification order, version-gated as the
   projector applies them; each batch commits with the run's position.
3. Caught up, one short transaction locks the live table against the projector's writes
   (reads go on), applies the last events, and swaps: the live table is replaced by the
   staging one (whole-table replay), or the tenant's rows are replaced by the rebuilt ones
   (`--tenant`). Readers see the old rows until the commit and the new ones after it; the
   projector, blocked for that moment, then goes on against the new table (its rows are
   version-gated, so nothing applies twice).
4. Cached answers of what was rebuilt are dropped.

`--check` rebuilds the same way into a staging table that is compared with the live one and
dropped: rows missing, extra or different are reported (a live row behind the rebuild is
reported as lag, not as damage, when the projector is still catching up).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import multiprocessing
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
import redis
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from psycopg import sql

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands.application import PanelApplication
from events.base import PanelEvent
from events.customer import CUSTOMER_EVENTS
from events.service import SERVICE_EVENTS
from projections import cache, customers, services
from workers.progress import Progress

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH = 5000
#: a whole-table rebuild of at least this many events runs in worker processes, one per core
PARALLEL_FROM = 20_000
MAX_WORKERS = 4
#: the swap waits at most this long for the live table's lock
LOCK_TIMEOUT = "30s"
#: after a swap, how long a read in flight may still take to store an answer computed from
#: the old table (s); the cached answers are dropped again then (`_drop_cached`)
CACHE_GRACE_S = 1.0
#: how often an index build or VACUUM checks that its replay is still there (ms)
CLIENT_CHECK_MS = 1000
_LOCK_CLASS = 0x7265706C  # advisory lock (class, hash of the run's name): one run at a time


@dataclass(frozen=True)
class Target:
    """A read model a replay can rebuild."""

    name: str
    table: str
    stream: str
    events: tuple[type[PanelEvent], ...]
    project: Callable[..., set[tuple[str, str]]]

    @property
    def topics(self) -> list[str]:
        return [get_topic(cls) for cls in self.events]

    @property
    def personal_topics(self) -> set[str]:
        return {get_topic(cls) for cls in self.events if getattr(cls, "personal_data", ())}


TARGETS = {
    "customers": Target(
        "customers", customers.TABLE, customers.STREAM, CUSTOMER_EVENTS, customers.project
    ),
    "services": Target(
        "services", services.TABLE, services.STREAM, SERVICE_EVENTS, services.project
    ),
}


@dataclass(frozen=True)
class Part:
    """A part of a replay's bulk phase: the entities whose id hashes to k modulo n. Its row
    in `replay_runs` (named `name`) records the last entity it wrote."""

    name: str
    k: int
    n: int


class ReplayError(Exception):
    """The replay can't go on (another one is running, the schema is not as expected)."""


@dataclass
class Report:
    """What a replay did, or what a check found."""

    projection: str
    tenant: str | None
    events: int = 0
    rows: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    different: list[tuple[str, str]] = field(default_factory=list)
    behind: list[tuple[str, str]] = field(default_factory=list)
    #: the position a resumed run had recorded (0: it started afresh); while the bulk phase
    #: is under way, the position that phase reads up to
    resumed_from: int = 0

    @property
    def damaged(self) -> bool:
        return bool(self.missing or self.extra or self.different)

    def as_dict(self, examples: int = 20) -> dict[str, Any]:
        return {
            "projection": self.projection,
            "tenant": self.tenant,
            "events": self.events,
            "rows": self.rows,
            "resumedFrom": self.resumed_from,
            **{
                name: {"count": len(found), "examples": [list(k) for k in found[:examples]]}
                for name, found in (
                    ("missing", self.missing),
                    ("extra", self.extra),
                    ("different", self.different),
                    ("behind", self.behind),
                )
            },
        }


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


_INDEX_DEFINITION = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON (?:ONLY )?\S+ (.*)$")


def _index_shape(definition: str) -> tuple[bool, str]:
    """(unique, `USING ...`) of an index, from `pg_get_indexdef`: what it is, not its name
    or table."""
    match = _INDEX_DEFINITION.match(definition)
    if not match:
        msg = f"unexpected index definition: {definition}"
        raise ReplayError(msg)
    return bool(match[1]), match[2]


class Replay:
    def __init__(
        self,
        settings: Settings,
        target: Target,
        tenant: str | None = None,
        *,
        batch: int = BATCH,
        restart: bool = False,
        progress: bool = True,
        checking: bool = False,
        workers: int | None = None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.tenant = tenant
        self.batch = batch
        self.restart = restart
        self.show_progress = progress
        #: worker processes of a whole-table rebuild (None: one per core, from PARALLEL_FROM
        #: events on; a number given is used whatever the size)
        self.workers = workers or min(os.cpu_count() or 1, MAX_WORKERS)
        self.workers_given = workers is not None
        # a check builds beside a rebuild, never in its place
        purpose = "check" if checking else "rebuild"
        suffix = hashlib.blake2b(tenant.encode(), digest_size=6).hexdigest() if tenant else ""
        self.staging = f"{target.table}__{purpose}{'_' + suffix if suffix else ''}"
        self.run_name = f"{purpose}:{target.name}:{tenant or '*'}"

    # -- public --------------------------------------------------------------------

    def run(self) -> Report:
        """Rebuild and swap in."""
        with self._session() as conn:
            report = self._build(conn, fresh=self.restart)
            with self._application() as app:
                self._swap(conn, app, report)
        self._drop_cached()
        return report

    def check(self) -> Report:
        """Rebuild into a staging table, compare with the live table, drop the staging.

        The last catch-up and the comparison read one snapshot (REPEATABLE READ): a live row
        can then reflect no event the staging table lacks (the projector applies only events
        committed before its own commit), so a projector at work shows as `behind` at worst,
        never as damage. Read committed, a row it applied between the catch-up and the
        comparison was `different` and a customer it created `extra`."""
        with self._session() as conn:
            report = self._build(conn, fresh=True)
            with self._application() as app, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                self._catch_up(conn, app, report)
                self._compare(conn, report)
                self._drop_staging(conn)
                conn.execute("DELETE FROM replay_runs WHERE name = %s", (self.run_name,))
        return report

    # -- building ------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        """The run's connection, holding its advisory lock (one run of a name at a time)."""
        if not self.settings.master_key:
            msg = "replaying needs BEEOCLOCK_MASTER_KEY (to open personal data)"
            raise ReplayError(msg)
        with psycopg.connect(self.settings.database_url) as conn:
            key = int.from_bytes(hashlib.blake2b(self.run_name.encode(), digest_size=4).digest())
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_CLASS, key - 2**31)
            ).fetchone()
            conn.commit()
            if not row or not row[0]:
                msg = f"a replay of {self.run_name} is already running"
                raise ReplayError(msg)
            yield conn

    @contextmanager
    def _application(self) -> Iterator[PanelApplication]:
        """The application (event store, vault: `_session` checked the master key) for
        reading and opening events. Made only where it is used: its connection pool runs
        threads, and the bulk phase's worker processes are forked before any runs (see
        `_start_parts`)."""
        app = panel_application(self.settings, pool_size=2)
        try:
            yield app
        finally:
            app.close()

    def _build(self, conn: psycopg.Connection[Any], *, fresh: bool) -> Report:
        """The staging table, filled up to a recent position: the bulk phase (see `_bulk`),
        then, whole-table, the live table's indexes and statistics. A run found half done
        (its staging table still there) goes on where it stopped, unless `fresh`."""
        report = Report(self.target.name, self.tenant)
        until: int | None
        with conn.transaction():
            found = None if fresh else self._resumable(conn)
            if found is None:
                self._drop_staging(conn)
                self._create_staging(conn)
                until = self._last_position(conn)
                conn.execute(
                    "INSERT INTO replay_runs (name, projection, tenant_id, staging, position, "
                    "bulk_until) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE "
                    "SET staging = EXCLUDED.staging, position = EXCLUDED.position, "
                    "bulk_until = EXCLUDED.bulk_until, started_at = now(), updated_at = now()",
                    (self.run_name, self.target.name, self.tenant, self.staging, until, until),
                )
                parts = self._plan_parts(conn, until)
            else:
                position, until = found
                report.resumed_from = position
                parts = self._parts(conn) if until is not None else []
                if until is not None and not parts:  # the phase had not begun
                    parts = self._plan_parts(conn, until)
        if until is not None:
            self._bulk(conn, report, until, parts)
        if not self.tenant:
            self._index_staging(conn)
        return report

    # -- the bulk phase ------------------------------------------------------------

    def _plan_parts(self, conn: psycopg.Connection[Any], until: int) -> list[Part]:
        """The parts of the bulk phase, recorded (`<run>#k/n`, each with the last entity it
        wrote): one per core for a whole-table rebuild of PARALLEL_FROM events or more (or
        as many as asked for), else one."""
        parts = 1
        if (
            self.workers > 1
            and not self.tenant
            and (self.workers_given or self._count(conn, until=until) >= PARALLEL_FROM)
        ):
            parts = self.workers
        planned = [Part(f"{self.run_name}#{k}/{parts}", k, parts) for k in range(parts)]
        conn.execute("DELETE FROM replay_runs WHERE starts_with(name, %s)", (self.run_name + "#",))
        conn.execute(
            "INSERT INTO replay_runs (name, projection, tenant_id, staging) "
            "SELECT unnest(%s::text[]), %s, %s, %s",
            ([p.name for p in planned], self.target.name, self.tenant, self.staging),
        )
        return planned

    def _parts(self, conn: psycopg.Connection[Any]) -> list[Part]:
        """The recorded parts of a bulk phase under way."""
        found = []
        for (name,) in conn.execute(
            "SELECT name FROM replay_runs WHERE starts_with(name, %s) ORDER BY name",
            (self.run_name + "#",),
        ).fetchall():
            k, _, n = name.rpartition("#")[2].partition("/")
            found.append(Part(name, int(k), int(n)))
        return found

    def _bulk(
        self,
        conn: psycopg.Connection[Any],
        report: Report,
        until: int,
        parts: list[Part],
    ) -> None:
        """Every event up to `until` into the staging table, entity by entity: each part reads
        its entities' whole histories in one ordered pass (an entity in a part of its own, by
        a hash of its id), folds each from nothing and copies the rows in, no row read back,
        locked or upserted. A batch commits with the last entity it wrote, so a part killed
        midway resumes after it. Several parts run in worker processes, one per core."""
        afters = [self._after(conn, p) for p in parts]
        if len(parts) == 1:
            batches = self._bulk_here(parts[0], until)
        else:  # the workers start while this process counts
            batches = self._start_parts(until, parts)
        if any(afters):
            total = sum(
                self._count(conn, until=until, part=p, after=a)
                for p, a in zip(parts, afters, strict=True)
            )
        else:
            total = self._count(conn, until=until)
        conn.commit()
        progress = Progress(f"replay {self.run_name}", total) if self.show_progress else None
        for count, rows in batches:
            report.events += count
            report.rows += rows
            if progress:
                progress.advance(count)
        if progress:
            progress.finish()
        with conn.transaction():
            conn.execute(
                "UPDATE replay_runs SET bulk_until = NULL, updated_at = now() WHERE name = %s",
                (self.run_name,),
            )
            conn.execute(
                "DELETE FROM replay_runs WHERE starts_with(name, %s)", (self.run_name + "#",)
            )

    def _bulk_here(self, part: Part, until: int) -> Iterator[tuple[int, int]]:
        """The bulk phase in this process, in one part."""
        with self._application() as app:
            yield from self._bulk_part(app, part, until)

    def _start_parts(self, until: int, parts: list[Part]) -> Iterator[tuple[int, int]]:
        """A worker process per part, started; the (events, rows) of each batch they commit.

        Forked on Linux when this process runs no other thread: a worker then starts with
        this process's modules already imported, where a spawned one first spends about half
        a second of a core importing them again (see bench/README.md, "Replay"). In the CLI
        no other thread runs here (the application, whose connection pool does, is made
        after the bulk phase); elsewhere (macOS, whose system libraries may run threads, or
        a caller with threads of its own) the workers are spawned. A forked worker uses none
        of this process's connections: it opens its own, and it ends with `os._exit`, so it
        never closes the ones it inherited (nor does psycopg's finalizer, which closes a
        connection only in the process that opened it)."""
        forks = sys.platform == "linux" and threading.active_count() == 1
        context = (
            multiprocessing.get_context("fork") if forks else multiprocessing.get_context("spawn")
        )
        done: Any = context.Queue()
        workers = [
            context.Process(
                target=_bulk_worker,
                args=(
                    self.settings.model_dump(),
                    self.target.name,
                    self.tenant,
                    self.staging,
                    part,
                    until,
                    self.batch,
                    done,
                    os.getpid(),
                ),
                name=f"replay-part-{part.k}",
            )
            for part in parts
        ]
        for worker in workers:
            worker.start()
        return self._collect(workers, done)

    @staticmethod
    def _collect(workers: list[Any], done: Any) -> Iterator[tuple[int, int]]:
        try:
            while any(w.is_alive() for w in workers) or not done.empty():
                with contextlib.suppress(queue.Empty):
                    yield done.get(timeout=0.2)
        finally:
            for worker in workers:
                worker.join()
        failed = [w.name for w in workers if w.exitcode != 0]
        if failed:
            msg = f"replay workers failed: {', '.join(failed)} (run it again to resume)"
            raise ReplayError(msg)

    def _bulk_part(
        self, app: PanelApplication, part: Part, until: int
    ) -> Iterator[tuple[int, int]]:
        """One part of the bulk phase; yields (events, rows) of each batch committed."""
        with _few_collections(), psycopg.connect(self.settings.database_url) as conn:
            after = self._after(conn, part)
            conn.commit()
            batches = self._read_ahead(lambda: self._histories(app, until, part, after))
            for last, events in batches:
                with conn.transaction():
                    with app.keys(), conn.cursor() as cur:
                        changed = self.target.project(
                            cur, events, app.missing_events, self.staging, fresh=True
                        )
                    conn.execute(
                        "UPDATE replay_runs SET bulk_after = %s, updated_at = now() "
                        "WHERE name = %s",
                        (last, part.name),
                    )
                yield len(events), len(changed)

    @staticmethod
    def _after(conn: psycopg.Connection[Any], part: Part) -> str | None:
        row = conn.execute(
            "SELECT bulk_after FROM replay_runs WHERE name = %s", (part.name,)
        ).fetchone()
        return row[0] if row else None

    def _histories(
        self, app: PanelApplication, until: int, part: Part, after: str | None
    ) -> Iterator[tuple[str, list[PanelEvent]]]:
        """The events up to `until` of the part's entities after `after`, ordered by entity
        and version, decoded and opened, in batches of about `batch` events that end where an
        entity's history does: (the batch's last entity, its events)."""
        where, params = self._filter(until=until, part=part, after=after)
        query = sql.SQL(
            "SELECT originator_id, originator_version, topic, state FROM panel_events "
            "WHERE {} ORDER BY originator_id, originator_version"
        ).format(where)
        with psycopg.connect(self.settings.database_url) as conn, conn.transaction():
            # planned for reading it all (a cursor is planned for its first rows: the primary
            # key's order, with the other projections' events read and dropped one by one)
            conn.execute("SET LOCAL cursor_tuple_fraction = 1")
            conn.execute("SET LOCAL work_mem = '64MB'")
            cur = conn.cursor(name="replay_histories")
            cur.execute(query, params)
            pending: list[Any] = []
            while rows := cur.fetchmany(self.batch):
                pending += rows
                # the last entity's history may go on in the next rows: it waits for them
                cut = len(pending)
                while cut and pending[cut - 1][0] == pending[-1][0]:
                    cut -= 1
                if cut:
                    yield pending[cut - 1][0], self._decode(app, pending[:cut])
                    pending = pending[cut:]
            if pending:
                yield pending[-1][0], self._decode(app, pending)

    # -- reading the store ---------------------------------------------------------

    def _resumable(self, conn: psycopg.Connection[Any]) -> tuple[int, int | None] | None:
        """(position, bulk_until) of this run when a half-done one left its staging table."""
        row = conn.execute(
            "SELECT position, bulk_until, to_regclass(staging) IS NOT NULL FROM replay_runs "
            "WHERE name = %s",
            (self.run_name,),
        ).fetchone()
        if row and row[2]:
            log.info("resuming %s from position %s", self.run_name, row[0])
            return int(row[0]), row[1]
        return None

    @staticmethod
    def _last_position(conn: psycopg.Connection[Any]) -> int:
        """The store's last notification: every one before it is committed (the recorder
        numbers events under a table lock, in commit order)."""
        row = conn.execute("SELECT max(notification_id) FROM panel_events").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _position(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            "SELECT position FROM replay_runs WHERE name = %s", (self.run_name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _filter(
        self,
        *,
        since: int | None = None,
        until: int | None = None,
        part: Part | None = None,
        after: str | None = None,
    ) -> tuple[sql.Composable, list[Any]]:
        """The events of this replay's projection (and tenant): after notification `since`,
        up to `until`, of the entities of `part`, after entity `after`."""
        where: list[sql.Composable] = [sql.SQL("topic = ANY(%s)")]
        params: list[Any] = [self.target.topics]
        if since is not None:
            where.append(sql.SQL("notification_id > %s"))
            params.append(since)
        if until is not None:
            where.append(sql.SQL("notification_id <= %s"))
            params.append(until)
        if self.tenant:
            where.append(sql.SQL("starts_with(originator_id, %s)"))
            params.append(f"{self.target.stream}:{self.tenant}:")
        if part and part.n > 1:
            where.append(sql.SQL("(hashtext(originator_id) & 2147483647) %% %s = %s"))
            params += [part.n, part.k]
        if after is not None:
            where.append(sql.SQL("originator_id > %s"))
            params.append(after)
        return sql.SQL(" AND ").join(where), params

    def _count(self, conn: psycopg.Connection[Any], **where: Any) -> int:
        condition, params = self._filter(**where)
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM panel_events WHERE {}").format(condition), params
        ).fetchone()
        return int(row[0]) if row else 0

    def _decode(self, app: PanelApplication, rows: Sequence[Any]) -> list[PanelEvent]:
        """Stored events (originator_id, originator_version, topic, state, ...) decoded, their
        personal data opened (the batch's keys fetched at once)."""
        personal = self.target.personal_topics
        with app.keys():
            assert app.vault is not None
            app.vault.prefetch(app.subjects_of_ids(r[0] for r in rows if r[2] in personal))
            events = [
                app.mapper.to_domain_event(StoredEvent(r[0], r[1], r[2], bytes(r[3]))) for r in rows
            ]
        return [e for e in events if isinstance(e, PanelEvent)]

    def _read(
        self, conn: psycopg.Connection[Any], app: PanelApplication, position: int
    ) -> tuple[int, list[PanelEvent]]:
        """The next batch after `position` in notification order, decoded and opened:
        (its last position, events)."""
        where, params = self._filter(since=position)
        rows = conn.execute(
            sql.SQL(
                "SELECT originator_id, originator_version, topic, state, notification_id "
                "FROM panel_events WHERE {} ORDER BY notification_id LIMIT %s"
            ).format(where),
            [*params, self.batch],
        ).fetchall()
        if not rows:
            return position, []
        return int(rows[-1][4]), self._decode(app, rows)

    def _apply_batch(
        self, conn: psycopg.Connection[Any], app: PanelApplication, report: Report
    ) -> int:
        """Read and apply the next batch after the run's position, in the caller's
        transaction, with the run's new position; returns its size."""
        last, events = self._read(conn, app, self._position(conn))
        if events:
            with app.keys(), conn.cursor() as cur:
                changed = self.target.project(cur, events, app.missing_events, self.staging)
            conn.execute(
                "UPDATE replay_runs SET position = %s, updated_at = now() WHERE name = %s",
                (last, self.run_name),
            )
            report.events += len(events)
            report.rows += len(changed)
        return len(events)

    def _read_ahead(self, produce: Callable[[], Iterator[T]]) -> Iterator[T]:
        """What `produce()` yields, made by a thread of its own one or two items ahead, so
        the store's reads and decoding overlap the staging writes."""
        ready: queue.Queue[tuple[T] | BaseException | None] = queue.Queue(2)
        stop = threading.Event()

        def reader() -> None:
            try:
                for item in produce():
                    if stop.is_set():
                        break
                    ready.put((item,))
                ready.put(None)
            except BaseException as exc:  # handed over to the consumer, which raises it
                ready.put(exc)

        thread = threading.Thread(target=reader, name="replay-reader", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item[0]
        finally:
            stop.set()
            while thread.is_alive():  # let a reader blocked on a full queue finish
                with contextlib.suppress(queue.Empty):
                    ready.get(timeout=0.1)

    def _catch_up(
        self, conn: psycopg.Connection[Any], app: PanelApplication, report: Report
    ) -> None:
        while self._apply_batch(conn, app, report) == self.batch:
            pass

    # -- staging tables ------------------------------------------------------------

    def _drop_staging(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(self.staging)))

    def _create_staging(self, conn: psycopg.Connection[Any]) -> None:
        live, staging = _ident(self.target.table), _ident(self.staging)
        like = sql.SQL("LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE").format(
            live
        )
        if self.tenant:
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(staging, like))
        else:
            conn.execute(
                sql.SQL("CREATE TABLE {} ({}) PARTITION BY HASH (tenant_id)").format(staging, like)
            )
            for name, bound in conn.execute(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
                (self.target.table,),
            ).fetchall():
                part = f"{self.staging}{name.removeprefix(self.target.table)}"
                conn.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} {}").format(
                        _ident(part), staging, sql.SQL(bound)
                    )
                )
            return  # its primary key comes with the other indexes, once the rows are in
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (tenant_id, id)").format(
                staging, _ident(f"{self.staging}_pkey")
            )
        )

    def _index_staging(self, conn: psycopg.Connection[Any]) -> None:
        """The live table's primary key and indexes on the (partitioned) staging table, built
        once the rows are in, which is much faster than keeping them up row by row. Each
        partition's indexes are built on their own, as many at once as there are workers
        (largest partition and dearest index first: one tenant may hold most rows), then the
        staging table's own, which adopt its partitions' instead of building anything. A
        build stopped midway resumes: an index a partition already has is not built again,
        nor one that a killed run's backend is still building (see `_settle_orphans`).

        Each partition is vacuumed and analyzed too, on the same connections, its VACUUM
        queued after every index build: statistics and a visibility map for the new table
        before it goes live (without them the planner guesses a tenant's row count and sorts
        whole tenants for a page, and counts can't be answered from the index alone, until
        autovacuum comes by). The smaller partitions' are done while the largest one's
        dearest index is still being built; that partition's VACUUM comes last and waits for
        its index builds (their locks conflict). The partitioned table itself gets no
        statistics of its own, as the live one never does from autovacuum: a scan of a
        partition is planned with that partition's statistics, and the read API's queries
        name their tenant (analyzing the partitioned table would sample every partition again,
        and PostgreSQL before 18 cannot analyze it without all its partitions)."""
        self._settle_orphans(conn)
        indexes = self._indexes(conn, self.target.table)
        partitions = [
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass ORDER BY pg_relation_size(c.oid) DESC, 1",
                (self.staging,),
            ).fetchall()
        ]
        jobs: queue.SimpleQueue[sql.Composed] = queue.SimpleQueue()
        for partition in partitions:
            built = {(unique, using) for _, _, unique, using in self._indexes(conn, partition)}
            for _, _, unique, using in sorted(indexes, key=lambda i: " gin " not in i[3]):
                if (unique, using) not in built:
                    jobs.put(
                        sql.SQL("CREATE {}INDEX ON {} {}").format(
                            sql.SQL("UNIQUE " if unique else ""), _ident(partition), sql.SQL(using)
                        )
                    )
        for partition in reversed(partitions):
            jobs.put(sql.SQL("VACUUM (ANALYZE) {}").format(_ident(partition)))
        conn.commit()
        self._run_in_parallel(jobs)
        with conn.transaction():
            for name, primary, unique, using in indexes:
                staged = f"{self.staging}{name.removeprefix(self.target.table)}"
                if primary:
                    for partition in partitions:
                        self._adopt_primary_key(conn, partition, (unique, using))
                    if not self._has_primary_key(conn, self.staging):
                        conn.execute(
                            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                                _ident(self.staging),
                                _ident(staged),
                                sql.SQL(self._primary_key_definition(conn)),
                            )
                        )
                    continue
                conn.execute(
                    sql.SQL("CREATE {}INDEX IF NOT EXISTS {} ON {} {}").format(
                        sql.SQL("UNIQUE " if unique else ""),
                        _ident(staged),
                        _ident(self.staging),
                        sql.SQL(using),
                    )
                )

    def _settle_orphans(self, conn: psycopg.Connection[Any]) -> None:
        """Wait until no other session builds an index on (or vacuums) the staging table.

        A killed run's backends go on with the statement they were running until it ends or
        they notice their client is gone (at most `CLIENT_CHECK_MS` later, see
        `_maintenance_connection`; a run from before that setting builds to the end). An
        index under way is not seen until it commits, so a resume that looked at once would
        build the same index beside it. A lock that conflicts with `CREATE INDEX` and
        `VACUUM`, taken and let go, waits for both."""
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = 0")
            conn.execute(
                sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(_ident(self.staging))
            )

    @staticmethod
    def _indexes(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, bool, bool, str]]:
        """(name, primary, unique, `USING ...`) of each index of `table`, its primary key's
        first."""
        return [
            (name, primary, *_index_shape(definition))
            for name, primary, definition in conn.execute(
                "SELECT c.relname, i.indisprimary, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass "
                "ORDER BY i.indisprimary DESC, c.relname",
                (table,),
            ).fetchall()
        ]

    def _has_primary_key(self, conn: psycopg.Connection[Any], table: str) -> bool:
        return any(primary for _, primary, _, _ in self._indexes(conn, table))

    def _primary_key_definition(self, conn: psycopg.Connection[Any]) -> str:
        """`PRIMARY KEY (...)` as the live table has it."""
        row = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'p'",
            (self.target.table,),
        ).fetchone()
        if not row:
            msg = f"{self.target.table} has no primary key"
            raise ReplayError(msg)
        return str(row[0])

    def _adopt_primary_key(
        self, conn: psycopg.Connection[Any], partition: str, shape: tuple[bool, str]
    ) -> None:
        """The partition's primary key, made of the unique index built for it."""
        found = self._indexes(conn, partition)
        if any(primary for _, primary, _, _ in found):
            return
        index = next(name for name, _, *kind in found if tuple(kind) == shape)
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY USING INDEX {}").format(
                _ident(partition), _ident(index)
            )
        )

    def _run_in_parallel(self, statements: queue.SimpleQueue[sql.Composed]) -> None:
        """Run the statements, in the order given, on as many connections as there are
        workers (outside transactions: VACUUM is among them)."""

        def run() -> None:
            with self._maintenance_connection() as conn:
                while True:
                    try:
                        statement = statements.get_nowait()
                    except queue.Empty:
                        return
                    conn.execute(statement)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="replay-index") as pool:
            for done in [pool.submit(run) for _ in range(self.workers)]:
                done.result()

    @contextmanager
    def _maintenance_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit connection for index builds and VACUUM: named for operators
        (`pg_stat_activity`), with no lock timeout (a VACUUM waits for its partition's index
        builds: a timeout set for the role or database would fail it), and one whose
        statement stops once this process is gone: PostgreSQL otherwise goes on building an
        index for a client that was killed, beside the run that resumes it."""
        with psycopg.connect(
            self.settings.database_url, autocommit=True, application_name="beeoclock-replay"
        ) as conn:
            conn.execute("SET lock_timeout = 0")
            try:
                conn.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_MS}")
            except (psycopg.errors.InvalidParameterValue, psycopg.errors.UndefinedObject):
                # before PostgreSQL 14, or a platform without the check
                log.info("this PostgreSQL server cannot check for a lost client while busy")
            yield conn

    def _copy_access(self, conn: psycopg.Connection[Any]) -> None:
        """The live table's grants, row-level security and policies, on the staging table."""
        live, staging = self.target.table, _ident(self.staging)
        for grantee, privilege in conn.execute(
            "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
            "WHERE table_name = %s AND grantee NOT IN (current_user, 'PUBLIC')",
            (live,),
        ).fetchall():
            conn.execute(
                sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privilege), staging, _ident(grantee))
            )
        row = conn.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (live,)
        ).fetchone()
        if row and row[0]:
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(staging))
        for name, command, roles, qual in conn.execute(
            "SELECT policyname, cmd, roles, qual FROM pg_policies WHERE tablename = %s", (live,)
        ).fetchall():
            conn.execute(
                sql.SQL("CREATE POLICY {} ON {} FOR {} TO {} USING ({})").format(
                    _ident(name),
                    staging,
                    sql.SQL(command),
                    sql.SQL(", ").join(_ident(r) for r in roles),
                    sql.SQL(qual),
                )
            )

    # -- swapping and comparing ----------------------------------------------------

    def _swap(self, conn: psycopg.Connection[Any], app: PanelApplication, report: Report) -> None:
        live, staging = _ident(self.target.table), _ident(self.staging)
        # most of the tail without blocking anyone; the last of it under the lock
        self._catch_up(conn, app, report)
        conn.commit()
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(live))
            self._catch_up(conn, app, report)
            if self.tenant:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(live), (self.tenant,)
                )
                conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(live, staging))
                conn.execute(sql.SQL("DROP TABLE {}").format(staging))
            else:
                self._copy_access(conn)
                self._replace_live(conn)
            conn.execute("DELETE FROM replay_runs WHERE name = %s", (self.run_name,))
        log.info(
            "replay %s swapped in: %d events, %d rows", self.run_name, report.events, report.rows
        )

    def _replace_live(self, conn: psycopg.Connection[Any]) -> None:
        """Drop the live table and give the staging one its name, and its children theirs."""
        table = self.target.table
        children = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c WHERE c.oid IN ("
            " SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass"
            " UNION SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass"
            " UNION SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass)",
            (self.staging, self.staging, self.staging),
        ).fetchall()
        conn.execute(sql.SQL("DROP TABLE {}").format(_ident(table)))
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(_ident(self.staging), _ident(table))
        )
        for name, kind in children:
            wanted = f"{table}{name.removeprefix(self.staging)}"
            if name == wanted or not name.startswith(self.staging):
                continue
            if kind == "r":
                statement = "ALTER TABLE {} RENAME TO {}"
            elif name.endswith("_pkey"):
                conn.execute(
                    sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                        _ident(table), _ident(name), _ident(wanted)
                    )
                )
                continue
            else:
                statement = "ALTER INDEX {} RENAME TO {}"
            conn.execute(sql.SQL(statement).format(_ident(name), _ident(wanted)))

    def _compare(self, conn: psycopg.Connection[Any], report: Report) -> None:
        live, staging = _ident(self.target.table), _ident(self.staging)
        tenant_filter = sql.SQL("")
        params: list[Any] = []
        if self.tenant:
            tenant_filter = sql.SQL("WHERE tenant_id = %s")
            params = [self.tenant]
        rows = conn.execute(
            sql.SQL(
                "SELECT tenant_id, id, l.version, s.version FROM "
                "(SELECT * FROM {live} {tf}) l FULL JOIN (SELECT * FROM {staging}) s "
                "USING (tenant_id, id) "
                "WHERE l.id IS NULL OR s.id IS NULL OR to_jsonb(l) IS DISTINCT FROM to_jsonb(s) "
                "ORDER BY tenant_id, id"
            ).format(live=live, staging=staging, tf=tenant_filter),
            params,
        ).fetchall()
        # a tenant whose last write the projector has not applied yet may just be behind
        lagging = {
            tenant
            for (tenant,) in conn.execute(
                "SELECT w.tenant_id FROM written_positions w LEFT JOIN applied_positions a "
                "USING (tenant_id, stream) WHERE w.stream = %s "
                "AND coalesce(a.position, 0) < w.position",
                (self.target.stream,),
            ).fetchall()
        }
        for tenant_id, entity_id, live_version, rebuilt_version in rows:
            key = (tenant_id, entity_id)
            if rebuilt_version is None:
                report.extra.append(key)
            elif (live_version or 0) < rebuilt_version and tenant_id in lagging:
                report.behind.append(key)
            elif live_version is None:
                report.missing.append(key)
            else:
                report.different.append(key)

    def _drop_cached(self) -> None:
        """Cached answers of what was rebuilt go; Redis down (or none configured): they
        expire by their TTL.

        A read that computed its answer from the old table just before the swap may store
        it just after the answers were dropped. The generations that exist are moved on
        first, as the projector and an erasure do (projections/cache.py), so such an answer
        goes under one no read asks for; an entity with no generation yet (not changed for a
        TTL) has none to move, so the answers are dropped once more `CACHE_GRACE_S` later,
        when every read in flight at the swap has stored its answer."""
        if not self.settings.redis_url:
            log.warning("no Redis configured: cached answers expire by their TTL")
            return
        scope = f"{self.tenant or '*'}:{self.target.stream}"
        try:
            client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=2)
            with client:
                generations = list(client.scan_iter(match=f"g:{scope}*", count=1000))
                # as the projector bumps them (one that expired meanwhile gets a TTL again)
                cache.invalidate(client, generations, cache.generation_ttl_s(self.settings))
                for grace_s in (0.0, CACHE_GRACE_S):
                    time.sleep(grace_s)
                    keys = list(client.scan_iter(match=f"v:{scope}:*", count=1000))
                    for start in range(0, len(keys), 500):
                        client.unlink(*keys[start : start + 500])
        except (redis.RedisError, OSError, ValueError) as exc:  # ValueError: a malformed URL
            log.warning("could not drop cached answers (they expire by TTL): %s", exc)


@contextmanager
def _few_collections() -> Iterator[None]:
    """The cyclic garbage collector, mostly out of the bulk phase's way: a batch makes tens
    of thousands of objects (rows, events, states) that reference counting frees and no
    cycle holds, yet they set off a young collection every 700 allocations and a full one,
    walking the whole heap, every few batches. The start-up heap is frozen out of the
    collector and the young generation collected every 50,000 allocations. Measured on the
    bulk phase of 150,000 customers (two worker processes, three interleaved runs each): 6.83 s
    with the defaults, 6.05 s with this, 6.01 s with no collection at all."""
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if not frozen:  # what its process had frozen itself stays frozen
            gc.unfreeze()


def _bulk_worker(
    settings: dict[str, Any],
    target: str,
    tenant: str | None,
    staging: str,
    part: Part,
    until: int,
    batch: int,
    done: Any,
    parent: int,
) -> None:
    """A worker process of `Replay._start_parts`: one part of the bulk phase."""
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    replay = Replay(Settings(**settings), TARGETS[target], tenant, batch=batch, progress=False)
    replay.staging = staging
    app = panel_application(replay.settings, pool_size=2)
    try:
        for counted in replay._bulk_part(app, part, until):
            done.put(counted)
    finally:
        app.close()


def _exit_with(parent: int) -> None:
    """A worker ends as soon as its replay process is gone (killed): it would otherwise write
    on beside the run that resumes the replay."""
    while os.getppid() == parent:
        time.sleep(0.1)
    os._exit(1)
