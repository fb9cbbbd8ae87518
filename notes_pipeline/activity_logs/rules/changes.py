"""ChangesExtractor (SPEC-activity-logs §4.1, [N3], [N24]): ``audited_changes`` → ``changes[]``.

The Rails ``audited`` gem stores a record's changes as YAML written by Psych, with Ruby tags
(``!ruby/object:BigDecimal``, ``!ruby/object:ActiveSupport::TimeWithZone``,
``!ruby/hash:ActiveSupport::HashWithIndifferentAccess``, symbols, ``!binary``…); newer
versions store JSON. This module reads both with PyYAML's *safe* loader (libyaml's
``CSafeLoader`` when available) plus constructors for the Ruby tags that build plain data only:
no Ruby or Python object is ever constructed, and unknown non-Ruby tags are rejected.

Work is bounded before and during parsing, never by time:

1. size: at most ``max_bytes`` (1 MiB) of UTF-8, checked before anything is parsed;
2. an event pre-scan (no composition yet): at most ``max_aliases`` (100) alias nodes, at most
   ``max_depth`` nested collections and a single document, so the composer never recurses
   deeply and never sees an alias bomb — skipped when the characters alone prove all three
   (no ``*``, fewer collection indicators than ``max_depth``, no second document marker),
   as for the gem's usual short maps;
3. while converting to JSON-safe values (the step that copies shared subtrees): at most
   ``max_aliases`` re-expansions of an already expanded collection, no recursive alias, and at
   most ``4 × document nodes + 4096`` output values — the output stays linear in the input.

Every failure is an ``InvalidAuditedChanges`` whose message and ``details`` hold a reason code
and at most a field or tag name — never a YAML value (§10 [N18]).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # §4.1: at most 1 MiB of input
MAX_ALIASES = 100  # §4.1: at most 100 alias expansions
MAX_DEPTH = 100  # ours: nested collections (libyaml itself stops at 1,000)
EXPANSION_FACTOR = 4  # ours: output values ≤ factor × document nodes + slack
EXPANSION_SLACK = 4096
MAX_DECIMAL_PADDING = 1024  # ours: zeros a BigDecimal exponent may add to its digits
_LABEL_MAX = 80  # field and tag names in details are truncated to this

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ACTIONS = ("create", "update", "destroy")

# InvalidAuditedChanges.reason values (codes, safe to log).
MISSING = "missing"
NOT_TEXT = "not_text"
TOO_LARGE = "too_large"
ALIAS_LIMIT = "alias_limit"
DEPTH_LIMIT = "depth_limit"
EXPANSION_LIMIT = "expansion_limit"
RECURSIVE_ALIAS = "recursive_alias"
MULTIPLE_DOCUMENTS = "multiple_documents"
MALFORMED = "malformed"
UNKNOWN_TAG = "unknown_tag"
BAD_VALUE = "bad_value"
NOT_A_MAP = "not_a_map"
NOT_A_PAIR = "update_value_not_pair"
UNSUPPORTED_ACTION = "unsupported_action"

_YAML_TAG = "tag:yaml.org,2002:"
_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_label(name: object) -> str:
    """A field or tag name fit for details and logs: printable ASCII, at most 80 characters."""
    text = name if isinstance(name, str) else type(name).__name__
    cleaned = "".join(ch if " " < ch < "\x7f" else "?" for ch in text[:_LABEL_MAX])
    return cleaned + ("…" if len(text) > _LABEL_MAX else "")


class InvalidAuditedChanges(ValueError):
    """``audited_changes`` cannot be migrated: failure ``invalid_audited_changes`` (§4.1).

    ``reason`` is one of this module's reason codes; ``label`` a field/tag name or an
    exception class (sanitized by ``safe_label``), or None. Never carries a YAML value.
    """

    def __init__(self, reason: str, label: str | None = None) -> None:
        self.reason = reason
        self.label = label
        super().__init__(self.details)

    @property
    def details(self) -> str:
        """``reason=<code>`` plus ``name=<label>`` when there is one (ids/codes only)."""
        return f"reason={self.reason}" + (f" name={self.label}" if self.label else "")


class _Reject(Exception):
    """Internal: raised inside the loader/walker, turned into InvalidAuditedChanges."""

    def __init__(self, reason: str, label: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.label = label


@dataclass(frozen=True)
class YamlLimits:
    """Bounds of the loader (§4.1, [N24]): bytes of UTF-8, alias nodes/expansions, nesting."""

    max_bytes: int = MAX_BYTES
    max_aliases: int = MAX_ALIASES
    max_depth: int = MAX_DEPTH


DEFAULT_LIMITS = YamlLimits()


@dataclass(frozen=True)
class ExtractedChanges:
    """``changes`` (``[{"field", "from", "to"}]`` in YAML key order, JSON-safe values) and the
    unknown ``!ruby/*`` tags dropped on the way, as sorted ``(tag, count)`` pairs (§4.1)."""

    changes: list[dict[str, Any]]
    dropped_tags: tuple[tuple[str, int], ...] = field(default=())


# --- value conversions (§4.1) ------------------------------------------------------------


def iso_utc(value: datetime) -> str:
    """A datetime as ISO-8601 UTC with milliseconds, ``2020-01-01T03:00:00.000Z`` (§4.1).

    Zone-less values are UTC (§4.5); sub-millisecond digits are truncated. Raises ``_Reject``
    when the UTC instant falls outside years 1..9999.
    """
    try:
        utc = value if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise _Reject(BAD_VALUE, "timestamp") from None
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


def plain_decimal(dumped: str) -> str:
    """A Ruby ``BigDecimal#_dump`` (``"18:0.15e4"``) as a plain decimal string (§4.1).

    ``"18:0.15e4"`` → ``"1500"``, ``"18:0.125e1"`` → ``"1.25"``: no exponent, no trailing
    zeros after the point, ``"0"`` for any zero; ``NaN``/``Infinity``/``-Infinity`` stay as
    Ruby spells them. Raises ``_Reject`` when unparsable or when the exponent would add more
    than 1,024 zeros (a bounded output for a bounded input).
    """
    text = dumped.split(":", 1)[1] if ":" in dumped else dumped
    try:
        number = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        raise _Reject(BAD_VALUE, "BigDecimal") from None
    if number.is_nan():
        return "NaN"
    if number.is_infinite():
        return "-Infinity" if number.is_signed() else "Infinity"
    if number.is_zero():
        return "0"
    sign, digit_tuple, exponent = number.as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    if abs(exponent) > len(digits) + MAX_DECIMAL_PADDING:
        raise _Reject(BAD_VALUE, "BigDecimal")
    if exponent >= 0:
        plain = digits + "0" * exponent
    else:
        point = len(digits) + exponent
        plain = f"{digits[:point]}.{digits[point:]}" if point > 0 else f"0.{'0' * -point}{digits}"
    return ("-" if sign else "") + plain


def binary_text(encoded: str) -> str:
    """``!binary`` (§4.1): the decoded text when it is valid UTF-8, else ``encoded`` unchanged.

    Base64 that cannot be decoded at all is kept unchanged too (Psych decodes leniently).
    """
    try:
        return base64.b64decode(encoded.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeError is a ValueError
        return encoded


def ruby_symbol(plain: str) -> str | None:
    """The name of a Psych symbol scalar (``:status`` → ``status``, ``:"a b"`` → ``a b``), or
    None when the plain scalar is not a symbol (§4.1; Psych's ``/^:./`` rule)."""
    if len(plain) < 2 or plain[0] != ":":
        return None
    name = plain[1:]
    if len(name) >= 2 and name[0] in "\"'" and name[-1] == name[0]:
        return name[1:-1]
    return name


def _float_value(value: float) -> float | str:
    """Finite floats stay numbers; NaN/±Infinity (not JSON) become Ruby's ``Float#to_s``."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def utf8_text(text: str) -> str:
    """``text`` with lone surrogates (possible from JSON ``\\ud800`` escapes, not storable in
    BSON) replaced by U+FFFD; valid text is returned as is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text


def json_key(value: Any) -> str:
    """A scalar map key as a JSON object key: strings stay; ``None``/booleans as JSON spells
    them; numbers, dates and timestamps as their §4.1 text. Raises ``_Reject`` otherwise."""
    if isinstance(value, str):
        return utf8_text(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        converted = _float_value(value)
        return converted if isinstance(converted, str) else repr(converted)
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    raise _Reject(BAD_VALUE, "key")


# --- the loader ---------------------------------------------------------------------------


class _AuditedLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader plus plain-data constructors for the tags Psych writes (§4.1)."""

    def __init__(self, stream: str, node_budget: int) -> None:
        super().__init__(stream)
        self.dropped_tags: Counter[str] = Counter()
        self._pair_budget = node_budget

    # merge keys: PyYAML ≥ 6.0.4 de-duplicates merged pairs; bound the work regardless.
    def flatten_mapping(self, node: MappingNode) -> None:
        """PyYAML's merge-key (``<<``) flattening, charged to the pair budget."""
        super().flatten_mapping(node)
        self._pair_budget -= len(node.value)
        if self._pair_budget < 0:
            raise _Reject(EXPANSION_LIMIT)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[str, Any]:
        """A map whose keys become JSON keys as they are read (``json_key``), so ``1`` and
        ``true`` never collide as Python keys would (``1 == True``); collection keys refused."""
        if not isinstance(node, MappingNode):
            raise _Reject(BAD_VALUE, "map")
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = json_key(self.construct_object(key_node, deep=deep))
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_undefined(self, node: Any) -> Any:
        """Any tag without a constructor (``!!python/*``, ``!foo``…) → ``unknown_tag``."""
        raise _Reject(UNKNOWN_TAG, safe_label(node.tag))

    def construct_yaml_str(self, node: ScalarNode) -> str:
        """Strings; a plain ``:name`` scalar is a Psych symbol → ``"name"`` (§4.1)."""
        value = self.construct_scalar(node)
        if not node.style:  # only plain scalars (style None or "") can be Psych symbols
            symbol = ruby_symbol(value)
            if symbol is not None:
                return symbol
        return value

    def construct_yaml_timestamp(self, node: ScalarNode) -> Any:
        """YAML timestamps → datetime/date (formatted later); impossible dates stay text."""
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError):  # e.g. 2020-02-30: Psych keeps the text too
            return self.construct_scalar(node)

    def construct_binary_text(self, node: Any) -> str:
        """``!binary`` / ``!!binary`` → ``binary_text`` (§4.1)."""
        if not isinstance(node, ScalarNode):
            raise _Reject(BAD_VALUE, "binary")
        return binary_text(self.construct_scalar(node))

    def construct_plain_set(self, node: Any) -> Any:
        """``!!set`` → a plain map of its members to null (no Python set)."""
        data: dict[Any, Any] = {}
        yield data
        data.update(self.construct_mapping(node))

    def construct_plain_omap(self, node: Any) -> Any:
        """``!!omap`` → a plain map, in order."""
        data: dict[Any, Any] = {}
        yield data
        for key, value in self._pairs(node):
            data[json_key(key)] = value

    def construct_plain_pairs(self, node: Any) -> Any:
        """``!!pairs`` → a list of ``[key, value]`` lists."""
        data: list[Any] = []
        yield data
        data.extend([key, value] for key, value in self._pairs(node))

    def _pairs(self, node: Any) -> list[tuple[Any, Any]]:
        if not isinstance(node, SequenceNode):
            raise _Reject(BAD_VALUE, "omap")
        pairs = []
        for item in node.value:
            if not isinstance(item, MappingNode) or len(item.value) != 1:
                raise _Reject(BAD_VALUE, "omap")
            key_node, value_node = item.value[0]
            pairs.append((self.construct_object(key_node), self.construct_object(value_node)))
        return pairs

    # --- !ruby/* ---------------------------------------------------------------------------
    def construct_ruby(self, suffix: str, node: Any) -> Any:
        """Dispatch one ``!ruby/<suffix>`` node to its §4.1 conversion."""
        if suffix == "object:BigDecimal":
            if not isinstance(node, ScalarNode):
                raise _Reject(BAD_VALUE, "BigDecimal")
            return plain_decimal(self.construct_scalar(node))
        if suffix == "object:ActiveSupport::TimeWithZone":
            return self._time_with_zone(node)
        if suffix in ("object:DateTime", "object:Time") and isinstance(node, ScalarNode):
            return self._timestamp_scalar(node, suffix)
        if suffix in ("sym", "symbol") and isinstance(node, ScalarNode):
            return self.construct_scalar(node)
        if (suffix == "hash" or suffix.startswith("hash:")) and isinstance(node, MappingNode):
            return self.construct_yaml_map(node)
        if (suffix == "array" or suffix.startswith("array:")) and isinstance(node, SequenceNode):
            return self.construct_yaml_seq(node)
        self.dropped_tags[safe_label("!ruby/" + suffix)] += 1
        if (suffix == "hash-with-ivars" or suffix.startswith("hash-with-ivars:")) and (
            isinstance(node, MappingNode)
        ):
            return self._hash_elements(node)
        return self._plain(node)

    def _plain(self, node: Any) -> Any:
        if isinstance(node, ScalarNode):
            return self.construct_scalar(node)
        if isinstance(node, SequenceNode):
            return self.construct_yaml_seq(node)
        return self.construct_yaml_map(node)

    def _member(self, node: MappingNode, name: str) -> Any:
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == name:
                return value_node
        return None

    def _timestamp_scalar(self, node: ScalarNode, label: str) -> datetime:
        if not isinstance(node.value, str) or not self.timestamp_regexp.match(node.value):
            raise _Reject(BAD_VALUE, label)
        value = self.construct_yaml_timestamp(node)
        if not isinstance(value, datetime):
            raise _Reject(BAD_VALUE, label)
        return value

    def _time_with_zone(self, node: Any) -> datetime:
        # Psych: {utc: <UTC Time>, zone: !ruby/object:ActiveSupport::TimeZone, time: <local>}
        if isinstance(node, MappingNode):
            for name in ("utc", "time"):
                member = self._member(node, name)
                if isinstance(member, ScalarNode):
                    return self._timestamp_scalar(member, "TimeWithZone")
        raise _Reject(BAD_VALUE, "TimeWithZone")

    def _hash_elements(self, node: MappingNode) -> Any:
        # Psych: !ruby/hash-with-ivars {elements: {…}, ivars: {…}}: the hash is `elements`.
        data: dict[Any, Any] = {}
        yield data
        elements = self._member(node, "elements")
        if elements is not None:
            if not isinstance(elements, MappingNode):
                raise _Reject(BAD_VALUE, "hash-with-ivars")
            data.update(self.construct_mapping(elements))


_AuditedLoader.add_constructor(_YAML_TAG + "str", _AuditedLoader.construct_yaml_str)
_AuditedLoader.add_constructor(_YAML_TAG + "timestamp", _AuditedLoader.construct_yaml_timestamp)
_AuditedLoader.add_constructor(_YAML_TAG + "binary", _AuditedLoader.construct_binary_text)
_AuditedLoader.add_constructor("!binary", _AuditedLoader.construct_binary_text)
_AuditedLoader.add_constructor(_YAML_TAG + "set", _AuditedLoader.construct_plain_set)
_AuditedLoader.add_constructor(_YAML_TAG + "omap", _AuditedLoader.construct_plain_omap)
_AuditedLoader.add_constructor(_YAML_TAG + "pairs", _AuditedLoader.construct_plain_pairs)
_AuditedLoader.add_constructor(None, _AuditedLoader.construct_undefined)
_AuditedLoader.add_multi_constructor("!ruby/", _AuditedLoader.construct_ruby)


def _prescan(text: str, limits: YamlLimits) -> int:
    """Walk the parser's events (no composition): return the node count, or raise ``_Reject``
    on too many aliases, too deep a nesting or more than one document."""
    depth = nodes = aliases = documents = 0
    scanner = _BaseLoader(text)
    try:
        while scanner.check_event():
            event = scanner.get_event()
            kind = type(event)
            if kind is ScalarEvent:
                nodes += 1
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                nodes += 1
                depth += 1
                if depth > limits.max_depth:
                    raise _Reject(DEPTH_LIMIT)
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                depth -= 1
            elif kind is AliasEvent:
                nodes += 1
                aliases += 1
                if aliases > limits.max_aliases:
                    raise _Reject(ALIAS_LIMIT)
            elif kind is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Reject(MULTIPLE_DOCUMENTS)
    finally:
        scanner.dispose()
    return nodes


_COLLECTION_INDICATORS = "-[{:?"


def _within_limits_by_text(text: str, limits: YamlLimits) -> bool:
    """True when ``text`` cannot break the pre-scan's bounds, judged from characters alone
    (then the pre-scan, a second parse, is skipped; same outcome):

    * no ``*``: an alias node starts with ``*``, so there is none (and no expansion);
    * fewer of ``- [ { : ?`` than ``max_depth``: every collection needs at least one of its
      own (a block sequence entry ``-``, a flow ``[``/``{``, a mapping key's ``:`` or ``?``),
      so no nesting can be deeper;
    * no ``...`` and no ``---`` other than a leading one: a second document needs one.
    """
    if "*" in text or "..." in text:
        return False
    markers = text.count("---")
    if markers > 1 or (markers == 1 and not text.startswith("---")):
        return False
    indicators = sum(text.count(ch) for ch in _COLLECTION_INDICATORS)
    return indicators < limits.max_depth


class _JsonSafe:
    """Copies constructed data into JSON-safe values, counting re-expanded shared collections
    (alias expansions), output values and depth."""

    def __init__(self, limits: YamlLimits, max_values: int) -> None:
        self.limits = limits
        self.max_values = max_values
        self.values = 0
        self.expansions = 0
        self.expanded: set[int] = set()
        self.open: set[int] = set()

    def value(self, value: Any, depth: int) -> Any:
        """One constructed value → its JSON-safe copy (§4.1 conversions)."""
        self.values += 1
        if self.values > self.max_values:
            raise _Reject(EXPANSION_LIMIT)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return utf8_text(value)
        if isinstance(value, int):
            return value if INT64_MIN <= value <= INT64_MAX else str(value)
        if isinstance(value, float):
            return _float_value(value)
        if isinstance(value, datetime):
            return iso_utc(value)
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, dict | list | tuple):
            return self.collection(value, depth)
        raise _Reject(BAD_VALUE, type(value).__name__)

    def collection(self, value: dict | list | tuple, depth: int) -> Any:
        """A map or list, copied; re-entering a shared one is an alias expansion."""
        if depth >= self.limits.max_depth:
            raise _Reject(DEPTH_LIMIT)
        ident = id(value)
        if ident in self.open:
            raise _Reject(RECURSIVE_ALIAS)
        if ident in self.expanded:
            self.expansions += 1
            if self.expansions > self.limits.max_aliases:
                raise _Reject(ALIAS_LIMIT)
        self.expanded.add(ident)
        self.open.add(ident)
        try:
            if isinstance(value, dict):
                return {json_key(k): self.value(v, depth + 1) for k, v in value.items()}
            return [self.value(item, depth + 1) for item in value]
        finally:
            self.open.discard(ident)


def _json_root(text: str) -> Any:
    """``text`` parsed as JSON when it is a JSON object, else None (§4.1: newer gem versions)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None  # not JSON after all; YAML (a superset of most JSON) gets its turn


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def load_audited_changes(
    text: str | None, limits: YamlLimits = DEFAULT_LIMITS
) -> tuple[dict[str, Any], tuple[tuple[str, int], ...]]:
    """Parse ``audited_changes`` into a JSON-safe map (YAML key order) and the dropped tags.

    Implements the conversions of §4.1 with the bounds of ``limits``. Raises
    ``InvalidAuditedChanges`` — and nothing else — when the text is missing, over the size
    limit, malformed, over a limit, uses an unknown non-Ruby tag, or its root is not a map.
    """
    if text is None:
        raise InvalidAuditedChanges(MISSING)
    if not isinstance(text, str):
        raise InvalidAuditedChanges(NOT_TEXT, type(text).__name__)
    try:
        if len(text) > limits.max_bytes or _utf8_size(text) > limits.max_bytes:
            raise _Reject(TOO_LARGE)
        dropped: Counter[str] = Counter()
        root = _json_root(text)
        if root is not None:
            budget = EXPANSION_FACTOR * len(text) + EXPANSION_SLACK
        else:
            if _within_limits_by_text(text, limits):
                # no alias: the output has at most one value per node, and a node takes at
                # least one character or indicator, so 2 × length + 2 bounds the nodes
                nodes = 2 * len(text) + 2
            else:
                nodes = _prescan(text, limits)
            budget = EXPANSION_FACTOR * nodes + EXPANSION_SLACK
            loader = _AuditedLoader(text, budget)
            try:
                root = loader.get_single_data()
                dropped = loader.dropped_tags
            finally:
                loader.dispose()
        if not isinstance(root, dict):
            raise _Reject(NOT_A_MAP)
        converted = _JsonSafe(limits, budget).value(root, 0)
    except _Reject as reject:
        raise InvalidAuditedChanges(reject.reason, reject.label) from None
    except Exception as exc:  # noqa: BLE001 - parser errors quote the input: keep the class only
        raise InvalidAuditedChanges(MALFORMED, type(exc).__name__) from None
    return converted, tuple(sorted(dropped.items()))


def changes_from_map(data: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The two branches of §4.1 [N3], chosen by ``action`` and never by value shape.

    ``update``: each value must be ``[old, new]`` → ``{field, from: old, to: new}``;
    ``create`` → ``{from: None, to: v}``; ``destroy`` → ``{from: v, to: None}``. Raises
    ``InvalidAuditedChanges`` (``update_value_not_pair`` naming the field, or
    ``unsupported_action``).
    """
    if action == "update":
        changes = []
        for name, value in data.items():
            if not isinstance(value, list) or len(value) != 2:
                raise InvalidAuditedChanges(NOT_A_PAIR, safe_label(name))
            changes.append({"field": name, "from": value[0], "to": value[1]})
        return changes
    if action == "create":
        return [{"field": name, "from": None, "to": value} for name, value in data.items()]
    if action == "destroy":
        return [{"field": name, "from": value, "to": None} for name, value in data.items()]
    raise InvalidAuditedChanges(UNSUPPORTED_ACTION)


def extract_changes(
    text: str | None, action: str, limits: YamlLimits = DEFAULT_LIMITS
) -> ExtractedChanges:
    """ChangesExtractor (§4.1): ``changes[]`` of one audit plus its dropped ``!ruby/*`` tags.

    Raises ``InvalidAuditedChanges`` only (see ``load_audited_changes``/``changes_from_map``).
    """
    if action not in ACTIONS:
        raise InvalidAuditedChanges(UNSUPPORTED_ACTION)
    data, dropped = load_audited_changes(text, limits)
    return ExtractedChanges(changes_from_map(data, action), dropped)


def parse_audited_changes(text: str, action: str) -> list[dict[str, Any]]:
    """``audited_changes`` text → ``[{"field", "from", "to"}, …]`` (§4.1, the public entry).

    ``action`` is ``create``, ``update`` or ``destroy``; values are JSON-safe (strings,
    numbers, booleans, None, lists, string-keyed maps). Raises ``InvalidAuditedChanges`` —
    and nothing else — for any input that cannot be migrated.
    """
    return extract_changes(text, action).changes
