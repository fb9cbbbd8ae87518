"""The report's compact stored index (``index_stored``) and the fidelity pass over the plan
(``compare_plan``), SPEC-activity-logs §7: duplicates, unkeyed documents, mismatches, missing
documents, key order, an empty company; checked against the former dict implementation and
for memory (~16 bytes per document held). Plain Python, no services."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from notes_pipeline.activity_logs import validation
from notes_pipeline.activity_logs.records import PlanEntry, PlanOutcome, SkipCode
from notes_pipeline.activity_logs.validation import (
    WORST,
    FidelityTally,
    StoredIndex,
    audit_id_of,
    compare_plan,
    digest,
    index_stored,
)

COMPANY = "co-9001"


def document(audit_id: int, changes: str = "a", external_id: str | None = None) -> dict:
    return {
        "company_sso_id": COMPANY,
        "external_id": external_id or f"crm_audit:{audit_id}",
        "source_tag": "crm_migration",
        "category": "contact",
        "action": "update",
        "changes": [{"field": "name", "from": "x", "to": changes}],
        "metadata": {"crm_audit_id": audit_id, "job_id": "j"},
    }


def ready(audit_id: int, changes: str = "a") -> PlanEntry:
    return PlanEntry(
        crm_audit_id=audit_id,
        external_id=f"crm_audit:{audit_id}",
        outcome=PlanOutcome.READY,
        document=document(audit_id, changes),
    )


def stored(audit_id: int, changes: str = "a", external_id: str | None = None) -> dict:
    """As read back: with ``_id`` and another run's ``job_id`` (neither is compared)."""
    doc = document(audit_id, changes, external_id)
    return {"_id": f"oid-{audit_id}", **doc, "metadata": {**doc["metadata"], "job_id": "old"}}


# -- the former implementation (a dict of digests), the oracle ---------------------------


def dict_index(documents: Iterable[Mapping[str, Any]]) -> tuple[dict[int, bytes], list, int, int]:
    digests: dict[int, bytes] = {}
    duplicates: list[str] = []
    unkeyed = scanned = 0
    for doc in documents:
        scanned += 1
        audit_id = audit_id_of(doc.get("external_id"))
        if audit_id is None:
            unkeyed += 1
            continue
        if audit_id in digests:
            duplicates.append(str(doc.get("external_id")))
            continue
        digests[audit_id] = digest(doc)
    return digests, duplicates, unkeyed, scanned


def dict_compare(entries: Iterable[PlanEntry], digests: dict[int, bytes]) -> FidelityTally:
    tally = FidelityTally()
    for entry in entries:
        if entry.code == SkipCode.UNMAPPED_ACTION_TYPE:
            tally.unmapped_rows.append((entry.external_id, entry.crm_audit_id, str(entry.code)))
        if entry.outcome != PlanOutcome.READY or entry.document is None:
            continue
        tally.ready += 1
        held = digests.get(entry.crm_audit_id)
        if held is None:
            continue
        tally.stored_of_ready += 1
        if held != digest(entry.document):
            tally.mismatched_count += 1
            if len(tally.mismatched) < WORST:
                tally.mismatched.append(entry.external_id)
    return tally


def as_dict(index: StoredIndex) -> dict[int, bytes]:
    pairs = {
        int(i): int(v).to_bytes(8, "big") for i, v in zip(index.ids, index.digests, strict=True)
    }
    return pairs | {i: v.to_bytes(8, "big") for i, v in index.wide.items()}


def assert_same_as_dict(documents: list[dict], entries: list[PlanEntry]) -> StoredIndex:
    digests, duplicates, unkeyed, scanned = dict_index(documents)
    index = index_stored(iter(documents))
    assert (index.duplicates, index.unkeyed, index.scanned) == (duplicates, unkeyed, scanned)
    assert as_dict(index) == digests and index.distinct == len(digests)
    assert index.ids.dtype == np.int64 and index.digests.dtype == np.uint64
    assert list(index.ids) == sorted(set(index.ids))  # ascending, unique
    for audit_id in {e.crm_audit_id for e in entries} | set(digests):
        assert index.digest_of(audit_id) == digests.get(audit_id)
    assert compare_plan(iter(entries), index) == dict_compare(entries, digests)
    return index


# -- the cases of the brief ---------------------------------------------------------------


