"""An API process hides what it built at start-up from the garbage collector, so that a full
collection during requests walks only the objects requests made."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from beeoclock import app as app_module
from tests.support import offline_settings


def test_objects_alive_once_the_api_is_up_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []

    async def open_nothing(*_: Any, **__: Any) -> None:
        opened.append(object())  # made during start-up: frozen with the rest

    monkeypatch.setattr(app_module, "_open", open_nothing)
    api = app_module.create_app(offline_settings())
    gc.unfreeze()
    assert gc.get_freeze_count() == 0

    async def serve() -> int:
        async with api.router.lifespan_context(api):
            return gc.get_freeze_count()

    try:
        frozen = asyncio.run(serve())
    finally:
        gc.unfreeze()
    assert opened
    assert frozen > 1000  # the modules, the app, its routes and models
