"""Dependencies of the write routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from commands.application import PanelApplication


async def get_application(request: Request) -> PanelApplication:
    app: PanelApplication = request.app.state.panel
    return app


ApplicationDep = Annotated[PanelApplication, Depends(get_application)]
