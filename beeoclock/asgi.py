"""ASGI application factories, for servers that start the API in worker processes of their
own (`beeoclock api --workers N`, or any ASGI server: `uvicorn --factory beeoclock.asgi:api`).
Each reads the settings from the environment, as every process does."""

from __future__ import annotations

from fastapi import FastAPI

from beeoclock import logs
from beeoclock.app import create_app
from beeoclock.settings import load_settings


def _app(*, write: bool, read: bool) -> FastAPI:
    settings = load_settings()
    logs.configure(settings.log_level)
    return create_app(settings, write=write, read=read)


def api() -> FastAPI:
    return _app(write=True, read=True)


def write_api() -> FastAPI:
    return _app(write=True, read=False)


def read_api() -> FastAPI:
    return _app(write=False, read=True)
