"""Pure parts of the scale benchmark (``scale.py``): sizes, per-batch timings, the row of one
CID, the targets of issue #14 item 4 and the ``scale`` section of ``results/latest.json``.

No I/O here, so ``notes_pipeline_tests/test_scale_results.py`` checks it without the stack.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BATCH_EVENT = "crm_notes_migration_batch_completed"
#: batches at each end whose median is reported as ``first_batch_s`` / ``last_batch_s``
EDGE_BATCHES = 5
TARGETS = {
    "cid_50k_notes_per_s_min": 1000.0,  # end to end, no attachments
    "cid_50k_last_over_first_max": 1.30,  # last batch within 30 % of the first
    "cid_50k_ratio_to_ceiling_min": 0.50,  # loader ≥ 50 % of the server's own ceiling
    "cid_200k_peak_rss_mb_max": 300.0,
    "cid_200k_vs_10k_notes_per_s_min": 0.80,  # within 20 % of the 10k CID's notes/s
}
_SIZE = re.compile(r"^(\d+)(k?)$")


def parse_size(text: str) -> int:
    """``"50k"`` → 50,000; ``"1500"`` → 1,500. Raises ``ValueError`` on anything else."""
    match = _SIZE.match(text.strip().lower())
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"not a note count: {text!r} (e.g. 1k, 10k, 50k, 200k, 1500)")
    return int(match.group(1)) * (1000 if match.group(2) else 1)


def parse_sizes(text: str) -> list[int]:
    """Comma-separated sizes, ascending, without repeats (at least one)."""
    sizes = sorted({parse_size(part) for part in text.split(",") if part.strip()})
    if not sizes:
        raise ValueError(f"no sizes in {text!r}")
    return sizes


def size_label(notes: int) -> str:
    """50,000 → ``"50k"``; 1,500 → ``"1500"``."""
    return f"{notes // 1000}k" if notes % 1000 == 0 else str(notes)


def row_key(notes: int, attachments: bool) -> str:
    """The row's key in the ``scale`` section: ``cid_50k`` or ``cid_50k_attachments``."""
    return f"cid_{size_label(notes)}" + ("_attachments" if attachments else "")


def batch_event(message: str | None) -> dict[str, Any] | None:
    """The JSON of a ``batch_completed`` event line (the loader logs it on ``context.log``),
    or None for any other message."""
    if not message or BATCH_EVENT not in message:
        return None
    start = message.find("{")
    try:
        data = json.loads(message[start:]) if start >= 0 else None
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("event") == BATCH_EVENT else None


def intervals(timestamps: Sequence[float]) -> list[float]:
    """Durations between consecutive timestamps (sorted first)."""
    ordered = sorted(timestamps)
    return [round(b - a, 4) for a, b in zip(ordered, ordered[1:], strict=False)]