def test_an_id_stored_two_and_three_times_is_listed_per_extra_copy_in_read_order():
    docs = [stored(5), stored(7, "b"), stored(5, "c"), stored(9), stored(7), stored(7)]
    index = index_stored(iter(docs))
    assert index.duplicates == ["crm_audit:5", "crm_audit:7", "crm_audit:7"]
    assert index.scanned == 6 and index.unkeyed == 0 and list(index.ids) == [5, 7, 9]
    # the first copy read is the one compared: 7's first copy has changes "b"
    assert index.digest_of(7) == digest(stored(7, "b"))
    tally = compare_plan([ready(5), ready(7), ready(9)], index)
    assert (tally.stored_of_ready, tally.mismatched) == (3, ["crm_audit:7"])
    assert_same_as_dict(docs, [ready(5), ready(7), ready(9)])


def test_unkeyed_documents_are_counted_not_indexed():
    docs = [
        {"company_sso_id": COMPANY, "source_tag": "crm_migration"},  # no external_id
        stored(1, external_id="note:1"),
        stored(2, external_id="crm_audit:"),
        stored(3, external_id="crm_audit:-3"),
        stored(4, external_id="crm_audit:4x"),
        {**stored(5), "external_id": None},
        stored(6),
    ]
    index = index_stored(iter(docs))
    assert (index.unkeyed, index.scanned, list(index.ids), index.duplicates) == (6, 7, [6], [])
    assert_same_as_dict(docs, [ready(i) for i in range(1, 8)])


def test_a_changed_document_is_a_mismatch_and_a_missing_one_is_not():
    index = index_stored(iter([stored(1), stored(2, "changed")]))
    tally = compare_plan([ready(1), ready(2), ready(3)], index)  # 3 was never stored
    assert (tally.ready, tally.stored_of_ready) == (3, 2)
    assert (tally.mismatched_count, tally.mismatched) == (1, ["crm_audit:2"])


def test_digests_ignore_key_order_id_and_run_fields():
    plan = ready(1)
    reordered = {k: plan.document[k] for k in reversed(list(plan.document))}
    reordered["metadata"] = {"job_id": "another-run", "crm_audit_id": 1}
    reordered["changes"] = [{"to": "a", "from": "x", "field": "name"}]
    index = index_stored(iter([{"_id": "oid", **reordered}]))
    tally = compare_plan([plan], index)
    assert (tally.stored_of_ready, tally.mismatched_count) == (1, 0)


def test_an_empty_company():
    index = index_stored(iter(()))
    assert (index.distinct, index.scanned, index.unkeyed, index.duplicates) == (0, 0, 0, [])
    assert index.ids.shape == (0,) and index.digests.shape == (0,)
    assert index.digest_of(1) is None
    tally = compare_plan([ready(1), ready(2)], index)
    assert (tally.ready, tally.stored_of_ready, tally.mismatched_count) == (2, 0, 0)
    assert compare_plan([], index) == FidelityTally() == compare_plan([], StoredIndex())


def test_non_canonical_and_huge_external_ids_stay_exact():
    docs = [
        stored(7, external_id="crm_audit:007"),
        stored(7),  # duplicate of 007: listed as written
        stored(7, external_id="crm_audit:0007"),
        stored(2**64, external_id=f"crm_audit:{2**64}"),
        stored(2**63, external_id=f"crm_audit:{2**63}"),
        stored(2**64, "b", external_id=f"crm_audit:{2**64}"),
        stored(2**63 - 1, external_id=f"crm_audit:{2**63 - 1}"),
    ]
    index = index_stored(iter(docs))
    assert index.duplicates == ["crm_audit:7", "crm_audit:0007", f"crm_audit:{2**64}"]
    entries = [ready(7), ready(2**64), ready(2**63 - 1), ready(-1), ready(2**70)]
    assert_same_as_dict(docs, entries)


def test_mismatches_list_the_first_worst_in_plan_order_across_lookup_chunks(monkeypatch):
    monkeypatch.setattr(validation, "LOOKUP_CHUNK", 3)
    ids = list(range(1, 60))
    docs = [stored(i, "changed" if i % 2 else "a") for i in reversed(ids)]
    entries: list[PlanEntry] = []
    for i in ids:
        entries.append(ready(i))
        if i % 5 == 0:
            entries.append(PlanEntry(1000 + i, f"crm_audit:{1000 + i}", PlanOutcome.SKIPPED))
    tally = compare_plan(iter(entries), index_stored(iter(docs)))
    assert tally.mismatched_count == 30 and tally.ready == 59 and tally.stored_of_ready == 59
    assert tally.mismatched == [f"crm_audit:{i}" for i in range(1, 2 * WORST, 2)]
    assert_same_as_dict(docs, entries)


