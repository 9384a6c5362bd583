"""Given events / when a command / then events: the service's decisions, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from commands.context import Meta
from commands.errors import Conflict, NotFound, RuleViolation
from commands.lifecycle import next_history
from commands.service import (
    MAX_BANNERS,
    CreateService,
    DeleteService,
    PutServiceBanner,
    RemoveServiceBanner,
    Service,
    SetRequiredResources,
    UpdateService,
    unique_values,
)
from events import envelope
from events.service import (
    ServiceBannerAdded,
    ServiceBannerRemoved,
    ServiceBannerReplaced,
    ServiceCreated,
    ServiceDetailsChanged,
    ServicePresentationChanged,
    ServiceResourcesSet,
    ServiceState,
    ServiceStateChanged,
)

T0 = datetime(2025, 2, 25, 9, 37, 56, 123000, tzinfo=UTC)
DETAILS: dict[str, Any] = {
    "order": 3,
    "configuration": {"duration": {"durationVersionType": "RANGE"}},
    "prepaymentPolicy": {
        "isRequired": False,
        "isPercentage": False,
        "value": "0",
        "minimalCancelTime": "0",
    },
    "languageVersions": [
        {"title": "Haircut", "description": "", "language": "pl", "active": 1},
    ],
    "durationVersions": [
        {
            "breakInSeconds": 0,
            "durationInSeconds": 1800,
            "prices": [{"price": 60, "currency": "PLN", "preferredLanguages": []}],
        }
    ],
    "schedules": [],
}
IMAGE = {
    "sha256": "a" * 64,
    "contentType": "image/png",
    "format": "png",
    "width": 10,
    "height": 20,
    "size": 123,
}


def meta(at: datetime = T0, request_id: str = "req-1") -> Meta:
    return Meta("tenant-a", "user-1", request_id, at)


def later(seconds: int = 1) -> Meta:
    return meta(T0 + timedelta(seconds=seconds), f"req-{seconds}")


def created(**overrides: Any) -> Service:
    fields: dict[str, Any] = {
        "meta": meta(),
        "service_id": "s1",
        "details": DETAILS,
        "color": "#ff8800",
        "required_resources": [],
        "state": "active",
        "state_history": [],
        "created_at": None,
    }
    fields.update(overrides)
    service = Service.create(CreateService(**fields))
    service.collect_events()
    return service


def update(**overrides: Any) -> UpdateService:
    fields: dict[str, Any] = {
        "meta": later(),
        "service_id": "s1",
        "sent_id": None,
        "details": DETAILS,
        "color": "#ff8800",
        "required_resources": None,
        "state": "active",
        "state_history": [],
        "expected_version": None,
    }
    fields.update(overrides)
    return UpdateService(**fields)


def banner(media_id: str = "m1", image: dict[str, Any] = IMAGE, **kw: Any) -> PutServiceBanner:
    return PutServiceBanner(
        kw.get("meta", later()),
        "s1",
        media_id,
        image,
        kw.get("description"),
        kw.get("expected_version"),
    )


def test_creation_records_one_event_with_tenant_actor_request_and_a_first_state_entry() -> None:
    service = Service.create(
        CreateService(meta(), "s1", DETAILS, "#ff8800", [], "active", [], None)
    )
    [event] = service.collect_events()
    assert isinstance(event, ServiceCreated)
    assert (event.tenant_id, event.actor, event.request_id) == ("tenant-a", "user-1", "req-1")
    assert event.originator_id == "service:tenant-a:s1"
    assert event.state_history == [{"state": "active", "setAt": "2025-02-25T09:37:56.123Z"}]
    assert service.state.created_at == "2025-02-25T09:37:56.123Z"


def test_the_dto_has_the_contract_shape() -> None:
    dto = created().state.to_dto()
    assert dto["object"] == "ServiceDto"
    assert dto["_version"] == "1"
    assert dto["order"] == 3
    assert dto["configuration"] == {
        "object": "ServiceConfigurationDto",
        "duration": {"object": "DurationConfiguration", "durationVersionType": "RANGE"},
    }
    assert dto["prepaymentPolicy"]["object"] == "PrepaymentPolicyDto"
    assert dto["languageVersions"][0]["object"] == "LanguageVersionDto"
    assert dto["durationVersions"][0]["object"] == "DurationVersionDto"
    assert dto["durationVersions"][0]["prices"][0]["object"] == "PriceDto"
    assert dto["presentation"] == {"object": "PresentationDto", "color": "#ff8800", "banners": []}
    assert dto["schedules"] == []
    assert dto["requiredResources"] == []


def test_the_dto_and_its_media_hashes_rebuild_the_state_exactly() -> None:
    service = created(
        required_resources=[{"resourceId": "r1", "quantity": 2}],
        details={
            **DETAILS,
            "schedules": [{"workDays": [1, 2], "startInSeconds": 0, "endInSeconds": 60}],
        },
    )
    service.put_banner(banner("m1", description="front"))
    webp = {**IMAGE, "sha256": "b" * 64, "format": "webp", "contentType": "image/webp"}
    service.put_banner(banner("m2", webp))
    state = service.state
    dto = orjson.loads(orjson.dumps(state.to_dto()))
    assert ServiceState.from_dto("tenant-a", dto, state.media_hashes()) == state


def test_an_unchanged_put_records_nothing() -> None:
    service = created()
    service.update(update())
    assert service.collect_events() == []


def test_a_put_records_what_changed_each_in_its_own_event() -> None:
    service = created()
    details = {**DETAILS, "order": 4}
    service.update(
        update(
            details=details,
            color="#000",
            required_resources=[{"resourceId": "r1", "quantity": 1}],
            state="inactive",
        )
    )
    events = service.collect_events()
    assert [type(e) for e in events] == [
        ServiceDetailsChanged,
        ServicePresentationChanged,
        ServiceResourcesSet,
        ServiceStateChanged,
    ]
    assert service.state.order == 4
    assert service.state.color == "#000"
    assert service.version == 5
    assert [e["state"] for e in service.state.state_history] == ["active", "inactive"]


def test_a_put_without_required_resources_keeps_them() -> None:
    service = created(required_resources=[{"resourceId": "r1", "quantity": 1}])
    service.update(update(required_resources=None))
    assert service.collect_events() == []
    assert service.state.required_resources == [{"resourceId": "r1", "quantity": 1}]


@pytest.mark.parametrize("emptied", ["languageVersions", "durationVersions"])
def test_a_put_cannot_remove_every_language_or_duration_version(emptied: str) -> None:
    service = created()
    with pytest.raises(RuleViolation) as refused:
        service.update(update(details={**DETAILS, emptied: []}))
    assert [e.field for e in refused.value.errors] == [emptied]
    assert service.collect_events() == []


def test_the_id_cannot_change() -> None:
    service = created()
    with pytest.raises(RuleViolation):
        service.update(update(sent_id="other"))
    service.update(update(sent_id="s1"))
    assert service.collect_events() == []


def test_a_stale_expected_version_is_a_conflict_for_every_change() -> None:
    service = created()
    for decide in (
        lambda: service.update(update(expected_version=2)),
        lambda: service.delete(DeleteService(later(), "s1", 2)),
        lambda: service.set_required_resources(SetRequiredResources(later(), "s1", [], 2)),
        lambda: service.put_banner(banner(expected_version=2)),
        lambda: service.remove_banner(RemoveServiceBanner(later(), "s1", "m1", 2)),
    ):
        with pytest.raises(Conflict):
            decide()
    assert service.collect_events() == []
    service.update(update(color="#111", expected_version=1))
    assert len(service.collect_events()) == 1


def test_setting_required_resources_records_the_whole_list_once() -> None:
    service = created()
    resources = [{"resourceId": "r1", "quantity": 2}, {"resourceId": "r2", "quantity": 1}]
    service.set_required_resources(SetRequiredResources(later(), "s1", resources, None))
    [event] = service.collect_events()
    assert isinstance(event, ServiceResourcesSet)
    assert event.required_resources == resources
    service.set_required_resources(SetRequiredResources(later(2), "s1", resources, None))
    assert service.collect_events() == []


def test_delete_makes_the_service_deleted_releases_its_order_and_again_changes_nothing() -> None:
    service = created()
    assert unique_values(service.state) == {"order": "3"}
    service.delete(DeleteService(later(), "s1", None))
    assert service.state.state == "deleted"
    assert unique_values(service.state) == {"order": None}
    assert len(service.collect_events()) == 1
    service.delete(DeleteService(later(2), "s1", None))
    assert service.collect_events() == []


def test_a_service_without_an_order_holds_none() -> None:
    assert unique_values(created(details={**DETAILS, "order": None}).state) == {"order": None}
    assert unique_values(None) == {"order": None}


def test_a_banner_is_added_then_replaced_in_place_keeping_its_id_and_creation() -> None:
    service = created()
    service.put_banner(banner("m1", description="front"))
    service.put_banner(banner("m2"))
    added = service.collect_events()
    assert [type(e) for e in added] == [ServiceBannerAdded, ServiceBannerAdded]
    new_image = {**IMAGE, "sha256": "c" * 64, "width": 99}
    replaced = service.put_banner(banner("m1", new_image, meta=later(5)))
    [event] = service.collect_events()
    assert isinstance(event, ServiceBannerReplaced)
    assert [b["id"] for b in service.state.banners] == ["m1", "m2"]
    assert replaced["image"] == new_image
    assert replaced["version"] == 2
    assert replaced["description"] == "front"  # kept: the replacement sent none
    assert replaced["createdAt"] == "2025-02-25T09:37:57.123Z"
    assert replaced["updatedAt"] == "2025-02-25T09:38:01.123Z"
    dto = service.state.media_dto(replaced)
    assert dto["url"] == f"/api/v1/service-media/s1/m1?v={'c' * 16}"
    assert dto["metadata"] == {
        "object": "MediaMetadataDto",
        "width": 99,
        "height": 20,
        "size": 123,
        "format": "png",
    }


def test_the_same_image_again_for_a_banner_records_nothing() -> None:
    service = created()
    service.put_banner(banner("m1"))
    service.collect_events()
    service.put_banner(banner("m1"))
    assert service.collect_events() == []


def test_a_service_holds_a_bounded_number_of_banners() -> None:
    service = created()
    for i in range(MAX_BANNERS):
        service.put_banner(banner(f"m{i}"))
    service.collect_events()
    with pytest.raises(RuleViolation):
        service.put_banner(banner("one-too-many"))
    service.put_banner(banner("m0", {**IMAGE, "sha256": "d" * 64}))  # replacing still works
    assert len(service.collect_events()) == 1


def test_removing_a_banner_that_is_not_there_is_not_found() -> None:
    """(A removal repeated is answered from the history by the handler, not decided here.)"""
    service = created()
    service.put_banner(banner("m1"))
    service.collect_events()
    removed = service.remove_banner(RemoveServiceBanner(later(), "s1", "m1", None))
    assert removed["id"] == "m1"
    assert removed["updatedAt"] == service.state.updated_at  # its last change, the removal
    [event] = service.collect_events()
    assert isinstance(event, ServiceBannerRemoved)
    assert service.state.banners == []
    with pytest.raises(NotFound):
        service.remove_banner(RemoveServiceBanner(later(), "s1", "m1", None))


def test_a_put_never_touches_banners() -> None:
    service = created()
    service.put_banner(banner("m1"))
    service.update(update(color="#123456"))
    assert [b["id"] for b in service.state.banners] == ["m1"]


def test_state_history_rules() -> None:
    history = [{"state": "active", "setAt": "x"}]
    assert next_history("active", history, "active", [], T0) == history
    assert next_history("active", history, "archived", [], T0) == [
        *history,
        {"state": "archived", "setAt": "2025-02-25T09:37:56.123Z"},
    ]
    sent = [{"state": "inactive", "setAt": "2020-02-02T00:00:00.5Z"}]
    assert next_history("active", history, "inactive", sent, T0) == sent


def test_every_service_event_survives_the_envelope_unchanged() -> None:
    service = Service.create(
        CreateService(meta(), "s1", DETAILS, "#ff8800", [], "active", [], None)
    )
    service.update(update(details={**DETAILS, "order": None}, color=None, state="archived"))
    service.set_required_resources(
        SetRequiredResources(later(), "s1", [{"resourceId": "r", "quantity": 1}], None)
    )
    service.put_banner(banner("m1"))
    service.put_banner(banner("m1", {**IMAGE, "sha256": "e" * 64}))
    service.remove_banner(RemoveServiceBanner(later(), "s1", "m1", None))
    events = service.collect_events()
    assert len(events) == 8
    for position, event in enumerate(events, 1):
        decoded = envelope.decode(envelope.encode(position, event))
        assert decoded.aggregate_type == "service"
        got, want = dict(vars(decoded.event)), dict(vars(event))
        got.pop("originator_topic", None)
        want.pop("originator_topic", None)
        assert got == want


def test_a_deleted_service_cannot_take_a_banner() -> None:
    service = created()
    service.delete(DeleteService(meta(), "s1", None))
    service.collect_events()
    with pytest.raises(RuleViolation, match="deleted"):
        service.check_banner("m1", None)
