"""What travels on every command besides its data: tenant, actor, request id and time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Meta:
    tenant_id: str
    actor: str
    request_id: str
    at: datetime

    def event_fields(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "actor": self.actor,
            "request_id": self.request_id,
            "timestamp": self.at,
        }
