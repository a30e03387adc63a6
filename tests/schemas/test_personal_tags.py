"""Personal-data tags in the contracts: where they are, that they cost nothing on the wire,
and that a new version cannot drop one silently."""

from __future__ import annotations

import json
from typing import Any

from runstate.schemas.catalog import SchemaCatalog, load_schema_text
from runstate.schemas.compat import check_catalog
from runstate.schemas.personal import PERSONAL, field_paths, personal_fields

#: Free-form payloads and the people named: what the issue asks to be tagged, at least.
EXPECTED = {
    "RunStarted": {"input", "owner"},
    "ApprovalRequested": {"approver", "subject"},
    "ApprovalGranted": {"by", "comment"},
    "ApprovalRejected": {"by", "comment"},
    "StepCompleted": {"output_ref"},
    "StepFailed": {"message"},
    "RunCompleted": {"output_ref"},
    "ModelCalled": {"tags"},
    "RunState": {"input", "owner", "approval.subject", "approval.comment"},
    "StepRetryRequested": {"by", "reason"},
    "ExternalActionResolved": {"by", "reason"},
}


def record(*fields: dict[str, Any], version: int = 1) -> str:
    return json.dumps(
        {"type": "record", "name": "Thing", "namespace": "runstate.test", "fields": list(fields)}
    )


def test_the_payload_fields_of_the_latest_contracts_are_tagged() -> None:
    catalog = SchemaCatalog.from_package()
    for name, expected in EXPECTED.items():
        tagged = personal_fields(catalog.latest(name).definition)
        assert expected <= tagged, (name, expected - tagged)


def test_identifiers_that_route_events_are_not_tagged() -> None:
    catalog = SchemaCatalog.from_package()
    for name in catalog.names():
        tagged = personal_fields(catalog.latest(name).definition)
        assert not tagged & {"event_id", "run_id", "occurred_at", "step", "status"}, name


def test_a_tag_changes_no_fingerprint() -> None:
    plain = {"name": "input", "type": "string"}
    tagged = {**plain, PERSONAL: True}

    a = load_schema_text(record(plain))
    b = load_schema_text(record(tagged))

    assert a.fingerprint == b.fingerprint
    assert personal_fields(b.definition) == {"input"} and not personal_fields(a.definition)


def test_nested_fields_are_found_by_path() -> None:
    approval = {
        "name": "approval",
        "type": [
            "null",
            {
                "type": "record",
                "name": "Approval",
                "fields": [
                    {"name": "subject", "type": "string", PERSONAL: True},
                    {"name": "step", "type": "string"},
                ],
            },
        ],
        "default": None,
    }
    schema = json.loads(record(approval))

    assert field_paths(schema) == {"approval", "approval.subject", "approval.step"}
    assert personal_fields(schema) == {"approval.subject"}


def catalog_of(*texts: str) -> SchemaCatalog:
    return SchemaCatalog(
        load_schema_text(t, version=i, source=f"Thing.v{i}.avsc") for i, t in enumerate(texts, 1)
    )


def test_dropping_a_tag_in_a_later_version_is_a_problem() -> None:
    v1 = record({"name": "input", "type": "string", PERSONAL: True})
    v2 = record({"name": "input", "type": "string"})
    v3 = record({"name": "input", "type": "string", PERSONAL: True})

    report = check_catalog(catalog_of(v1, v2, v3))

    messages = [str(p) for p in report.problems]
    assert len(messages) == 1, messages
    assert "v2" in messages[0] and "input" in messages[0] and "tagged" in messages[0]
    assert not report.ok


def test_adding_a_tag_or_removing_the_field_is_not_a_tag_problem() -> None:
    v1 = record({"name": "note", "type": ["null", "string"], "default": None})
    v2 = record({"name": "note", "type": ["null", "string"], "default": None, PERSONAL: True})
    v3 = record({"name": "other", "type": ["null", "string"], "default": None})

    tagging = check_catalog(catalog_of(v1, v2))
    removing = check_catalog(catalog_of(v2, v3))

    assert tagging.ok, tagging.problems
    assert not any("tagged" in str(p) for p in removing.problems)


def test_the_project_catalog_keeps_its_tags() -> None:
    report = check_catalog(SchemaCatalog.from_package())
    assert report.ok, [str(p) for p in report.problems]
