"""Subject hashes: equal data, equal hash; any change, another hash."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstate.agents.approvals import canonical_json, subject_hash

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def test_hash_is_sha256_of_canonical_json() -> None:
    subject = {"limit": 50000, "company": "Acme", "phone": "+77011234567"}
    text = '{"company":"Acme","limit":50000,"phone":"+77011234567"}'
    assert canonical_json(subject) == text
    assert subject_hash(subject) == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_key_order_does_not_matter_but_values_do() -> None:
    a = {"company": "Acme", "limit": 50000}
    b = {"limit": 50000, "company": "Acme"}
    assert subject_hash(a) == subject_hash(b)
    assert subject_hash(a) != subject_hash({**a, "limit": 50001})


def test_non_ascii_and_rich_values_have_one_form() -> None:
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    subject = {"name": "Әлия", "at": at, "amount": Decimal("10.50")}
    assert canonical_json(subject) == (
        '{"amount":"10.50","at":"2025-03-01T12:00:00+00:00","name":"Әлия"}'
    )


def test_values_without_a_canonical_form_are_refused() -> None:
    with pytest.raises(TypeError):
        subject_hash({"x": object()})
    with pytest.raises(ValueError):
        subject_hash({"x": float("nan")})


@given(json_values)
def test_hash_is_stable_under_a_json_round_trip(value: object) -> None:
    import json

    assert subject_hash(json.loads(canonical_json(value))) == subject_hash(value)
