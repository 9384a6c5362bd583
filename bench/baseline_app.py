"""The baselines a user would pick instead, served by one uvicorn process like the APIs:

- `POST /crud/customer`: plain CRUD with FastAPI + psycopg: the same bearer token checked, the
  body validated by a pydantic model, ONE `INSERT` of one row (unique email and phone per
  tenant by unique indexes), the row answered as JSON; no events, no history.
- `GET /bytes/one` and `GET /bytes/page`: a bare FastAPI endpoint answering pre-serialized
  bytes (the same bytes the read API answers for a customer and for a page), the ceiling of
  any FastAPI read on this machine.

Run as `python -m bench.baseline_app --port P` with BENCH_DATABASE_URL, BENCH_JWT_SECRET and
BENCH_BYTES_DIR (files one.json and page.json) in the environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import jwt
import orjson
from fastapi import FastAPI, Header, HTTPException
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

CREATE = (
    "CREATE TABLE IF NOT EXISTS bench_crud_customers (tenant_id text NOT NULL, id text NOT NULL, "
    "first_name text, last_name text, email text, phone text, "
    "created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id))",
    "CREATE UNIQUE INDEX IF NOT EXISTS bench_crud_email ON bench_crud_customers "
    "(tenant_id, lower(email))",
    "CREATE UNIQUE INDEX IF NOT EXISTS bench_crud_phone ON bench_crud_customers (tenant_id, phone)",
)
_INSERT = (
    "INSERT INTO bench_crud_customers (tenant_id, id, first_name, last_name, email, phone) "
    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING created_at"
)


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(alias="_id", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    firstName: str | None = Field(None, max_length=50)  # noqa: N815
    lastName: str | None = Field(None, max_length=50)  # noqa: N815
    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=32)


def create_app(database_url: str, secret: str, bytes_dir: Path) -> FastAPI:
    one = (bytes_dir / "one.json").read_bytes()
    page = (bytes_dir / "page.json").read_bytes()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url, min_size=2, max_size=10, open=False, kwargs={"autocommit": True}
        )
        await pool.open()
        state["pool"] = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    def tenant_of(authorization: str | None, tenant: str | None) -> str:
        token = (authorization or "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise HTTPException(401) from None
        if not tenant or tenant not in claims.get("tenants", {}):
            raise HTTPException(403)
        return tenant

    @app.post("/crud/customer", status_code=201)
    async def create_customer(
        body: CustomerIn,
        authorization: Annotated[str | None, Header()] = None,
        x_business_tenant_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        tenant = tenant_of(authorization, x_business_tenant_id)
        async with state["pool"].connection() as conn:
            cur = await conn.execute(
                _INSERT,
                (tenant, body.id, body.firstName, body.lastName, body.email, body.phone),
                prepare=True,
            )
            row = await cur.fetchone()
        doc = body.model_dump(by_alias=True) | {"createdAt": row[0].isoformat() if row else None}
        return Response(orjson.dumps(doc), 201, media_type="application/json")

    @app.get("/bytes/one")
    async def bytes_one() -> Response:
        return Response(one, media_type="application/json")

    @app.get("/bytes/page")
    async def bytes_page() -> Response:
        return Response(page, media_type="application/json")

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(
        os.environ["BENCH_DATABASE_URL"],
        os.environ["BENCH_JWT_SECRET"],
        Path(os.environ["BENCH_BYTES_DIR"]),
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
