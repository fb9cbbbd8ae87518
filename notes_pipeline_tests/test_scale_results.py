"""The pure parts of the scale benchmark (``benchmarks/scale_results.py``), without the stack."""

from __future__ import annotations

import json

import pytest

from benchmarks.scale_results import (
    batch_event,
    ceiling_row,
    edge_medians,
    evaluate_targets,
    loader_batches,
    merge_section,
    parse_sizes,
    pending_row,
    row_key,
    shape_row,
)
from notes_pipeline.contact_notes import events


def test_sizes_parse_and_name_their_rows():
    assert parse_sizes("200k,1k, 50k,10k,1k") == [1000, 10_000, 50_000, 200_000]
    assert parse_sizes("1500") == [1500]
    assert row_key(50_000, False) == "cid_50k"
    assert row_key(200_000, True) == "cid_200k_attachments"
    assert row_key(1500, False) == "cid_1500"
    for bad in ("", ",", "k", "1m", "-5", "0", "10k,x"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_batch_events_are_read_from_the_loaders_own_log_line():
    line = events.event_line(
        events.BATCH_COMPLETED,
        job_id="r",
        cid="4002",
        batch_number=3,
        notes_in_batch=500,
        failed_in_batch=0,
    )
    assert batch_event(line)["batch_number"] == 3
    assert batch_event(f"migrate_cid - r - cdp_notes_loaded - {line}")["notes_in_batch"] == 500
    assert (
        batch_event(events.event_line(events.HALTED, job_id="r", cid="1", failure_rate=2)) is None
    )
    assert (
        batch_event(None) is None and batch_event("crm_notes_migration_batch_completed {") is None
    )


def _batch(number: int, notes: int = 500) -> dict:
    return {"event": events.BATCH_COMPLETED, "batch_number": number, "notes_in_batch": notes}


def test_batch_durations_are_gaps_between_events_and_a_short_tail_is_left_out():
    # batch n ends at t = n * n: batch 2 took 3 s, batch 3 5 s, ... batch 9 took 17 s
    stamps = [(float(n * n), _batch(n)) for n in range(1, 10)]
    stamps.append((100.0 + 81, _batch(10, notes=12)))  # a small final batch, 100 s
    result = loader_batches(reversed(stamps))
    assert result["batches"] == 10
    assert result["batch_s"][:3] == [3.0, 5.0, 7.0]
    # 9 gaps, minus the tail → 8, k = 2 per end: median(3, 5) and median(15, 17)
    assert (result["first_batch_s"], result["last_batch_s"], result["edge_batches"]) == (
        4.0,
        16.0,
        2,
    )
    assert result["last_over_first"] == 4.0


def test_edges_do_not_overlap_and_need_two_batches():
    assert edge_medians([1.0]) == (None, None, 0)
    assert edge_medians([1.0, 2.0]) == (1.0, 2.0, 1)
    first, last, k = edge_medians([1.0] * 5 + [9.0] * 30)
    assert (first, last, k) == (1.0, 9.0, 5)


def test_a_row_carries_the_issues_keys_and_the_ratio_to_the_ceiling():
    ceiling = ceiling_row(1000, [1.0, 1.0], [500, 500])
    row = shape_row(
        {
            "notes": 2000,
            "attachments": False,
            "run": {"status": "SUCCESS", "created": 100.0, "start": 101.0, "end": 104.0},
            "loader": {"migrated": 990, "skipped": 10, "duration_seconds": 2.5},
            "batches": {"first_batch_s": 1.0, "last_batch_s": 1.2, "last_over_first": 1.2},
            "memory": {"peak_rss_mb": 210.0},
            "ceiling": ceiling,
        }
    )
    assert ceiling["notes_per_s"] == 500.0
    assert row["notes_per_s"] == 500.0  # 2,000 notes, created → end 4 s
    assert row["loader_notes_per_s"] == 400.0  # 1,000 written in 2.5 s
    assert row["ratio_to_ceiling"] == 0.8
    for key in ("first_batch_s", "last_batch_s", "peak_rss_mb", "ceiling_notes_per_s"):
        assert key in row
    json.dumps(row)


def test_a_run_cut_short_is_pending_with_what_it_measured():
    row = shape_row(
        {
            "notes": 200_000,
            "attachments": False,
            "pending": "run cancelled at its time budget",
            "run": {"status": "CANCELED", "created": 0.0, "start": 1.0, "end": 601.0},
            "memory": {"peak_rss_mb": 700.0},
            "progress": {"records_processed": 5000, "records_total": 91_585},
            "batches": {"batches": 10, "first_batch_s": 2.0, "last_batch_s": 9.0},
        }
    )
    assert row["status"] == "pending" and row["notes_per_s"] is None
    assert row["peak_rss_mb"] is None and row["partial"]["peak_rss_mb_so_far"] == 700.0
    assert row["partial"]["ready_notes_written"] == 5000


def test_targets_are_met_missed_or_not_measured():
    rows = {
        "cid_10k": {"notes_per_s": 1500.0},
        "cid_50k": {"notes_per_s": 1200.0, "last_over_first": 1.5, "ratio_to_ceiling": 0.7},
        "cid_200k": pending_row(200_000, False, "too slow today"),
    }
    targets = evaluate_targets(rows)
    assert targets["cid_50k_notes_per_s"]["met"] is True
    assert targets["cid_50k_last_over_first"]["met"] is False
    assert targets["cid_50k_ratio_to_ceiling"]["met"] is True
    assert targets["cid_200k_peak_rss_mb"]["met"] is None
    assert targets["cid_200k_notes_per_s_vs_10k"]["met"] is None
    rows["cid_200k"] = {"notes_per_s": 1250.0, "peak_rss_mb": 280.0}
    targets = evaluate_targets(rows)
    assert targets["cid_200k_notes_per_s_vs_10k"] == {
        "value": 0.833,
        "target": ">= 0.8",
        "met": True,
    }
    assert targets["cid_200k_peak_rss_mb"]["met"] is True


def test_merge_keeps_rows_not_measured_again_and_never_downgrades_to_pending():
    previous = {
        "date": "old",
        "cid_10k": {"notes_per_s": 100.0, "commit": "a"},
        "cid_50k": {"notes_per_s": 50.0, "commit": "a"},
        "targets": {},
    }
    section = merge_section(
        previous,
        {
            "cid_50k": {"notes_per_s": 60.0, "commit": "b"},
            "cid_10k": pending_row(10_000, False, "x"),
        },
        date="new",
    )
    assert section["date"] == "new"
    assert section["cid_10k"] == {"notes_per_s": 100.0, "commit": "a"}
    assert section["cid_50k"]["commit"] == "b"
    assert section["targets"]["cid_50k_notes_per_s"]["value"] == 60.0
    assert [k for k in section if k.startswith("cid_")] == ["cid_10k", "cid_50k"]
