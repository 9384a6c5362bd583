"""Paged queries shared by the read models: filters, a stable order (sort key, then id), an
exact total, offsets for shallow pages and keyset cursors for deep ones."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection, sql

from beeoclock.ids import ENTITY_ID
from events.timefmt import parse_iso

#: sort keys whose cursor value is an integer (the rest are instants)
INTEGER_KEYS = frozenset({"order"})


class BadCursor(ValueError):
    """The cursor is malformed or belongs to another order."""


@dataclass(frozen=True)
class PageQuery:
    page: int = 1
    page_size: int = 20
    order_by: str = "updatedAt"
    order_dir: str = "desc"
    phrase: str | None = None
    states: tuple[str, ...] = ()
    updated_since: datetime | None = None
    cursor: str | None = None


@dataclass(frozen=True)
class Page:
    docs: list[str]
    total: int
    next_cursor: str | None

    def to_json(self) -> bytes:
        body = b'{"items":[' + ",".join(self.docs).encode() + b'],"totalSize":'
        body += str(self.total).encode()
        if self.next_cursor:
            body += b',"nextCursor":"' + self.next_cursor.encode() + b'"'
        return body + b"}"


def encode_cursor(order_by: str, order_dir: str, key: datetime | int, entity_id: str) -> str:
    value = key.isoformat() if isinstance(key, datetime) else key
    raw = orjson.dumps([order_by, order_dir, value, entity_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, order_by: str, order_dir: str) -> tuple[datetime | int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        by, direction, value, entity_id = orjson.loads(raw)
        key: datetime | int = parse_iso(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        msg = "cursor is not valid"
        raise BadCursor(msg) from exc
    if (by, direction) != (order_by, order_dir):
        msg = "cursor belongs to another orderBy/orderDir"
        raise BadCursor(msg)
    if not isinstance(entity_id, str) or not ENTITY_ID.fullmatch(entity_id):
        msg = "cursor is not valid"
        raise BadCursor(msg)
    if isinstance(key, int) != (order_by in INTEGER_KEYS):
        msg = "cursor is not valid"
        raise BadCursor(msg)
    return key, entity_id


def like_pattern(phrase: str) -> str:
    escaped = phrase.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def fetch_page(
    conn: AsyncConnection[Any],
    table: str,
    tenant_id: str,
    query: PageQuery,
    sort_columns: dict[str, str],
    phrase_variants: tuple[str, ...] = (),
) -> Page:
    """Rows of `table` (columns tenant_id, id, state, updated_at, search, doc) for a tenant.

    `phrase_variants` are other spellings of the phrase that match too (e.g. its digits)."""
    column = sort_columns.get(query.order_by, sort_columns["updatedAt"])
    order_by = query.order_by if query.order_by in sort_columns else "updatedAt"
    descending = query.order_dir != "asc"
    where: list[sql.Composable] = []
    params: dict[str, Any] = {"tenant": tenant_id}
    if query.states:
        where.append(sql.SQL("state = ANY(%(states)s)"))
        params["states"] = list(query.states)
    if query.updated_since is not None:
        where.append(sql.SQL("updated_at >= %(since)s"))
        params["since"] = query.updated_since
    col = sql.Identifier(column)
    direction = sql.SQL("DESC" if descending else "ASC")
    offset = (query.page - 1) * query.page_size
    after: sql.Composable = sql.SQL("true")
    if query.cursor:
        key, after_id = decode_cursor(query.cursor, order_by, query.order_dir)
        params["ckey"], params["cid"] = key, after_id
        op = sql.SQL("<" if descending else ">")
        after = sql.SQL("({}, id) {} (%(ckey)s, %(cid)s)").format(col, op)
        offset = 0
    params["limit"], params["offset"] = query.page_size, offset
    parts = _Parts(sql.Identifier(table), col, direction, after, where)
    if query.phrase:
        patterns = sorted({like_pattern(p) for p in (query.phrase, *phrase_variants)})
        total, rows = await _phrase_page(conn, table, parts, params, patterns)
    else:
        total, rows = await _count(conn, parts, params), await _page(conn, parts, params)
    next_cursor = None
    if len(rows) == query.page_size and rows:
        last_key, last_id, _ = rows[-1]
        next_cursor = encode_cursor(order_by, query.order_dir, last_key, last_id)
    return Page([doc for _, _, doc in rows], total, next_cursor)


@dataclass(frozen=True)
class _Parts:
    """The pieces of a page's statements: the table, the sort column and direction, the
    cursor's condition and the filters (besides the tenant)."""

    table: sql.Identifier
    col: sql.Identifier
    direction: sql.SQL
    after: sql.Composable
    where: list[sql.Composable]

    def filters(self, *first: sql.Composable) -> sql.Composable:
        return sql.SQL(" AND ").join([*first, *self.where] or [sql.SQL("true")])

    def also(self, condition: sql.Composable) -> _Parts:
        return replace(self, where=[*self.where, condition])


