"""Body fields every write route shares: the entity's state and state history, and instants
a client may send."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from beeoclock.text import printable
from events.base import EntityState
from events.timefmt import client_instant

State = EntityState
Instant = Annotated[str, Field(max_length=40), AfterValidator(client_instant)]


class StateEntryBody(BaseModel):
    """One `stateHistory` entry; `setAt` is stored verbatim, as the client sent it."""

    model_config = ConfigDict(extra="ignore")
    state: State
    setAt: Annotated[str, Field(max_length=40), AfterValidator(printable)]  # noqa: N815