def edge_medians(
    durations: Sequence[float], sizes: Sequence[int] | None = None, edge: int = EDGE_BATCHES
) -> tuple[float | None, float | None, int]:
    """(median of the first ``k``, median of the last ``k`` full batches, ``k``).

    ``sizes`` (notes per batch, aligned with ``durations``) drops a smaller final batch from
    the "last" end, so a short tail batch cannot flatter the comparison. ``k`` shrinks so the
    two ends never overlap (at most a third of the batches each); fewer than two batches → no
    comparison.
    """
    values = list(durations)
    if sizes is not None and len(sizes) == len(values) and len(values) > 1:
        if sizes[-1] < max(sizes):
            values = values[:-1]
    if len(values) < 2:
        return None, None, 0
    k = max(1, min(edge, len(values) // 3))
    return (
        round(statistics.median(values[:k]), 4),
        round(statistics.median(values[-k:]), 4),
        k,
    )


def rate(count: float | None, seconds: float | None) -> float | None:
    """``count / seconds`` rounded to 0.1, or None when either is missing or zero time."""
    if count is None or not seconds:
        return None
    return round(count / seconds, 1)


def loader_batches(
    events: Iterable[tuple[float, dict[str, Any]]],
) -> dict[str, Any]:
    """Per-batch timing of the loader from its ``batch_completed`` events (timestamp, JSON).

    A batch's duration is the time from the previous batch's event to its own, so batch 1
    (whose start has no event) is not timed: ``batch_s[i]`` is batch ``i + 2``.
    """
    ordered = sorted(events, key=lambda item: (item[1].get("batch_number", 0), item[0]))
    stamps = [t for t, _ in ordered]
    sizes = [int(e.get("notes_in_batch", 0)) for _, e in ordered]
    durations = intervals(stamps)
    first, last, k = edge_medians(durations, sizes[1:])
    return {
        "batches": len(ordered),
        "batch_s": durations,
        "batch_notes": sizes,
        "first_batch_s": first,
        "last_batch_s": last,
        "edge_batches": k,
        "last_over_first": round(last / first, 3) if first and last else None,
        "failed_in_batches": sum(int(e.get("failed_in_batch", 0)) for _, e in ordered),
    }


def ceiling_row(docs: int, batch_s: Sequence[float], batch_sizes: Sequence[int]) -> dict:
    """The bare-pymongo ceiling's figures from its timed batches."""
    total = sum(batch_s)
    first, last, k = edge_medians(batch_s, batch_sizes)
    return {
        "documents": docs,
        "batches": len(batch_s),
        "seconds": round(total, 2),
        "notes_per_s": rate(docs, total),
        "first_batch_s": first,
        "last_batch_s": last,
        "edge_batches": k,
        "last_over_first": round(last / first, 3) if first and last else None,
        "batch_s": [round(s, 4) for s in batch_s],
    }


def shape_row(measured: Mapping[str, Any]) -> dict[str, Any]:
    """The published row of one CID from what ``scale.py`` measured.

    ``measured`` holds ``notes``, ``attachments``, ``run`` (created/start/end timestamps,
    status), ``loader`` (the ``cdp_notes_loaded`` metadata), ``batches`` (``loader_batches``),
    ``memory`` (peak RSS/PSS in MB) and optionally ``ceiling`` (``ceiling_row``), ``loadavg``,
    ``seed`` and ``steps``.
    """
    if measured.get("pending") or measured.get("error"):
        return pending_row(
            measured["notes"],
            bool(measured.get("attachments")),
            measured.get("pending") or measured["error"],
            partial=partial_figures(measured),
            date=measured.get("date"),
            commit=measured.get("commit"),
        )
    run = measured.get("run", {})
    loader = measured.get("loader", {})
    batches = measured.get("batches", {})
    memory = measured.get("memory", {})
    ceiling = measured.get("ceiling") or {}
    end_to_end = _span(run.get("created"), run.get("end"))
    in_run = _span(run.get("start"), run.get("end"))
    written = (loader.get("migrated") or 0) + (loader.get("skipped") or 0)
    loader_s = loader.get("duration_seconds")
    loader_rate = rate(written, loader_s)
    ceiling_rate = ceiling.get("notes_per_s")
    row = {
        "notes": measured["notes"],
        "attachments": bool(measured.get("attachments")),
        "status": run.get("status"),
        "wall_s": end_to_end,
        "in_run_s": in_run,
        "launch_to_start_s": _span(run.get("created"), run.get("start")),
        "notes_per_s": rate(measured["notes"], end_to_end),
        "written": written,
        "loader_s": loader_s,
        "loader_notes_per_s": loader_rate,
        "peak_rss_mb": memory.get("peak_rss_mb"),
        "peak_pss_mb": memory.get("peak_pss_mb"),
        "start_rss_mb": memory.get("start_rss_mb"),
        "first_batch_s": batches.get("first_batch_s"),
        "last_batch_s": batches.get("last_batch_s"),
        "last_over_first": batches.get("last_over_first"),
        "batches": batches.get("batches"),
        "attachments_copied": loader.get("attachments_copied"),
        "attachment_objects_per_s": rate(loader.get("attachments_copied"), loader_s)
        if loader.get("attachments_copied")
        else None,
        "ceiling_notes_per_s": ceiling_rate,
        "ratio_to_ceiling": round(loader_rate / ceiling_rate, 3)
        if loader_rate and ceiling_rate
        else None,
        "ceiling_first_batch_s": ceiling.get("first_batch_s"),
        "ceiling_last_batch_s": ceiling.get("last_batch_s"),
        "outcomes": measured.get("outcomes"),
        "steps_s": measured.get("steps"),
        "loadavg": measured.get("loadavg"),
    }
    for key in ("date", "commit", "pending", "error"):
        if measured.get(key) is not None:
            row[key] = measured[key]
    return row


def pending_row(notes: int, attachments: bool, reason: str, **partial: Any) -> dict[str, Any]:
    """A row not measured (to the end): the required keys are present and null."""
    row = {
        "notes": notes,
        "attachments": attachments,
        "status": "pending",
        "pending": reason,
        "notes_per_s": None,
        "peak_rss_mb": None,
        "first_batch_s": None,
        "last_batch_s": None,
        "ceiling_notes_per_s": None,
        "ratio_to_ceiling": None,
    }
    row.update({k: v for k, v in partial.items() if v is not None})
    return row


def partial_figures(measured: Mapping[str, Any]) -> dict[str, Any]:
    """What a run cut short (or failed) did measure: lower bounds, not results."""
    run = measured.get("run", {})
    batches = measured.get("batches", {})
    progress = measured.get("progress") or {}
    return {
        "status": run.get("status"),
        "in_run_s": _span(run.get("start"), run.get("end")),
        "peak_rss_mb_so_far": measured.get("memory", {}).get("peak_rss_mb"),
        "ready_notes_written": progress.get("records_processed"),
        "ready_notes_total": progress.get("records_total"),
        "batches_done": batches.get("batches"),
        "first_batch_s": batches.get("first_batch_s"),
        "last_batch_s_so_far": batches.get("last_batch_s"),
        "steps_s": measured.get("steps"),
        "loadavg": measured.get("loadavg"),
    }


def _span(begin: float | None, end: float | None) -> float | None:
    return round(end - begin, 2) if begin is not None and end is not None else None


def evaluate_targets(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Issue #14 item 4's acceptance figures: value, target and ``met`` (None = not measured)."""
    r10 = rows.get("cid_10k", {})
    r50 = rows.get("cid_50k", {})
    r200 = rows.get("cid_200k", {})

    def check(value, target, ok) -> dict[str, Any]:
        return {"value": value, "target": target, "met": None if value is None else ok(value)}

    vs_10k = None
    if r200.get("notes_per_s") and r10.get("notes_per_s"):
        vs_10k = round(r200["notes_per_s"] / r10["notes_per_s"], 3)
    return {
        "cid_50k_notes_per_s": check(
            r50.get("notes_per_s"),
            f">= {TARGETS['cid_50k_notes_per_s_min']:.0f}",
            lambda v: v >= TARGETS["cid_50k_notes_per_s_min"],
        ),
        "cid_50k_last_over_first": check(
            r50.get("last_over_first"),
            f"<= {TARGETS['cid_50k_last_over_first_max']}",
            lambda v: v <= TARGETS["cid_50k_last_over_first_max"],
        ),
        "cid_50k_ratio_to_ceiling": check(
            r50.get("ratio_to_ceiling"),
            f">= {TARGETS['cid_50k_ratio_to_ceiling_min']}",
            lambda v: v >= TARGETS["cid_50k_ratio_to_ceiling_min"],
        ),
        "cid_200k_peak_rss_mb": check(
            r200.get("peak_rss_mb"),
            f"<= {TARGETS['cid_200k_peak_rss_mb_max']:.0f}",
            lambda v: v <= TARGETS["cid_200k_peak_rss_mb_max"],
        ),
        "cid_200k_notes_per_s_vs_10k": check(
            vs_10k,
            f">= {TARGETS['cid_200k_vs_10k_notes_per_s_min']}",
            lambda v: v >= TARGETS["cid_200k_vs_10k_notes_per_s_min"],
        ),
    }


def merge_section(
    previous: Mapping[str, Any] | None, rows: Mapping[str, Mapping[str, Any]], **info: Any
) -> dict[str, Any]:
    """The new ``scale`` section: ``info`` (date, label, machine...), the previous section's
    rows that were not measured again (each keeps its own date and commit), the new rows, and
    the targets evaluated over the merged rows. A pending row never replaces a measured one."""
    merged: dict[str, Any] = {
        k: dict(v)
        for k, v in (previous or {}).items()
        if k.startswith("cid_") and isinstance(v, Mapping)
    }
    for key, row in rows.items():
        old = merged.get(key)
        if row.get("pending") and old and not old.get("pending"):
            continue
        merged[key] = dict(row)
    section: dict[str, Any] = dict(info)
    section.update(dict(sorted(merged.items(), key=lambda kv: _row_order(kv[0]))))
    section["targets"] = evaluate_targets(merged)
    return section


def _row_order(key: str) -> tuple[int, int]:
    match = re.match(r"cid_(\d+)(k?)", key)
    notes = int(match.group(1)) * (1000 if match.group(2) else 1) if match else 0
    return (key.endswith("_attachments"), notes)
