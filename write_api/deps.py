"""Dependencies of the write routes."""

from __future__ import annotations

import secrets
import time
from typing import Annotated

from fastapi import Depends, Request

from commands.application import PanelApplication


def get_application(request: Request) -> PanelApplication:
    app: PanelApplication = request.app.state.panel
    return app


ApplicationDep = Annotated[PanelApplication, Depends(get_application)]


def new_object_id() -> str:
    """A 24-hex id shaped like the client's MongoDB ObjectIds: seconds, then random bytes."""
    return f"{int(time.time()):08x}{secrets.token_hex(8)}"
