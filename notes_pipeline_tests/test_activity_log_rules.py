"""Activity-log pure rules (SPEC-activity-logs §4, §5, §16): no services.

* ChangesExtractor (§4.1): every YAML conversion, both branches, and hostile YAML (alias
  bombs, merge-key bombs, deep nesting, > 1 MiB, recursion, Ruby/Python object tags, unknown
  tags) ending as ``invalid_audited_changes`` for that record. Bounds are proven by the reason
  code that stopped the work and by a traced-memory ceiling — never by time.
* CategoryMapper (§4.2), ContactResolver (§4.3), ActorResolver (§4.4), the §5 document.
* The §16 golden cases the pure rules decide, as one table: audit + lookups → expected plan.
* Fault isolation, no-PII details, the coverage gate's arithmetic, and hypothesis properties
  (``parse_audited_changes`` raises nothing but ``InvalidAuditedChanges``; outputs JSON-safe).
"""

from __future__ import annotations

import json
import traceback
import tracemalloc
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from notes_pipeline.activity_logs import InvalidAuditedChanges, parse_audited_changes
from notes_pipeline.activity_logs.records import (
    DETERMINISTIC_FAILURES,
    RETRYABLE_FAILURES,
    ActivityRunCode,
    CrmAudit,
    FailureCode,
    JobStatus,
    MonitorState,
    PlanEntry,
    PlanOutcome,
    RunCode,
    SkipCode,
)
from notes_pipeline.activity_logs.rules import changes as changes_module
from notes_pipeline.activity_logs.rules import plan as plan_module
from notes_pipeline.activity_logs.rules.actors import (
    DELETED_USER_LABEL,
    ActorCase,
    ActorLookupFailure,
    ActorResolution,
    CrmUser,
    IdentityLookups,
    emails_to_look_up,
    normalize_email,
    resolve_actor,
)
from notes_pipeline.activity_logs.rules.categories import (
    CategoryRules,
    Kind,
    kind_of,
    map_category,
)
from notes_pipeline.activity_logs.rules.changes import (
    ALIAS_LIMIT,
    DEPTH_LIMIT,
    EXPANSION_LIMIT,
    MALFORMED,
    MAX_BYTES,
    MULTIPLE_DOCUMENTS,
    NOT_A_MAP,
    NOT_A_PAIR,
    RECURSIVE_ALIAS,
    TOO_LARGE,
    UNKNOWN_TAG,
    UNSUPPORTED_ACTION,
    YamlLimits,
    extract_changes,
    load_audited_changes,
    plain_decimal,
)
from notes_pipeline.activity_logs.rules.contacts import (
    ContactLookup,
    ContactLookups,
    PersonRef,
    PersonSource,
    SourceIdMatch,
    find_person,
    person_id_from_comment,
    pick_contact,
    resolve_contact,
)
from notes_pipeline.activity_logs.rules.document import (
    SOURCE_TAG,
    audit_created_at,
    external_id,
)
from notes_pipeline.activity_logs.rules.plan import (
    PlanContext,
    PlanLookups,
    PreparedAudit,
    contact_coverage,
    person_ids_to_look_up,
    plan_audit,
    plan_audit_isolated,
    prepare_audit_isolated,
    user_ids_to_look_up,
)
from notes_pipeline.transform.timestamps import InvalidTimestamp, TimestampWindow

WIB = timezone(timedelta(hours=7))
COMPANY = "company-sso-77"
WINDOW = TimestampWindow(datetime(1970, 1, 1), datetime(2030, 1, 1))
DEFAULT_RULES = CategoryRules()
CONFIGURED_RULES = replace(
    DEFAULT_RULES,
    won_stage_ids=frozenset({7}),
    done_task_status_ids=frozenset({3}),
    resolved_ticket_status_ids=frozenset({9}),
)
# PII planted in fixtures: must never reach details, exceptions or tags (§10 [N18])
PII = ("Siti Rahayu", "siti.rahayu@example.test", "+62 812 5555 0101", "Budi Santoso")


def reason_of(text: str | None, action: str = "create", **limits: int) -> str:
    """The ``InvalidAuditedChanges.reason`` of ``text`` (fails the test when it parses)."""
    with pytest.raises(InvalidAuditedChanges) as caught:
        extract_changes(text, action, YamlLimits(**limits) if limits else YamlLimits())
    return caught.value.reason


def changes_of(text: str, action: str = "create") -> list[dict[str, Any]]:
    return parse_audited_changes(text, action)


def only_value(text: str, action: str = "create") -> Any:
    """The single change's new (create) or old (destroy) value."""
    (change,) = changes_of(text, action)
    return change["to"] if action == "create" else change["from"]


# ---------------------------------------------------------------------------------------
# §4.1 ChangesExtractor: the two branches [N3]
# ---------------------------------------------------------------------------------------


def test_update_branch_pairs_become_from_to_in_yaml_key_order():
    text = "---\nzeta:\n- old\n- new\nalpha:\n- 1\n- 2\nmiddle:\n- \n- true\n"
    assert changes_of(text, "update") == [
        {"field": "zeta", "from": "old", "to": "new"},
        {"field": "alpha", "from": 1, "to": 2},
        {"field": "middle", "from": None, "to": True},
    ]


def test_create_and_destroy_branches_take_single_values():
    text = "---\nname: Acme\nsize: 3\n"
    assert changes_of(text, "create") == [
        {"field": "name", "from": None, "to": "Acme"},
        {"field": "size", "from": None, "to": 3},
    ]
    assert changes_of(text, "destroy") == [
        {"field": "name", "from": "Acme", "to": None},
        {"field": "size", "from": 3, "to": None},
    ]


def test_branch_is_chosen_by_action_never_by_value_shape():
    # a created array attribute with two elements stays in the create branch (§16)
    text = "---\ntags:\n- vip\n- lead\n"
    assert changes_of(text, "create") == [{"field": "tags", "from": None, "to": ["vip", "lead"]}]
    assert changes_of(text, "destroy") == [{"field": "tags", "from": ["vip", "lead"], "to": None}]


def test_update_of_an_array_attribute():
    text = "---\ntags:\n- - vip\n  - lead\n- - vip\n"
    assert changes_of(text, "update") == [{"field": "tags", "from": ["vip", "lead"], "to": ["vip"]}]


@pytest.mark.parametrize(
    "text",
    ["status: open\n", "status:\n- a\n", "status:\n- a\n- b\n- c\n", "status: {a: 1, b: 2}\n"],
    ids=["scalar", "one", "three", "map"],
)
def test_update_value_that_is_not_a_pair_is_invalid_naming_the_field(text):
    with pytest.raises(InvalidAuditedChanges) as caught:
        parse_audited_changes(text, "update")
    assert caught.value.reason == NOT_A_PAIR
    assert caught.value.details == "reason=update_value_not_pair name=status"


@pytest.mark.parametrize("action", ["touch", "Update", "", "destroy "])
def test_unknown_action_has_no_branch(action):
    assert reason_of("a: 1\n", action) == UNSUPPORTED_ACTION


def test_empty_map_yields_no_changes():
    assert changes_of("--- {}\n", "update") == []
    assert changes_of("{}", "create") == []


# ---------------------------------------------------------------------------------------
# §4.1 exact value conversions
# ---------------------------------------------------------------------------------------