# -- the old and the new agree on any stream ----------------------------------------------

external_ids = st.one_of(
    st.integers(0, 40).map(lambda i: f"crm_audit:{i}"),
    st.integers(0, 40).map(lambda i: f"crm_audit:{i:03d}"),
    st.sampled_from(["crm_audit:", "note:3", "crm_audit:-2", f"crm_audit:{2**64}", None]),
)


@settings(max_examples=300, deadline=None)
@given(
    docs=st.lists(st.tuples(external_ids, st.sampled_from("ab")), max_size=60),
    plan=st.lists(
        st.tuples(
            st.one_of(st.integers(-2, 45), st.just(2**64)),
            st.sampled_from("ab"),
            st.sampled_from(["ready", "skipped", "unmapped"]),
        ),
        max_size=60,
    ),
    chunk=st.sampled_from([1, 2, 7, 4096]),
)
def test_same_results_as_the_dict_index(docs, plan, chunk):
    documents = []
    for external_id, changes in docs:
        doc = stored(0, changes, external_id=external_id)
        doc["external_id"] = external_id
        documents.append(doc)
    entries = []
    for audit_id, changes, kind in plan:
        if kind == "ready":
            entries.append(ready(audit_id, changes))
        else:
            code = SkipCode.UNMAPPED_ACTION_TYPE if kind == "unmapped" else None
            entries.append(PlanEntry(audit_id, f"crm_audit:{audit_id}", PlanOutcome.SKIPPED, code))
    original = validation.LOOKUP_CHUNK
    validation.LOOKUP_CHUNK = chunk
    try:
        assert_same_as_dict(documents, entries)
    finally:
        validation.LOOKUP_CHUNK = original


# -- memory ---------------------------------------------------------------------------------


def synthetic_documents(count: int) -> Iterator[dict]:
    """Small stored documents, generated one at a time (never a list), in a scrambled id
    order (``i * 7919 mod count``: a permutation when count is not a multiple of 7919)."""
    for i in range(count):
        audit_id = i * 7919 % count + 1
        yield {"_id": i, "external_id": f"crm_audit:{audit_id}", "source_tag": "crm_migration"}


def peak_bytes_per_record(index: Any, count: int) -> tuple[float, float]:
    """(peak, held) traced bytes per document of ``index(documents)`` above the baseline."""
    documents = synthetic_documents(count)
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        result = index(documents)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result is not None
    return (peak - baseline) / count, (held - baseline) / count


#: measured on 200,000 documents: the dict index peaks at ~139 B and holds ~121 B per
#: document; the compact one peaks at ~33 B (the sort) and holds ~16 B
PEAK_BYTES_PER_RECORD = 40
HELD_BYTES_PER_RECORD = 20


def test_the_index_peaks_below_40_bytes_per_stored_document():
    count = 200_000
    peak, held = peak_bytes_per_record(index_stored, count)
    assert peak < PEAK_BYTES_PER_RECORD, f"{peak:.1f} B/record at peak"
    assert held < HELD_BYTES_PER_RECORD, f"{held:.1f} B/record held"


def test_the_memory_bound_fails_the_dict_index():
    """The bound above is not vacuous: the former implementation exceeds it."""
    peak, held = peak_bytes_per_record(dict_index, 50_000)
    assert peak > 2 * PEAK_BYTES_PER_RECORD and held > 2 * HELD_BYTES_PER_RECORD


def test_external_ids_int_cannot_read_are_unkeyed_not_a_crash():
    """``str.isdigit`` accepts ``²``/``①`` (``int`` does not) and ``int`` refuses more than
    4300 digits: one such stored document made ``index_stored`` raise, so the report's
    ``with_retries`` gave up and the whole CID went ``VALIDATION_SKIPPED``."""
    odd = ["crm_audit:²", "crm_audit:1①", "crm_audit:" + "9" * 5000]
    index = index_stored([stored(1), *(stored(2, external_id=e) for e in odd)])
    assert (index.scanned, index.unkeyed, index.distinct) == (4, 3, 1)
    assert [audit_id_of(e) for e in odd] == [None, None, None]
    assert audit_id_of("crm_audit:٣") == 3  # a decimal digit int reads: keyed as before
