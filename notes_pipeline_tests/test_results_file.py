"""``benchmarks/results_file.update_section``: one benchmark's figures never erase another's."""

from __future__ import annotations

import json

from benchmarks.results_file import update_section


def test_a_section_is_replaced_or_merged_and_the_others_are_kept(tmp_path):
    path = tmp_path / "latest.json"
    path.write_text(
        json.dumps(
            {
                "scale": {"cid_10k": 1},
                "activity_logs": {"perf": {"records_per_s": 1}, "full_backfill_wall_s": 90},
            }
        )
    )
    update_section("activity_logs", {"perf": {"records_per_s": 2}}, path, merge=True)
    merged = json.loads(path.read_text())
    assert merged["activity_logs"] == {"perf": {"records_per_s": 2}, "full_backfill_wall_s": 90}
    assert merged["scale"] == {"cid_10k": 1}
    assert {"date", "commit", "machine"} <= set(merged)
    update_section("activity_logs", {"perf": {"records_per_s": 3}}, path)
    assert json.loads(path.read_text())["activity_logs"] == {"perf": {"records_per_s": 3}}
