"""``core.parsing``: untrusted text read as a number never raises and never misreads."""

import pytest

from notes_pipeline.core.parsing import ascii_int, cid_sort_key
from notes_pipeline.core.resources.mongo import _map_person_id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("007", 7),
        ("9" * 19, int("9" * 19)),
        (42, 42),
        ("9" * 20, None),  # longer than an int64
        ("9" * 5000, None),  # int() itself would raise
        ("²", None),  # str.isdigit() accepts it, int() raises
        ("1①", None),
        ("٣", None),  # int() would read 3
        ("-1", None),
        (" 1", None),
        ("", None),
        (-1, None),
        (True, None),
        (None, None),
        (1.0, None),
        ({"$gt": 1}, None),
    ],
)
def test_ascii_int(value, expected):
    assert ascii_int(value) == expected


def test_cids_sort_numerically_then_by_text_whatever_the_key():
    keys = ["10", "9", "²", "abc", "0010", "٣", "9" * 5000]
    ordered = sorted(keys, key=cid_sort_key)
    assert ordered[:3] == ["9", "0010", "10"]  # equal numbers: by text
    assert set(ordered[3:]) == {"²", "abc", "٣", "9" * 5000}


def test_a_contact_map_key_that_is_not_ascii_digits_is_no_person_id():
    assert _map_person_id("²") is None and _map_person_id("17") == 17