TWZ = """---
due_at:
- !ruby/object:ActiveSupport::TimeWithZone
  utc: &1 2020-01-01 03:00:00.000000000 Z
  zone: &2 !ruby/object:ActiveSupport::TimeZone
    name: Asia/Jakarta
  time: 2020-01-01 10:00:00.000000000 Z
- !ruby/object:ActiveSupport::TimeWithZone
  utc: 2020-01-02 03:04:05.678901234 Z
  zone: *2
  time: 2020-01-02 10:04:05.678901234 Z
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # BigDecimal → plain decimal string
        ("v: !ruby/object:BigDecimal 18:0.15e4\n", "1500"),
        ("v: !ruby/object:BigDecimal 18:0.125e1\n", "1.25"),
        ("v: !ruby/object:BigDecimal 27:0.1e1\n", "1"),
        ("v: !ruby/object:BigDecimal 18:0.10e2\n", "10"),
        ("v: !ruby/object:BigDecimal 18:-0.5e-2\n", "-0.005"),
        ("v: !ruby/object:BigDecimal 9:0.0\n", "0"),
        (
            "v: !ruby/object:BigDecimal 18:0.123456789012345678901234567890123e3\n",
            "123.456789012345678901234567890123",
        ),
        ("v: !ruby/object:BigDecimal 9:NaN\n", "NaN"),
        ("v: !ruby/object:BigDecimal 9:-Infinity\n", "-Infinity"),
        # plain YAML timestamps, Time (offset), DateTime → ISO-8601 UTC with milliseconds
        ("v: 2020-01-01 10:00:00.000000000 Z\n", "2020-01-01T10:00:00.000Z"),
        ("v: 2020-01-01 10:00:00 +07:00\n", "2020-01-01T03:00:00.000Z"),
        ("v: 2020-01-01 10:00:00.123456789 -05:00\n", "2020-01-01T15:00:00.123Z"),
        ("v: 2020-01-01T10:00:00Z\n", "2020-01-01T10:00:00.000Z"),
        ("v: 2020-01-01 10:00:00\n", "2020-01-01T10:00:00.000Z"),  # no zone: UTC (§4.5)
        (
            "v: !ruby/object:DateTime 2020-01-01 10:00:00.000000000 +07:00\n",
            "2020-01-01T03:00:00.000Z",
        ),
        # Date stays a date
        ("v: 2020-01-01\n", "2020-01-01"),
        # an impossible date stays text (as Psych keeps it)
        ("v: 2020-02-30\n", "2020-02-30"),
        # HashWithIndifferentAccess and any !ruby/hash:* → plain map; !ruby/array:* → list
        (
            "v: !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n  a: 1\n  b: x\n",
            {"a": 1, "b": "x"},
        ),
        ("v: !ruby/hash:Custom::Thing\n  k: v\n", {"k": "v"}),
        ("v: !ruby/array:Custom::List\n- 1\n- two\n", [1, "two"]),
        # symbols → strings (plain, quoted, tagged)
        ("v: :status\n", "status"),
        ('v: :"two words"\n', "two words"),
        ("v: !ruby/symbol open\n", "open"),
        ("v: !ruby/sym open\n", "open"),
        ("v: ':not_a_symbol'\n", ":not_a_symbol"),  # quoted: a string in Psych too
        # !binary → text when valid UTF-8, else the base64 text unchanged
        ("v: !binary |-\n  SGFsbyBkdW5pYSDwn5iA\n", "Halo dunia \U0001f600"),
        ("v: !!binary |-\n  aGVsbG8=\n", "hello"),
        ("v: !binary |-\n  //79\n", "//79"),
        ("v: !binary '%%%not base64'\n", "%%%not base64"),  # undecodable: unchanged
        # ints, floats, booleans and null stay JSON numbers, booleans, null
        ("v: 42\n", 42),
        ("v: -7\n", -7),
        ("v: 3.25\n", 3.25),
        ("v: true\n", True),
        ("v: false\n", False),
        ("v: ~\n", None),
        ("v:\n", None),
        # not JSON numbers: beyond int64 → decimal text, NaN/Infinity → Ruby's spelling (ours)
        ("v: 123456789012345678901234567890\n", "123456789012345678901234567890"),
        ("v: .nan\n", "NaN"),
        ("v: -.inf\n", "-Infinity"),
        # multi-line text, Unicode and emoji
        ("v: |-\n  line one\n  baris dua ✓\n  🎉 done\n", "line one\nbaris dua ✓\n🎉 done"),
        ('v: "caf\\u00e9 \\U0001F600"\n', "café \U0001f600"),
    ],
)
def test_value_conversions(text, expected):
    assert only_value(text) == expected


def test_json_formatted_text_is_parsed():
    # newer audited versions store JSON; 1e3 is a number in JSON but text in YAML 1.1
    assert changes_of('{"name": "Acme", "n": 1e3, "ok": false, "x": null}') == [
        {"field": "name", "from": None, "to": "Acme"},
        {"field": "n", "from": None, "to": 1000.0},
        {"field": "ok", "from": None, "to": False},
        {"field": "x", "from": None, "to": None},
    ]


def test_json_lone_surrogate_escapes_become_replacement_characters():
    text = '{"a\\udc00": ["\\ud800x", "\\ud83d\\ude00"]}'
    assert changes_of(text, "update") == [
        {"field": "a\ufffd", "from": "\ufffdx", "to": "\U0001f600"}
    ]


def test_json_update_and_an_escape_yaml_1_1_rejects():
    text = '{"email": ["a\\/b@example.test", "c@example.test"], "n": [1, 2]}'
    assert changes_of(text, "update") == [
        {"field": "email", "from": "a/b@example.test", "to": "c@example.test"},
        {"field": "n", "from": 1, "to": 2},
    ]


def test_time_with_zone_uses_its_utc_member_with_milliseconds():
    assert changes_of(TWZ, "update") == [
        {"field": "due_at", "from": "2020-01-01T03:00:00.000Z", "to": "2020-01-02T03:04:05.678Z"}
    ]
    # its TimeZone member is not constructed, hence not reported as a dropped tag
    assert extract_changes(TWZ, "update").dropped_tags == ()


def test_time_with_zone_without_utc_falls_back_to_time_member():
    text = "v: !ruby/object:ActiveSupport::TimeWithZone\n  time: 2020-01-01 10:00:00 +07:00\n"
    assert only_value(text) == "2020-01-01T03:00:00.000Z"


def test_symbol_keys_become_field_names_and_map_keys():
    text = "---\n:status:\n- :open\n- :closed\n:meta:\n- :a: 1\n- :a: 2\n"
    assert changes_of(text, "update") == [
        {"field": "status", "from": "open", "to": "closed"},
        {"field": "meta", "from": {"a": 1}, "to": {"a": 2}},
    ]


def test_non_string_keys_become_strings():
    text = "v: {1: a, true: b, ~: c, 2020-01-01: d}\n"
    assert only_value(text) == {"1": "a", "true": "b", "null": "c", "2020-01-01": "d"}


def test_unknown_ruby_tags_keep_plain_data_and_are_counted_per_tag():
    text = (
        "---\n"
        "a: !ruby/object:Crm::Money\n  cents: 150\n  currency: IDR\n"
        "b: !ruby/object:Crm::Money\n  cents: 1\n"
        "c: !ruby/struct:Point\n  x: 1\n"
        "d: !ruby/string:Crm::Label tagged\n"
        "e: !ruby/hash-with-ivars:ActiveSupport::HashWithIndifferentAccess\n"
        "  elements:\n    k: v\n  ivars:\n    :@frozen: true\n"
        "f: !ruby/object:Set\n  hash:\n    x: true\n"
    )
    extracted = extract_changes(text, "create")
    assert [c["to"] for c in extracted.changes] == [
        {"cents": 150, "currency": "IDR"},
        {"cents": 1},
        {"x": 1},
        "tagged",
        {"k": "v"},  # a Ruby hash: its elements (ivars dropped, tag counted)
        {"hash": {"x": True}},
    ]
    assert extracted.dropped_tags == (
        ("!ruby/hash-with-ivars:ActiveSupport::HashWithIndifferentAccess", 1),
        ("!ruby/object:Crm::Money", 2),
        ("!ruby/object:Set", 1),
        ("!ruby/string:Crm::Label", 1),
        ("!ruby/struct:Point", 1),
    )


def test_known_conversions_are_not_reported_as_dropped_tags():
    text = (
        "a: !ruby/object:BigDecimal 18:0.1e1\nb: !ruby/hash:X\n  k: 1\nc: !ruby/array:Y [1]\n"
        "d: !ruby/sym s\ne: !binary aGk=\nf: !ruby/object:DateTime 2020-01-01 00:00:00 Z\n"
    )
    assert extract_changes(text, "create").dropped_tags == ()


def test_ruby_objects_are_never_constructed():
    text = "v: !ruby/object:Gem::Installer\n  i: x\n"
    value = only_value(text)
    assert type(value) is dict and value == {"i": "x"}


def test_psych_deserialization_gadget_is_plain_data():
    # the shape of the well-known Psych gadget chain: nested Ruby objects, never built
    text = (
        "--- !ruby/hash:Hash\n"
        "payload:\n"
        "- !ruby/object:Gem::Installer\n    i: x\n"
        "- !ruby/object:Gem::Requirement\n"
        "    requirements: !ruby/object:Gem::Package::TarReader\n"
        "      io: &1 !ruby/object:Net::BufferedIO\n"
        "        io: &2 !ruby/object:Gem::Package::TarReader::Entry\n"
        "          read: 0\n"
        "          header: abc\n"
        "        debug_output: &3 !ruby/object:Net::WriteAdapter\n"
        "          socket: &4 !ruby/object:Gem::RequestSet\n"
        "            sets: !ruby/object:Net::WriteAdapter\n"
        "              socket: !ruby/module 'Kernel'\n"
        "              method_id: :system\n"
        "            git_set: id\n"
        "          method_id: :resolve\n"
    )
    extracted = extract_changes(text, "update")
    (change,) = extracted.changes
    assert change["from"] == {"i": "x"}
    adapter = change["to"]["requirements"]["io"]["debug_output"]
    assert adapter["socket"]["sets"] == {"socket": "Kernel", "method_id": "system"}
    assert_json_safe(extracted.changes)
    assert dict(extracted.dropped_tags)["!ruby/object:Net::WriteAdapter"] == 2
    assert dict(extracted.dropped_tags)["!ruby/module"] == 1
    # the published payload re-uses one anchor name, which PyYAML refuses: invalid
    assert reason_of(text.replace("&2 ", "&1 "), "update") == MALFORMED


def test_dropped_tag_names_are_bounded_and_printable():
    text = "v: !ruby/object:" + "A" * 500 + " 1\nw: !ruby/object:%C3%A9%0A x\n"
    tags = dict(extract_changes(text, "create").dropped_tags)
    assert sorted(tags) == ["!ruby/object:??", "!ruby/object:" + "A" * 67 + "…"]


def test_anchors_and_aliases_expand_to_independent_copies():
    text = "---\nold: &tags [vip, lead]\nnew: *tags\n"
    changes = changes_of(text)
    assert changes[0]["to"] == changes[1]["to"] == ["vip", "lead"]
    assert changes[0]["to"] is not changes[1]["to"]


def test_merge_keys_are_read_as_psych_reads_them():
    text = "base: &b {a: 1, b: 2}\nv: {<<: *b, b: 3}\n"
    assert changes_of(text)[1]["to"] == {"a": 1, "b": 3}


def test_values_are_json_safe():
    text = TWZ + (
        "price:\n- !ruby/object:BigDecimal 18:0.15e4\n- !ruby/object:BigDecimal 9:NaN\n"
        "when:\n- 2020-01-01\n- 2020-01-01 00:00:00\nraw:\n- !binary AAE=\n- .inf\n"
    )
    json.dumps(changes_of(text, "update"), allow_nan=False)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", NOT_A_MAP),
        ("--- \n", NOT_A_MAP),
        ("--- hello\n", NOT_A_MAP),
        ("- a\n- b\n", NOT_A_MAP),
        ("[1, 2]", NOT_A_MAP),
        ("--- !ruby/object:BigDecimal 18:0.1e1\n", NOT_A_MAP),
        ("a: [\n", MALFORMED),
        ("a: 'unterminated\n", MALFORMED),
        ("a: b: c\n", MALFORMED),
        ('{ "a": 1, }x', MALFORMED),
        ("a:\n\t- tab\n", MALFORMED),
        ("a: 1\n---\nb: 2\n", MULTIPLE_DOCUMENTS),
        ("a: *nowhere\n", MALFORMED),
        ("? [a, b]\n: c\n", "bad_value"),  # a collection as a key
    ],
)
def test_unparsable_or_non_map_is_invalid(text, reason):
    assert reason_of(text) == reason


def test_missing_audited_changes_is_invalid():
    assert reason_of(None) == "missing"


# ---------------------------------------------------------------------------------------
# §4.1 bounds and hostile YAML [N24]: invalid for that record, bounded work and memory
# ---------------------------------------------------------------------------------------


def billion_laughs(levels: int, width: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 18) -> str:
    lines = ["m0: &m0 {k0_0: v0}"]
    for level in range(1, levels + 1):
        keys = ", ".join(f"k{level}_{i}: v" for i in range(1 << min(level, 6)))
        lines.append(f"m{level}: &m{level} {{<<: [*m{level - 1}, *m{level - 1}], {keys}}}")
    lines.append(f"target: {{<<: [*m{levels}, *m{levels}]}}")
    return "\n".join(lines) + "\n"


def aliases(count: int) -> str:
    return "a: &x 1\n" + "".join(f"b{i}: *x\n" for i in range(count))


HOSTILE = {
    # classic billion laughs: 9 levels × 9 aliases = 72 alias nodes, 9^9 expansions
    "billion_laughs": (billion_laughs(9, 9), ALIAS_LIMIT),
    "alias_nodes_101": (aliases(101), ALIAS_LIMIT),
    "wide_and_shallow": (billion_laughs(4, 30), ALIAS_LIMIT),
    # one big anchor expanded 99 times: quadratic, caught by the output bound
    "quadratic_blowup": (
        "a: &a [" + ",".join(["1"] * 20_000) + "]\n" + "".join(f"b{i}: *a\n" for i in range(99)),
        EXPANSION_LIMIT,
    ),
    "merge_key_bomb": (merge_bomb(), EXPANSION_LIMIT),
    "recursive_sequence": ("a: &a [1, *a]\n", RECURSIVE_ALIAS),
    "recursive_map": ("a: &a {self: *a}\n", RECURSIVE_ALIAS),
    "deep_flow_nesting": ("a: " + "[" * 500 + "]" * 500 + "\n", DEPTH_LIMIT),
    # past libyaml's own nesting limit (1,000) its scanner may refuse first (CSafeLoader)
    "very_deep_flow_nesting": (
        "a: " + "[" * 50_000 + "]" * 50_000 + "\n",
        (MALFORMED, DEPTH_LIMIT),
    ),
    "very_deep_flow_maps": ("a: " + "{a: " * 50_000 + "}" * 50_000 + "\n", DEPTH_LIMIT),
    "deep_block_nesting": (
        "a:\n" + "".join(" " * (i + 1) + "b:\n" for i in range(1_000)),
        DEPTH_LIMIT,
    ),
    "deep_via_aliases": (
        "a: &a " + "[" * 60 + "1" + "]" * 60 + "\nb: " + "[" * 60 + "*a" + "]" * 60 + "\n",
        DEPTH_LIMIT,
    ),
    "over_1_MiB_plus_1": ("a: " + "x" * (MAX_BYTES - 2), TOO_LARGE),
    "over_1_MiB_multibyte": ("a: " + "é" * (MAX_BYTES // 2), TOO_LARGE),
    "python_object_apply": ("a: !!python/object/apply:os.system ['true']\n", UNKNOWN_TAG),
    "python_name": ("a: !!python/name:os.system\n", UNKNOWN_TAG),
    "unknown_local_tag": ("a: !foo bar\n", UNKNOWN_TAG),
    "unknown_global_tag": ("a: !<tag:example.com,2000:app/x> 1\n", UNKNOWN_TAG),
    "bigdecimal_exponent_bomb": ("a: !ruby/object:BigDecimal 18:0.1e999999999\n", "bad_value"),
    "bigdecimal_garbage": ("a: !ruby/object:BigDecimal 18:abc\n", "bad_value"),
    "bigdecimal_not_scalar": ("a: !ruby/object:BigDecimal {x: 1}\n", "bad_value"),
    "time_with_zone_garbage": (
        "a: !ruby/object:ActiveSupport::TimeWithZone\n  utc: no\n",
        "bad_value",
    ),
    "datetime_garbage": ("a: !ruby/object:DateTime yesterday\n", "bad_value"),
    "timestamp_overflow": ("a: 0001-01-01 00:00:00 +05:00\n", "bad_value"),
    "lone_surrogate": ("a: \ud800\n", MALFORMED),
    "nul_byte": ("a: \x00\n", MALFORMED),
}


@pytest.mark.parametrize(("text", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_yaml_is_invalid_with_bounded_memory(text, reason):
    tracemalloc.start()
    try:
        got = reason_of(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got in ((reason,) if isinstance(reason, str) else reason)
    # the inputs are ≤ ~2 MiB of text; any expansion would need far more than this
    assert peak < 64 * 1024 * 1024


def test_size_bound_is_exactly_1_mib_of_utf8():
    at_limit = "a: " + "x" * (MAX_BYTES - 3)
    assert len(at_limit.encode()) == MAX_BYTES
    assert only_value(at_limit) == "x" * (MAX_BYTES - 3)
    assert reason_of(at_limit + "x") == TOO_LARGE


def test_exactly_100_alias_nodes_are_allowed():
    assert len(changes_of(aliases(100))) == 101


def test_nested_expansions_beyond_100_are_refused_even_under_100_alias_nodes():
    # 3 levels × 5 aliases = 15 alias nodes but 5 + 25 + 125 = 155 expansions
    assert reason_of(billion_laughs(4, 5)) == ALIAS_LIMIT
    # 2 levels × 5: 5 + 25 = 30 expansions: fine
    assert len(changes_of(billion_laughs(3, 5))) == 3


def test_limits_are_configurable():
    assert reason_of("a: " + "x" * 100, max_bytes=50) == TOO_LARGE
    assert reason_of(aliases(3), max_aliases=2) == ALIAS_LIMIT
    assert reason_of("a: [[[1]]]\n", max_depth=3) == DEPTH_LIMIT
    assert only_value("a: [[1]]\n") == [[1]]


SECRET_YAML = [
    "email: siti.rahayu@example.test\nbad: [",
    "name: Siti Rahayu\n---\nphone: +62 812 5555 0101\n",
    "x: !foo siti.rahayu@example.test\n",
    "x: !ruby/object:BigDecimal Siti Rahayu\n",
    'x: "Siti Rahayu \\q"',
    "x: [Siti Rahayu, siti.rahayu@example.test",
    "Siti Rahayu",
    '{"email": "siti.rahayu@example.test"',
]


@pytest.mark.parametrize("text", SECRET_YAML)
def test_errors_never_quote_yaml_values(text):
    with pytest.raises(InvalidAuditedChanges) as caught:
        parse_audited_changes(text, "create")
    rendered = "".join(traceback.format_exception(caught.value))
    for secret in PII:
        assert secret not in rendered
        assert secret not in caught.value.details


# ---------------------------------------------------------------------------------------
# hypothesis: only InvalidAuditedChanges, and JSON-safe output
# ---------------------------------------------------------------------------------------

BOUNDED = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ACTION = st.sampled_from(["create", "update", "destroy", "bogus"])
TAGS = [
    "!ruby/object:BigDecimal",
    "!ruby/object:ActiveSupport::TimeWithZone",
    "!ruby/object:DateTime",
    "!ruby/hash:ActiveSupport::HashWithIndifferentAccess",
    "!ruby/hash-with-ivars",
    "!ruby/array:X",
    "!ruby/struct:S",
    "!ruby/sym",
    "!ruby/object:Evil",
    "!binary",
    "!!binary",
    "!!set",
    "!!omap",
    "!!pairs",
    "!!timestamp",
    "!!python/object/apply:os.system",
    "!foo",
]
SCALARS = st.one_of(
    st.sampled_from(
        [
            "1",
            "-0",
            "0x1F",
            "1_000",
            "190:20:30",
            "1.5",
            ".inf",
            ".nan",
            "~",
            "null",
            "yes",
            "Off",
            ":sym",
            ':"q s"',
            "'quoted'",
            '"esc\\u00e9"',
            "2020-01-01",
            "2020-01-01 10:00:00 +07:00",
            "2020-02-30 10:00:00 Z",
            "18:0.15e4",
            "aGVsbG8=",
            "//79",
            "*a",
            "*b",
            "<<",
            "=",
            "|-\n  x",
            "",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)


def yaml_nodes() -> st.SearchStrategy[str]:
    def tagged(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.tuples(
            st.sampled_from(["", "&a ", "&b "]), st.sampled_from(["", *TAGS]), strategy
        ).map(lambda t: f"{t[0]}{t[1]} {t[2]}".strip())

    return st.recursive(
        tagged(SCALARS),
        lambda children: tagged(
            st.one_of(
                st.lists(children, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
                st.lists(st.tuples(SCALARS, children), max_size=4).map(
                    lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
                ),
            )
        ),
        max_leaves=12,
    )


def assert_json_safe(value: Any) -> None:
    # raises on NaN, bytes, sets, datetimes, objects; encode() on lone surrogates (not BSON)
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    if isinstance(value, dict):
        assert all(isinstance(key, str) for key in value)
        for item in value.values():
            assert_json_safe(item)
    elif isinstance(value, list):
        for item in value:
            assert_json_safe(item)


def check_contract(text: str, action: str) -> None:
    try:
        changes = parse_audited_changes(text, action)
    except InvalidAuditedChanges as exc:
        assert exc.reason
        return
    assert isinstance(changes, list)
    for change in changes:
        assert set(change) == {"field", "from", "to"}
        assert isinstance(change["field"], str)
    assert_json_safe(changes)


@BOUNDED
@given(text=st.text(), action=ACTION)
def test_property_arbitrary_text(text, action):
    check_contract(text, action)


@BOUNDED
@given(
    data=st.binary(max_size=256),
    encoding=st.sampled_from(["utf-8", "latin-1"]),
    errors=st.sampled_from(["replace", "surrogateescape", "ignore"]),
    action=ACTION,
)
def test_property_bytes_decoded(data, encoding, errors, action):
    check_contract(data.decode(encoding, errors), action)


@BOUNDED
@given(
    entries=st.lists(st.tuples(SCALARS, yaml_nodes()), min_size=1, max_size=5),
    flow=st.booleans(),
    json_like=st.booleans(),
    action=ACTION,
)
def test_property_yaml_grammar(entries, flow, json_like, action):
    if flow:
        text = "{" + ", ".join(f"{k}: {v}" for k, v in entries) + "}"
    else:
        text = "---\n" + "".join(f"{k}: {v}\n" for k, v in entries)
    if json_like:
        text = "{" + text
    check_contract(text, action)


@BOUNDED
@given(text=st.text(), action=ACTION)
def test_property_json_prefixed_text(text, action):
    check_contract('{"a": ' + text, action)


def outcome(text: str, limits: YamlLimits) -> Any:
    """What ``load_audited_changes`` gives: the value and dropped tags, or the reason code."""
    try:
        return load_audited_changes(text, limits)
    except InvalidAuditedChanges as exc:
        return exc.reason


TIGHT = [YamlLimits(), YamlLimits(max_aliases=1, max_depth=2), YamlLimits(max_depth=4)]


@BOUNDED
@given(
    entries=st.lists(st.tuples(SCALARS, yaml_nodes()), min_size=1, max_size=5),
    flow=st.booleans(),
    leading=st.sampled_from(["", "---\n", "--- ", "%YAML 1.1\n---\n"]),
    trailing=st.sampled_from(["", "...\n", "---\nb: 1\n", "--- x\n"]),
)
def test_property_the_pre_scan_is_skipped_only_when_it_cannot_refuse(
    entries, flow, leading, trailing
):
    """§4.1 [N24]: skipping the pre-scan by the character test never changes an outcome."""
    if flow:
        text = leading + "{" + ", ".join(f"{k}: {v}" for k, v in entries) + "}\n" + trailing
    else:
        text = leading + "".join(f"{k}: {v}\n" for k, v in entries) + trailing
    for limits in TIGHT:
        fast = outcome(text, limits)
        with mock.patch.object(changes_module, "_within_limits_by_text", return_value=False):
            assert outcome(text, limits) == fast, limits


def test_the_gems_short_maps_skip_the_pre_scan_and_hostile_ones_never_do():
    fast = changes_module._within_limits_by_text
    assert fast("---\nscore:\n- 1\n- 2\nvip:\n- false\n- true\n", YamlLimits())
    assert fast('{"a": [1, 2]}', YamlLimits())
    assert not fast(aliases(1), YamlLimits())  # an alias
    assert not fast("a: [[[1]]]\n", YamlLimits(max_depth=3))  # maybe too deep
    assert not fast("a: 1\n---\nb: 2\n", YamlLimits())  # a second document
    assert not fast("a: 1\n...\n", YamlLimits())
    scan_bounds = {ALIAS_LIMIT, DEPTH_LIMIT, EXPANSION_LIMIT, RECURSIVE_ALIAS, MULTIPLE_DOCUMENTS}
    for name, (text, reason) in HOSTILE.items():
        reasons = {reason} if isinstance(reason, str) else set(reason)
        if reasons & scan_bounds:
            assert not fast(text, YamlLimits()), name
        assert outcome(text, YamlLimits()) in reasons, name


@pytest.mark.parametrize(
    ("dumped", "plain"),
    [
        ("18:0.15e4", "1500"),
        ("18:0.125e1", "1.25"),
        ("0.5e0", "0.5"),
        ("18:0.1e-3", "0.0001"),
        ("18:-0.15e4", "-1500"),
        ("18:-0.0", "0"),
        ("18:Infinity", "Infinity"),
    ],
)
def test_plain_decimal(dumped, plain):
    assert plain_decimal(dumped) == plain


# ---------------------------------------------------------------------------------------
# §4.2 CategoryMapper
# ---------------------------------------------------------------------------------------


def upd(field_name: str, old: Any, new: Any) -> list[dict[str, Any]]:
    return [
        {"field": "name", "from": "a", "to": "b"},
        {"field": field_name, "from": old, "to": new},
    ]


MAPPER_TABLE = [
    # (type, action, changes, rules, expected (category, action, row) or None)
    ("Crm::Person", "create", [], DEFAULT_RULES, ("contact", "create", 1)),
    ("Crm::Person", "update", [], DEFAULT_RULES, ("contact", "update", 2)),
    ("Crm::Person", "destroy", [], DEFAULT_RULES, ("contact", "delete", 3)),
    ("Crm::Deal", "create", [], DEFAULT_RULES, ("deal", "create", 4)),
    ("Crm::Task", "create", [], DEFAULT_RULES, ("task", "create", 4)),
    ("Crm::Ticket", "destroy", [], DEFAULT_RULES, ("ticket", "delete", 4)),
    # rows 5-7 with the id-sets configured
    ("Crm::Deal", "update", upd("crm_stage_id", 1, 7), CONFIGURED_RULES, ("deal", "won", 5)),
    (
        "Crm::Task",
        "update",
        upd("crm_task_status_id", 1, "3"),
        CONFIGURED_RULES,
        ("task", "completed", 6),
    ),
    (
        "Crm::Ticket",
        "update",
        upd("crm_ticket_status_id", 1, 9),
        CONFIGURED_RULES,
        ("ticket", "resolved", 7),
    ),
    # id-sets empty by default → the safe …/update fallthrough (row 10)
    ("Crm::Deal", "update", upd("crm_stage_id", 1, 7), DEFAULT_RULES, ("deal", "update", 10)),
    ("Crm::Task", "update", upd("crm_task_status_id", 1, 3), DEFAULT_RULES, ("task", "update", 10)),
    (
        "Crm::Ticket",
        "update",
        upd("crm_ticket_status_id", 1, 9),
        DEFAULT_RULES,
        ("ticket", "update", 10),
    ),
    # the new value is tested, not the old one [N4]
    ("Crm::Deal", "update", upd("crm_stage_id", 7, 1), CONFIGURED_RULES, ("deal", "update", 10)),
    # each key only for its own kind
    (
        "Crm::Deal",
        "update",
        upd("crm_ticket_status_id", 1, 9),
        CONFIGURED_RULES,
        ("deal", "update", 10),
    ),
    (
        "Crm::Ticket",
        "update",
        upd("crm_stage_id", 1, 7),
        CONFIGURED_RULES,
        ("ticket", "update", 10),
    ),
    # a create carrying a won stage never becomes won
    (
        "Crm::Deal",
        "create",
        [{"field": "crm_stage_id", "from": None, "to": 7}],
        CONFIGURED_RULES,
        ("deal", "create", 4),
    ),
    # non-id values never match
    (
        "Crm::Deal",
        "update",
        upd("crm_stage_id", 1, True),
        replace(CONFIGURED_RULES, won_stage_ids=frozenset({1})),
        ("deal", "update", 10),
    ),
    # joins: link / unlink, and update falls through to the category's update
    ("Crm::DealPerson", "create", [], DEFAULT_RULES, ("deal", "link", 8)),
    ("Crm::TaskPerson", "create", [], DEFAULT_RULES, ("task", "link", 8)),
    ("Crm::TicketPerson", "destroy", [], DEFAULT_RULES, ("ticket", "unlink", 9)),
    ("Crm::DealPerson", "update", [], DEFAULT_RULES, ("deal", "update", 10)),
    # row 11: unknown action, out-of-scope or unknown types
    ("Crm::Person", "touch", [], DEFAULT_RULES, None),
    ("Crm::Deal", None, [], DEFAULT_RULES, None),
    ("Crm::Company", "create", [], DEFAULT_RULES, None),
    ("User", "update", [], DEFAULT_RULES, None),
    (None, "create", [], DEFAULT_RULES, None),
]


@pytest.mark.parametrize(("auditable_type", "action", "changes", "rules", "expected"), MAPPER_TABLE)
def test_category_mapper_table(auditable_type, action, changes, rules, expected):
    result = map_category(kind_of(auditable_type, rules), action, changes, rules)
    if expected is None:
        assert result is None
    else:
        assert (result.category.value, result.action.value, result.row) == expected


def test_every_mapped_kind_has_a_row_for_each_action():
    for kind in Kind:
        for action in ("create", "update", "destroy"):
            assert map_category(kind, action, [], DEFAULT_RULES) is not None


def test_kinds_come_from_settings():
    rules = CategoryRules.build({"Crm::Lead": "person"})
    assert kind_of("Crm::Lead", rules) is Kind.PERSON
    assert kind_of("Crm::Person", rules) is None
    with pytest.raises(ValueError):
        CategoryRules.build({"Crm::Lead": "lead"})


# ---------------------------------------------------------------------------------------
# §4.3 ContactResolver: every path, in order
# ---------------------------------------------------------------------------------------


def audit(**overrides: Any) -> CrmAudit:
    fields: dict[str, Any] = dict(
        id=5001,
        auditable_type="Crm::Person",
        auditable_id=11,
        associated_type=None,
        associated_id=None,
        user_id=3,
        action="update",
        audited_changes="---\nfull_name:\n- Siti Rahayu\n- Siti R.\n",
        comment=None,
        version=2,
        created_at=datetime(2023, 1, 2, 9, 30, 15, 123456, tzinfo=WIB),
    )
    fields.update(overrides)
    return CrmAudit(**fields)


def person_change(to: Any, old: Any = None) -> list[dict[str, Any]]:
    return [{"field": "crm_person_id", "from": old, "to": to}]


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        ('{"crm_person_id": 42}', 42),
        ('{"crm_person_id": "42"}', 42),
        ('  {"crm_person_id": "42", "x": 1}  ', 42),
        ('{"crm_person_id": 0}', None),
        ('{"crm_person_id": -4}', None),
        ('{"crm_person_id": true}', None),
        ('{"crm_person_id": 4.0}', None),
        ('{"crm_person_id": "4a"}', None),
        ('{"other": 42}', None),
        ("[42]", None),
        ("not json", None),
        ('{"crm_person_id": 42', None),
        ("[" * 100_000, None),
        ("", None),
        (None, None),
    ],
)
def test_comment_json_step(comment, expected):
    assert person_id_from_comment(comment) == expected


@pytest.mark.parametrize(
    ("audit_fields", "changes", "expected"),
    [
        # 1. comment wins over YAML and columns
        (
            {"comment": '{"crm_person_id": 77}'},
            person_change(88),
            PersonRef(77, PersonSource.COMMENT),
        ),
        # malformed comment / comment without the key → 2. YAML
        ({"comment": "{oops"}, person_change(88), PersonRef(88, PersonSource.YAML)),
        ({"comment": '{"note": "x"}'}, person_change("88"), PersonRef(88, PersonSource.YAML)),
        # YAML: `to`, else `from`
        ({}, person_change(None, 66), PersonRef(66, PersonSource.YAML)),
        ({}, person_change(99, 66), PersonRef(99, PersonSource.YAML)),
        # 3. the auditable person, then the associated person [N6]
        ({}, [], PersonRef(11, PersonSource.AUDITABLE)),
        (
            {
                "auditable_type": "Crm::Deal",
                "auditable_id": 5,
                "associated_type": "Crm::Person",
                "associated_id": 12,
            },
            [],
            PersonRef(12, PersonSource.ASSOCIATED),
        ),
        # a deal audit with no person anywhere
        ({"auditable_type": "Crm::Deal", "auditable_id": 5}, [], None),
        (
            {"auditable_type": "Crm::Deal", "associated_type": "Crm::Company", "associated_id": 1},
            [],
            None,
        ),
    ],
)
def test_person_id_steps_in_order(audit_fields, changes, expected):
    assert find_person(audit(**audit_fields), changes, DEFAULT_RULES) == expected


LOOKUPS = ContactLookups(
    by_source_id={"11": SourceIdMatch("c-11"), "12": SourceIdMatch("c-12a", 3)},
    id_map={13: "c-13-map", 11: "c-11-map"},
)


@pytest.mark.parametrize(
    ("person_id", "expected"),
    [
        (11, ("c-11", ContactLookup.SOURCE_ID, 1)),  # 4. source_id wins over the map
        (12, ("c-12a", ContactLookup.SOURCE_ID, 3)),  # duplicates: smallest _id, count kept
        (13, ("c-13-map", ContactLookup.CONTACT_ID_MAP, 1)),  # 5. miss → the map
        (14, None),  # double miss → contact_not_found
    ],
)
def test_contact_lookup_steps(person_id, expected):
    resolved = resolve_contact(PersonRef(person_id, PersonSource.AUDITABLE), LOOKUPS)
    if expected is None:
        assert resolved is None
    else:
        assert (resolved.customer_id, resolved.resolved_by, resolved.match_count) == expected
        assert resolved.person_source is PersonSource.AUDITABLE
    assert resolve_contact(None, LOOKUPS) is None


def test_pick_contact_smallest_id_and_count():
    assert pick_contact(["65b0000000000000000000c2", "65b0000000000000000000a1"]) == (
        SourceIdMatch("65b0000000000000000000a1", 2)
    )
    assert pick_contact([]) is None


# ---------------------------------------------------------------------------------------
# §4.4 ActorResolver: four cases and the [N10] edges
# ---------------------------------------------------------------------------------------

IDENTITY = IdentityLookups(
    sso_by_email={"siti.rahayu@example.test": "sso-siti", "gone@example.test": "sso-gone"},
    failed_emails=frozenset({"slow@example.test"}),
)


def actor_of(user_id: int | None, user: CrmUser | None) -> ActorResolution | ActorLookupFailure:
    return resolve_actor(user_id, user, IDENTITY)


def test_actor_a1_system():
    result = actor_of(None, None)
    assert (result.case, result.actor, result.user_id, result.not_resolved) == (
        ActorCase.A1,
        {"type": "system", "sso_id": None, "label": "System"},
        None,
        False,
    )


def test_actor_a2_resolved_with_case_and_whitespace_variants():
    user = CrmUser(3, "  Siti.Rahayu@Example.TEST ", "Siti Rahayu")
    result = actor_of(3, user)
    assert (result.case, result.actor, result.user_id, result.not_resolved) == (
        ActorCase.A2,
        {"type": "user", "sso_id": "sso-siti", "label": None},
        "sso-siti",
        False,
    )
    assert result.crm_user_deleted is False


@pytest.mark.parametrize(
    "user",
    [
        CrmUser(3, None, "Budi Santoso"),  # email null
        CrmUser(3, "   ", "Budi Santoso"),  # blank email
        CrmUser(3, "budi@example.test", "Budi Santoso"),  # identity service: empty result
        CrmUser(3, "budi@example.test", "Budi Santoso", "2022-01-01 00:00:00"),  # deactivated
    ],
)
def test_actor_a3_label_only(user):
    result = actor_of(3, user)
    assert (result.case, result.actor, result.user_id, result.not_resolved) == (
        ActorCase.A3,
        {"type": "user", "sso_id": None, "label": "Budi Santoso"},
        None,
        True,
    )


def test_actor_a3_blank_name_gets_a_placeholder_label():
    assert actor_of(3, CrmUser(3, None, "  ")).actor["label"] == "[CRM User]"


def test_actor_a4_deleted_user():
    result = actor_of(3, None)
    assert (result.case, result.actor, result.user_id, result.not_resolved) == (
        ActorCase.A4,
        {"type": "deleted_user", "sso_id": None, "label": DELETED_USER_LABEL},
        None,
        True,
    )


def test_deleted_at_is_recorded_but_does_not_change_the_case():
    # OQ-9 default: deactivated with an SsoID → that SsoID (A2)
    result = actor_of(3, CrmUser(3, "gone@example.test", "Gone", datetime(2021, 5, 1, tzinfo=UTC)))
    assert (result.case, result.user_id, result.crm_user_deleted) == (
        ActorCase.A2,
        "sso-gone",
        True,
    )


def test_identity_failure_after_retry_fails_the_record_not_degraded_to_a3():
    assert actor_of(3, CrmUser(3, "Slow@example.test", "Slow")) == ActorLookupFailure(3)


def test_identity_calls_equal_distinct_emails():
    users = [CrmUser(i, f" User{i % 3}@Example.test", "U") for i in range(1000)] + [
        CrmUser(5000, None, "No Email")
    ]
    assert emails_to_look_up(users) == [f"user{i}@example.test" for i in range(3)]
    assert normalize_email("  A@B.C ") == "a@b.c" and normalize_email(" ") is None


# ---------------------------------------------------------------------------------------
# §4.5 timestamps and the §5 document
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            datetime(2023, 1, 2, 9, 30, 15, 123456, tzinfo=WIB),
            datetime(2023, 1, 2, 2, 30, 15, 123000),
        ),
        (datetime(2023, 1, 2, 9, 30, 15, 999999), datetime(2023, 1, 2, 9, 30, 15, 999000)),  # naive
        ("2023-01-02 09:30:15.5", datetime(2023, 1, 2, 9, 30, 15, 500000)),  # naive text
        ("2023-01-02 09:30:15+07", datetime(2023, 1, 2, 2, 30, 15)),
        ("2023-01-02T09:30:15Z", datetime(2023, 1, 2, 9, 30, 15)),
    ],
)
def test_created_at_is_utc_with_milliseconds(value, expected):
    assert audit_created_at(value, WINDOW) == expected


@pytest.mark.parametrize("value", [None, "", "yesterday", "infinity", "1969-12-31 23:59:59", 5])
def test_created_at_invalid(value):
    with pytest.raises(InvalidTimestamp):
        audit_created_at(value, WINDOW)


def ctx(**overrides: Any) -> PlanContext:
    fields: dict[str, Any] = dict(
        company_sso_id=COMPANY, rules=DEFAULT_RULES, job_id="run-1", timestamp_window=WINDOW
    )
    fields.update(overrides)
    return PlanContext(**fields)


BASE_LOOKUPS = PlanLookups(
    contacts=ContactLookups(
        by_source_id={"11": SourceIdMatch("c-11"), "12": SourceIdMatch("c-12", 2)},
        id_map={21: "c-21-map"},
    ),
    users_by_id={
        3: CrmUser(3, "Siti.Rahayu@example.test", "Siti Rahayu"),
        4: CrmUser(4, None, "Budi Santoso", "2022-01-01 00:00:00"),
        5: CrmUser(5, "slow@example.test", "Slow"),
        6: CrmUser(6, "gone@example.test", "Gone", "2021-05-01 00:00:00"),
    },
    identity=IDENTITY,
)


def test_document_shape():
    entry = plan_audit(audit(), ctx(), BASE_LOOKUPS)
    assert entry.outcome is PlanOutcome.READY and entry.code is None
    assert entry.document == {
        "company_sso_id": COMPANY,
        "customer_id": "c-11",
        "category": "contact",
        "action": "update",
        "user_id": "sso-siti",
        "actor": {"type": "user", "sso_id": "sso-siti", "label": None},
        "changes": [{"field": "full_name", "from": "Siti Rahayu", "to": "Siti R."}],
        "created_at": datetime(2023, 1, 2, 2, 30, 15, 123000),
        "updated_at": datetime(2023, 1, 2, 2, 30, 15, 123000),
        "external_id": "crm_audit:5001",
        "source_tag": "crm_migration",
        "metadata": {
            "crm_audit_id": 5001,
            "crm_auditable_type": "Crm::Person",
            "crm_auditable_id": 11,
            "crm_associated_type": None,
            "crm_associated_id": None,
            "crm_action": "update",
            "crm_version": 2,
            "crm_user_id": 3,
            "crm_user_deleted": False,
            "crm_person_id": 11,
            "contact_resolved_by": "source_id",
            "actor_case": "A2",
            "job_id": "run-1",
        },
    }
    assert entry.external_id == external_id(5001) == entry.document["external_id"]
    assert SOURCE_TAG == "crm_migration"
    assert (entry.category, entry.action, entry.actor_case, entry.person_source) == (
        "contact",
        "update",
        "A2",
        "auditable",
    )


# ---------------------------------------------------------------------------------------
# §16 golden cases decidable by the pure rules: audit + lookups → expected plan
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Golden:
    """One §16 case: the audit, optional rules/lookups, and the expected plan: ``code`` for a
    skip/failure, else ``doc`` (a subset of the document, dotted keys for nested fields)."""

    audit: CrmAudit
    code: str | None = None
    doc: dict[str, Any] = field(default_factory=dict)
    rules: CategoryRules = DEFAULT_RULES
    lookups: PlanLookups = BASE_LOOKUPS


def deal(**overrides: Any) -> CrmAudit:
    base = dict(
        auditable_type="Crm::Deal",
        auditable_id=900,
        associated_type="Crm::Person",
        associated_id=11,
    )
    return audit(**{**base, **overrides})


GOLDEN: dict[str, Golden] = {
    # --- YAML
    "yaml_create_scalars": Golden(
        audit(
            action="create",
            audited_changes="---\nfull_name: Siti Rahayu\nage: 31\nscore: 4.5\nvip: true\nnote: \n",
        ),
        doc={
            "action": "create",
            "changes": [
                {"field": "full_name", "from": None, "to": "Siti Rahayu"},
                {"field": "age", "from": None, "to": 31},
                {"field": "score", "from": None, "to": 4.5},
                {"field": "vip", "from": None, "to": True},
                {"field": "note", "from": None, "to": None},
            ],
        },
    ),
    "yaml_update_scalars": Golden(
        audit(audited_changes="---\nage:\n- 30\n- 31\nvip:\n- false\n- true\nnote:\n- x\n- \n"),
        doc={
            "action": "update",
            "changes": [
                {"field": "age", "from": 30, "to": 31},
                {"field": "vip", "from": False, "to": True},
                {"field": "note", "from": "x", "to": None},
            ],
        },
    ),
    "yaml_destroy": Golden(
        audit(action="destroy", audited_changes="---\nfull_name: Siti Rahayu\nscore: 1.5\n"),
        doc={
            "action": "delete",
            "changes": [
                {"field": "full_name", "from": "Siti Rahayu", "to": None},
                {"field": "score", "from": 1.5, "to": None},
            ],
        },
    ),
    "yaml_update_array_attribute": Golden(
        audit(audited_changes="tags:\n- [a, b]\n- [a]\n"),
        doc={"changes": [{"field": "tags", "from": ["a", "b"], "to": ["a"]}]},
    ),
    "yaml_create_two_element_array": Golden(
        audit(action="create", audited_changes="tags:\n- a\n- b\n"),
        doc={"changes": [{"field": "tags", "from": None, "to": ["a", "b"]}]},
    ),
    "yaml_json_formatted": Golden(
        audit(audited_changes='{"full_name": ["A", "B"]}'),
        doc={"changes": [{"field": "full_name", "from": "A", "to": "B"}]},
    ),
    "yaml_ruby_types": Golden(
        audit(
            audited_changes=TWZ + "price:\n- !ruby/object:BigDecimal 18:0.15e4\n"
            "- !ruby/object:BigDecimal 18:0.125e1\nborn:\n- 2020-01-01\n- 2020-01-02\n"
            "seen:\n- 2020-01-01 10:00:00 +07:00\n- 2020-01-01 11:00:00 +07:00\n"
        ),
        doc={
            "changes": [
                {
                    "field": "due_at",
                    "from": "2020-01-01T03:00:00.000Z",
                    "to": "2020-01-02T03:04:05.678Z",
                },
                {"field": "price", "from": "1500", "to": "1.25"},
                {"field": "born", "from": "2020-01-01", "to": "2020-01-02"},
                {
                    "field": "seen",
                    "from": "2020-01-01T03:00:00.000Z",
                    "to": "2020-01-01T04:00:00.000Z",
                },
            ]
        },
    ),
    "yaml_hwia_symbols_unknown_object": Golden(
        audit(
            action="create",
            audited_changes="prefs: !ruby/hash:ActiveSupport::"
            "HashWithIndifferentAccess\n  :lang: :id\nmoney: !ruby/object:Crm::Money\n"
            "  cents: 5\n",
        ),
        doc={
            "changes": [
                {"field": "prefs", "from": None, "to": {"lang": "id"}},
                {"field": "money", "from": None, "to": {"cents": 5}},
            ]
        },
    ),
    "yaml_anchors_and_aliases": Golden(
        audit(audited_changes="tags:\n- &t [a]\n- *t\n"),
        doc={"changes": [{"field": "tags", "from": ["a"], "to": ["a"]}]},
    ),
    "yaml_alias_bomb": Golden(
        audit(audited_changes=billion_laughs(9, 9)), code="invalid_audited_changes"
    ),
    "yaml_multiline_unicode_emoji": Golden(
        audit(action="create", audited_changes="bio: |-\n  Halo ✓\n  🎉 selesai\n"),
        doc={"changes": [{"field": "bio", "from": None, "to": "Halo ✓\n🎉 selesai"}]},
    ),
    "yaml_1_MiB_plus_1": Golden(
        audit(audited_changes="a: " + "x" * (MAX_BYTES - 2)), code="invalid_audited_changes"
    ),
    "yaml_empty_map": Golden(audit(audited_changes="--- {}\n"), doc={"changes": []}),
    "yaml_malformed": Golden(audit(audited_changes="a: ["), code="invalid_audited_changes"),
    "yaml_non_map_root": Golden(audit(audited_changes="- a\n"), code="invalid_audited_changes"),
    "yaml_update_not_pair": Golden(audit(audited_changes="a: 1\n"), code="invalid_audited_changes"),
    # --- Mapper
    "mapper_row1_person_create": Golden(
        audit(action="create", audited_changes="a: 1\n"),
        doc={"category": "contact", "action": "create"},
    ),
    "mapper_row2_person_update": Golden(audit(), doc={"category": "contact", "action": "update"}),
    "mapper_row3_person_destroy": Golden(
        audit(action="destroy", audited_changes="a: 1\n"),
        doc={"category": "contact", "action": "delete"},
    ),
    "mapper_row4_deal_create": Golden(
        deal(action="create", audited_changes="name: D\n"),
        doc={"category": "deal", "action": "create"},
    ),
    "mapper_row4_task_destroy": Golden(
        audit(
            auditable_type="Crm::Task",
            auditable_id=5,
            action="destroy",
            audited_changes="title: T\ncrm_person_id: 11\n",
        ),
        doc={"category": "task", "action": "delete", "metadata.crm_person_id": 11},
    ),
    "mapper_row5_won_configured": Golden(
        deal(audited_changes="crm_stage_id:\n- 1\n- 7\n"),
        rules=CONFIGURED_RULES,
        doc={"category": "deal", "action": "won"},
    ),
    "mapper_row5_won_id_sets_empty": Golden(
        deal(audited_changes="crm_stage_id:\n- 1\n- 7\n"),
        doc={"category": "deal", "action": "update"},
    ),
    "mapper_row6_completed_configured": Golden(
        audit(
            auditable_type="Crm::Task",
            auditable_id=5,
            associated_type="Crm::Person",
            associated_id=11,
            audited_changes="crm_task_status_id:\n- 1\n- 3\n",
        ),
        rules=CONFIGURED_RULES,
        doc={"category": "task", "action": "completed"},
    ),
    "mapper_row7_resolved_configured": Golden(
        audit(
            auditable_type="Crm::Ticket",
            auditable_id=5,
            associated_type="Crm::Person",
            associated_id=11,
            audited_changes="crm_ticket_status_id:\n- 1\n- 9\n",
        ),
        rules=CONFIGURED_RULES,
        doc={"category": "ticket", "action": "resolved"},
    ),
    "mapper_create_with_won_stage": Golden(
        deal(action="create", audited_changes="crm_stage_id: 7\n"),
        rules=CONFIGURED_RULES,
        doc={"category": "deal", "action": "create"},
    ),
    "mapper_row8_join_create": Golden(
        audit(
            auditable_type="Crm::DealPerson",
            auditable_id=70,
            action="create",
            audited_changes="crm_deal_id: 900\ncrm_person_id: 12\n",
        ),
        doc={
            "category": "deal",
            "action": "link",
            "customer_id": "c-12",
            "metadata.contact_resolved_by": "source_id",
        },
    ),
    "mapper_row9_join_destroy": Golden(
        audit(
            auditable_type="Crm::TicketPerson",
            auditable_id=71,
            action="destroy",
            audited_changes="crm_ticket_id: 4\ncrm_person_id: 11\n",
        ),
        doc={"category": "ticket", "action": "unlink"},
    ),
    "mapper_row10_join_update": Golden(
        audit(
            auditable_type="Crm::TaskPerson",
            auditable_id=72,
            audited_changes="crm_person_id:\n- 13\n- 11\n",
        ),
        doc={"category": "task", "action": "update", "metadata.crm_person_id": 11},
    ),
    "mapper_row11_unknown_action": Golden(audit(action="touch"), code="unmapped_action_type"),
    "mapper_out_of_scope_company": Golden(
        audit(auditable_type="Crm::Company"), code="unmapped_action_type"
    ),
    "mapper_out_of_scope_user": Golden(
        audit(auditable_type="User", audited_changes="a: ["), code="unmapped_action_type"
    ),
    # --- Actor
    "actor_a1_system": Golden(
        audit(user_id=None),
        doc={"actor.type": "system", "user_id": None, "metadata.actor_case": "A1"},
    ),
    "actor_a2_resolved": Golden(
        audit(user_id=3), doc={"user_id": "sso-siti", "metadata.actor_case": "A2"}
    ),
    "actor_a3_email_null_deleted_at": Golden(
        audit(user_id=4),
        doc={
            "actor.label": "Budi Santoso",
            "user_id": None,
            "metadata.actor_case": "A3",
            "metadata.crm_user_deleted": True,
        },
    ),
    "actor_a4_no_users_row": Golden(
        audit(user_id=999),
        doc={
            "actor.type": "deleted_user",
            "actor.label": "[Deleted CRM User]",
            "metadata.actor_case": "A4",
            "metadata.crm_user_id": 999,
        },
    ),
    "actor_deactivated_with_sso_id": Golden(
        audit(user_id=6), doc={"user_id": "sso-gone", "metadata.crm_user_deleted": True}
    ),
    "actor_lookup_failed": Golden(audit(user_id=5), code="actor_lookup_failed"),
    # --- Contact
    "contact_comment_beats_yaml": Golden(
        audit(comment='{"crm_person_id": 12}', audited_changes="crm_person_id:\n- 11\n- 11\n"),
        doc={"customer_id": "c-12", "metadata.crm_person_id": 12},
    ),
    "contact_malformed_comment": Golden(
        audit(comment="{not json", audited_changes="crm_person_id:\n- 11\n- 12\n"),
        doc={"metadata.crm_person_id": 12},
    ),
    "contact_comment_without_key": Golden(
        audit(comment='{"source": "import"}', audited_changes="crm_person_id:\n- 12\n- \n"),
        doc={"metadata.crm_person_id": 12},
    ),
    "contact_auditable_fallback": Golden(audit(), doc={"metadata.crm_person_id": 11}),
    "contact_associated_fallback": Golden(
        deal(audited_changes="name:\n- a\n- b\n"), doc={"metadata.crm_person_id": 11}
    ),
    "contact_source_id_hit": Golden(
        audit(), doc={"customer_id": "c-11", "metadata.contact_resolved_by": "source_id"}
    ),
    "contact_miss_hits_map": Golden(
        audit(auditable_id=21),
        doc={"customer_id": "c-21-map", "metadata.contact_resolved_by": "crm_contact_id_map"},
    ),
    "contact_double_miss": Golden(audit(auditable_id=22), code="contact_not_found"),
    "contact_no_person_at_all": Golden(
        deal(associated_type=None, associated_id=None, audited_changes="name:\n- a\n- b\n"),
        code="contact_not_found",
    ),
    "contact_duplicates_smallest_id": Golden(audit(auditable_id=12), doc={"customer_id": "c-12"}),
    # --- Extraction (pure part): naive and tz-aware timestamps
    "timestamp_naive": Golden(
        audit(created_at="2023-01-02 09:30:15.25"),
        doc={"created_at": datetime(2023, 1, 2, 9, 30, 15, 250000)},
    ),
    "timestamp_aware": Golden(
        audit(created_at="2023-01-02 09:30:15.25+07"),
        doc={"created_at": datetime(2023, 1, 2, 2, 30, 15, 250000)},
    ),
    "timestamp_missing": Golden(audit(created_at=None), code="invalid_timestamp"),
    # --- poison row
    "unreadable_row": Golden(
        CrmAudit.unreadable(5001, UnicodeDecodeError("utf-8", b"", 0, 1, "x")),
        code="transform_error",
    ),
}


def dotted(document: dict[str, Any], key: str) -> Any:
    value: Any = document
    for part in key.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize("case", GOLDEN.values(), ids=GOLDEN.keys())
def test_golden_plan(case: Golden):
    entry = plan_audit_isolated(case.audit, ctx(rules=case.rules), case.lookups)
    assert entry.crm_audit_id == case.audit.id
    assert entry.external_id == f"crm_audit:{case.audit.id}"
    if case.code is not None:
        assert entry.code == case.code and entry.document is None
        expected_outcome = PlanOutcome.SKIPPED if case.code in set(SkipCode) else PlanOutcome.FAILED
        assert entry.outcome is expected_outcome
        return
    assert entry.outcome is PlanOutcome.READY, entry.details
    for key, expected in case.doc.items():
        assert dotted(entry.document, key) == expected, key
    assert entry.document["source_tag"] == "crm_migration"
    assert entry.document["updated_at"] == entry.document["created_at"]


def test_golden_plans_carry_no_pii_outside_the_document():
    for case in GOLDEN.values():
        entry = plan_audit_isolated(case.audit, ctx(rules=case.rules), case.lookups)
        public = replace(entry, document=None)
        for secret in PII:
            assert secret not in repr(public)


def test_actor_not_resolved_event_flags():
    flags = {
        name: plan_audit(GOLDEN[name].audit, ctx(), BASE_LOOKUPS).actor_not_resolved
        for name in (
            "actor_a1_system",
            "actor_a2_resolved",
            "actor_a3_email_null_deleted_at",
            "actor_a4_no_users_row",
        )
    }
    assert flags == {
        "actor_a1_system": False,
        "actor_a2_resolved": False,
        "actor_a3_email_null_deleted_at": True,
        "actor_a4_no_users_row": True,
    }


def test_rule_order_first_failure_decides():
    # invalid YAML and an unknown contact and a bad timestamp: the YAML rule decides
    bad = audit(audited_changes="a: [", auditable_id=999, created_at=None)
    assert plan_audit(bad, ctx(), BASE_LOOKUPS).code == FailureCode.INVALID_AUDITED_CHANGES
    # contact before actor before timestamp
    bad = audit(auditable_id=999, user_id=5, created_at=None)
    assert plan_audit(bad, ctx(), BASE_LOOKUPS).code == FailureCode.CONTACT_NOT_FOUND
    bad = audit(user_id=5, created_at=None)
    assert plan_audit(bad, ctx(), BASE_LOOKUPS).code == FailureCode.ACTOR_LOOKUP_FAILED
    # unmapped is decided from the columns before anything is parsed
    bad = audit(action="touch", audited_changes="a: [", created_at=None)
    assert plan_audit(bad, ctx(), BASE_LOOKUPS).code == SkipCode.UNMAPPED_ACTION_TYPE


def test_failure_details_are_ids_and_codes():
    cases = {
        "invalid_audited_changes": (
            audit(audited_changes="a: 1\n"),
            "reason=update_value_not_pair name=a",
        ),
        "contact_not_found": (audit(auditable_id=22), "crm_person_id=22"),
        "actor_lookup_failed": (audit(user_id=5), "crm_user_id=5"),
        "invalid_timestamp": (audit(created_at="yesterday"), "created_at unparsable"),
        "unmapped_action_type": (audit(action="touch"), "kind=person action=other"),
    }
    for code, (source, details) in cases.items():
        entry = plan_audit(source, ctx(), BASE_LOOKUPS)
        assert (entry.code, entry.details) == (code, details)


def test_dropped_tags_reach_the_plan_entry():
    source = audit(action="create", audited_changes="m: !ruby/object:Crm::Money\n  cents: 1\n")
    entry = plan_audit(source, ctx(), BASE_LOOKUPS)
    assert entry.outcome is PlanOutcome.READY
    assert entry.dropped_tags == (("!ruby/object:Crm::Money", 1),)


# ---------------------------------------------------------------------------------------
# fault isolation (§4 poison records → transform_error, [N24])
# ---------------------------------------------------------------------------------------


class _Boom(RuntimeError):
    pass


@pytest.mark.parametrize(
    "target",
    [
        "map_category",
        "find_person",
        "resolve_contact",
        "resolve_actor",
        "build_document",
        "extract_changes",
    ],
)
def test_unexpected_exception_fails_that_audit_alone(monkeypatch, target):
    def explode(*_args: Any, **_kwargs: Any) -> Any:
        raise _Boom("Siti Rahayu siti.rahayu@example.test")

    monkeypatch.setattr(plan_module, target, explode)
    entry = plan_audit_isolated(audit(), ctx(), BASE_LOOKUPS)
    assert (entry.outcome, entry.code) == (PlanOutcome.FAILED, FailureCode.TRANSFORM_ERROR)
    assert entry.details.endswith("exception=_Boom")
    assert "Siti" not in entry.details
    # the next audit is unaffected once the rule behaves again
    monkeypatch.undo()
    assert plan_audit_isolated(audit(id=5002), ctx(), BASE_LOOKUPS).outcome is PlanOutcome.READY


def test_isolated_plan_never_raises_on_garbage_rows():
    garbage = audit(auditable_id="eleven", user_id=[1], version=object(), created_at=3.5)
    entry = plan_audit_isolated(garbage, ctx(), BASE_LOOKUPS)
    assert entry.outcome is PlanOutcome.FAILED


def test_batch_lookup_keys():
    items = [
        prepare_audit_isolated(audit(id=1, auditable_id=30, user_id=4), ctx()),
        prepare_audit_isolated(audit(id=2, auditable_id=11, user_id=3), ctx()),
        prepare_audit_isolated(audit(id=3, auditable_id=30, user_id=None), ctx()),
        prepare_audit_isolated(audit(id=4, action="touch", user_id=8), ctx()),  # skipped
    ]
    assert isinstance(items[0], PreparedAudit) and isinstance(items[3], PlanEntry)
    assert person_ids_to_look_up(items) == [11, 30]
    assert user_ids_to_look_up(items) == [3, 4]


# ---------------------------------------------------------------------------------------
# coverage gate arithmetic (§4.3 Decision 9, [N9]) and the code vocabulary (§12)
# ---------------------------------------------------------------------------------------


def _entries(resolved: int, unresolved: int, unmapped: int) -> list[PlanEntry]:
    ok = PlanEntry(1, "crm_audit:1", PlanOutcome.READY, contact_resolved_by="source_id")
    miss = PlanEntry(2, "crm_audit:2", PlanOutcome.FAILED, FailureCode.CONTACT_NOT_FOUND)
    skip = PlanEntry(3, "crm_audit:3", PlanOutcome.SKIPPED, SkipCode.UNMAPPED_ACTION_TYPE)
    return [ok] * resolved + [miss] * unresolved + [skip] * unmapped


@pytest.mark.parametrize(
    ("resolved", "unresolved", "passes"),
    [(989, 11, False), (990, 10, True), (9_899, 101, False), (0, 0, True)],
)
def test_coverage_gate_boundary(resolved, unresolved, passes):
    coverage = contact_coverage(_entries(resolved, unresolved, unmapped=500))
    assert coverage.in_scope == resolved + unresolved  # unmapped skips excluded
    assert coverage.meets(99.0) is passes
    assert coverage.pct == (
        round(100 * resolved / coverage.in_scope, 3) if coverage.in_scope else 100.0
    )


def test_code_vocabulary_matches_the_spec():
    assert {c.value for c in SkipCode} == {"duplicate_external_id", "unmapped_action_type"}
    assert {c.value for c in FailureCode} == {
        "contact_not_found",
        "invalid_audited_changes",
        "invalid_timestamp",
        "actor_lookup_failed",
        "write_failed",
        "transform_error",
    }
    assert DETERMINISTIC_FAILURES | RETRYABLE_FAILURES == set(FailureCode)
    assert not DETERMINISTIC_FAILURES & RETRYABLE_FAILURES
    assert {c.value for c in RunCode} | {c.value for c in ActivityRunCode} == {
        "FLAG_DISABLED",
        "CRM_EXTRACT_FAILED",
        "VALIDATION_SKIPPED",
        "ALREADY_MIGRATED",  # core, PRD S01 ERR-2 (issue #11)
        "JOB_ALREADY_RUNNING",
        "PREREQ_FAILED",
        "ROLLBACK_NOT_FOUND",
    }
    # the job document's states: the core monitor's plus rolled_back / rollback_failed (§6, §8)
    assert {s.value for s in JobStatus} == {s.value for s in MonitorState} | {
        "rolled_back",
        "rollback_failed",
    }


def test_settings_defaults():
    from notes_pipeline.activity_logs.settings import ActivityLogSettings

    defaults = ActivityLogSettings()
    rules = defaults.category_rules()
    assert rules == DEFAULT_RULES
    assert not (
        rules.won_stage_ids or rules.done_task_status_ids or rules.resolved_ticket_status_ids
    )
    assert defaults.in_scope_types() == sorted(DEFAULT_RULES.kinds)
    assert (defaults.batch_size, defaults.page_size, defaults.halt_threshold) == (20, 500, 0.10)
    assert defaults.yaml_limits() == YamlLimits()
    assert defaults.is_enabled("1001") is False
    assert ActivityLogSettings(enabled_cids="1001, 1002").is_enabled("1002") is True
    with pytest.raises(ValidationError):
        ActivityLogSettings(batch_size=21)
    with pytest.raises(ValidationError, match="unknown kinds"):
        ActivityLogSettings(auditable_kinds={"Crm::Lead": "lead"})
    for name, info in ActivityLogSettings.model_fields.items():
        assert info.description and "§" in info.description, name
