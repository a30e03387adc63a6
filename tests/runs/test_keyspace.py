"""Key parts: text and times keep their order and never run into the next part."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from runstate.runs.keyspace import (
    decode_text_part,
    entry_prefix,
    head_key,
    index_key,
    millis,
    millis_part,
    prefix_end,
    read_times,
    text_part,
    times_value,
)

#: Text rich in the bytes the scheme uses as separators and end markers.
_NASTY = st.text(alphabet=st.sampled_from(["\x00", "\x01", "\xff", "a", "b", "é", "\U0001f600"]))
_TEXT = _NASTY | st.text()


@given(_TEXT, _TEXT)
def test_text_parts_sort_as_their_utf8_bytes(a: str, b: str) -> None:
    assert (text_part(a) < text_part(b)) == (a.encode() < b.encode())


@given(_TEXT, _TEXT)
def test_a_text_part_is_never_a_prefix_of_another(a: str, b: str) -> None:
    if a != b:
        assert not text_part(b).startswith(text_part(a))
        assert not head_key(b).startswith(head_key(a))
        assert not entry_prefix(b).startswith(entry_prefix(a))


@given(_TEXT, _TEXT, st.binary(max_size=5))
def test_text_parts_decode_back_from_inside_a_key(a: str, b: str, tail: bytes) -> None:
    key = b"x" + text_part(a) + text_part(b) + tail
    first, at = decode_text_part(key, 1)
    second, end = decode_text_part(key, at)
    assert (first, second, key[end:]) == (a, b, tail)


@given(_TEXT, _TEXT, _TEXT)
def test_one_value_of_an_index_is_one_contiguous_range(value: str, run: str, other: str) -> None:
    prefix = index_key("owner", text_part(value), "")[: -len(text_part(""))]
    inside = index_key("owner", text_part(value), run)
    assert prefix <= inside < prefix_end(prefix)
    if other != value:
        outside = index_key("owner", text_part(other), run)
        assert not prefix <= outside < prefix_end(prefix)


_MS = st.integers(-(2**62), 2**62)


@given(_MS, _MS)
def test_time_parts_sort_as_the_times(a: int, b: int) -> None:
    assert (millis_part(a) < millis_part(b)) == (a < b)


@given(st.none() | _MS, _MS)
def test_times_rows_read_back(due: int | None, updated: int) -> None:
    assert read_times(times_value(due, updated)) == (due, updated)


def test_millis_floors_to_the_millisecond() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert millis(epoch + timedelta(microseconds=1999)) == 1
    assert millis(epoch - timedelta(microseconds=1)) == -1
