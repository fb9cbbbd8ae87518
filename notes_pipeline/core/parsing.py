"""Reading untrusted text as a number: one rule for every place that does it."""

from __future__ import annotations

MAX_DIGITS = 19  # an int64 / a Content-Length fits; int() itself refuses > 4,300 digits


def ascii_int(value: object, max_digits: int = MAX_DIGITS) -> int | None:
    """``value`` (a str of ASCII digits ``0-9``, at most ``max_digits`` of them, or a
    non-negative int) as an int; None for anything else — signs, spaces, Unicode digits such
    as ``²`` or ``٣`` (which ``str.isdigit`` accepts and ``int`` refuses or reads), longer
    strings, bools. Never raises."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    if not value or len(value) > max_digits or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def cid_sort_key(cid: str) -> tuple[int, int, str]:
    """Sort key for CIDs: numeric CIDs first, by value; any other key after, by text."""
    number = ascii_int(cid)
    return (0, number, cid) if number is not None else (1, 0, cid)
