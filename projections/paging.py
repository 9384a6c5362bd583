"""Paged queries shared by the read models: filters, a stable order (sort key, then id), an
exact total, offsets for shallow pages and keyset cursors for deep ones."""

from __future__ import annotations

import base64
from dataclasses import dataclass
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
    if not isinstance(entity_id, str) or not ENTITY_ID.match(entity_id):
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
    where: list[sql.Composable] = [sql.SQL("tenant_id = %(tenant)s")]
    params: dict[str, Any] = {"tenant": tenant_id}
    if query.states:
        where.append(sql.SQL("state = ANY(%(states)s)"))
        params["states"] = list(query.states)
    if query.updated_since is not None:
        where.append(sql.SQL("updated_at >= %(since)s"))
        params["since"] = query.updated_since
    if query.phrase:
        likes = sorted({like_pattern(p) for p in (query.phrase, *phrase_variants)})
        where.append(
            sql.SQL("({})").format(
                sql.SQL(" OR ").join(sql.SQL(f"search LIKE %(like{i})s") for i in range(len(likes)))
            )
        )
        params.update({f"like{i}": like for i, like in enumerate(likes)})
    filters = sql.SQL(" AND ").join(where)
    table_id = sql.Identifier(table)
    col = sql.Identifier(column)

    total_cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table_id, filters), params
    )
    total_row = await total_cur.fetchone()
    total = int(total_row[0]) if total_row else 0

    page_filters = filters
    offset = (query.page - 1) * query.page_size
    if query.cursor:
        key, after_id = decode_cursor(query.cursor, order_by, query.order_dir)
        params["ckey"], params["cid"] = key, after_id
        op = sql.SQL("<" if descending else ">")
        page_filters = sql.SQL("{} AND ({}, id) {} (%(ckey)s, %(cid)s)").format(filters, col, op)
        offset = 0
    direction = sql.SQL("DESC" if descending else "ASC")
    params["limit"], params["offset"] = query.page_size, offset
    cur = await conn.execute(
        sql.SQL(
            "SELECT {col}, id, doc FROM {table} WHERE {filters} "
            "ORDER BY {col} {dir}, id {dir} LIMIT %(limit)s OFFSET %(offset)s"
        ).format(col=col, table=table_id, filters=page_filters, dir=direction),
        params,
    )
    rows = await cur.fetchall()
    next_cursor = None
    if len(rows) == query.page_size and rows:
        last_key, last_id, _ = rows[-1]
        next_cursor = encode_cursor(order_by, query.order_dir, last_key, last_id)
    return Page([doc for _, _, doc in rows], total, next_cursor)