Rows = list[tuple[Any, str, str]]
_TENANT = sql.SQL("tenant_id = %(tenant)s")


async def _count(conn: AsyncConnection[Any], parts: _Parts, params: dict[str, Any]) -> int:
    """The exact total."""
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(parts.table, parts.filters(_TENANT)),
        params,
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _page(conn: AsyncConnection[Any], parts: _Parts, params: dict[str, Any]) -> Rows:
    """The page in the sort index's order: it stops at the page's last row."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT {col}, id, doc FROM {table} WHERE {filters} AND {after} "
            "ORDER BY {col} {dir}, id {dir} LIMIT %(limit)s OFFSET %(offset)s"
        ).format(
            col=parts.col,
            table=parts.table,
            filters=parts.filters(_TENANT),
            after=parts.after,
            dir=parts.direction,
        ),
        params,
    )
    return await cur.fetchall()


#: the function that finds a table's rows matching a phrase (migration 010)
_MATCHES = {"customers": "customer_matches", "services": "service_matches"}
#: pg_trgm can narrow a LIKE only by a run of three word characters (a trigram)
_TRIGRAM = re.compile(r"[^\W_]{3}")
#: up to this many matches, a page is sorted out of them rather than read in index order
SORT_MATCHES_UP_TO = 2000


async def _phrase_page(
    conn: AsyncConnection[Any],
    table: str,
    parts: _Parts,
    params: dict[str, Any],
    patterns: list[str],
) -> tuple[int, Rows]:
    """A phrase's total and page. Row-level security keeps LIKE from the trigram index, so
    the matches are found by `_MATCHES[table]`, which can use it (migration 010), unless no
    pattern has a trigram to look up. Few matches: the page is sorted out of them (the sort
    index would be walked past the tenant's every other row); many: the sort index finds
    the page's rows within its first few."""
    params = params | {f"like{i}": p for i, p in enumerate(patterns)}
    likes = sql.SQL("({})").format(
        sql.SQL(" OR ").join(sql.SQL(f"search LIKE %(like{i})s") for i in range(len(patterns)))
    )
    if not all(_TRIGRAM.search(p) for p in patterns):
        parts = parts.also(likes)
        return await _count(conn, parts, params), await _page(conn, parts, params)
    params["patterns"] = patterns
    matches = sql.SQL("{}(%(patterns)s)").format(sql.Identifier(_MATCHES[table]))
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(matches, parts.filters()), params
    )
    row = await cur.fetchone()
    total = int(row[0]) if row else 0
    if total > SORT_MATCHES_UP_TO:
        return total, await _page(conn, parts.also(likes), params)
    cur = await conn.execute(
        sql.SQL(
            "SELECT m.k, m.id, d.doc FROM (SELECT {col} AS k, id FROM {matches} WHERE {filters} "
            "AND {after} ORDER BY {col} {dir}, id {dir} LIMIT %(limit)s OFFSET %(offset)s) m "
            "JOIN {table} d ON d.tenant_id = %(tenant)s AND d.id = m.id "
            "ORDER BY m.k {dir}, m.id {dir}"
        ).format(
            col=parts.col,
            matches=matches,
            filters=parts.filters(),
            after=parts.after,
            dir=parts.direction,
            table=parts.table,
        ),
        params,
    )
    return total, await cur.fetchall()
