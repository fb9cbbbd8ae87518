"""The chunk store between assets (core/chunks.py; SPEC-activity-logs §11 [N19], §10 [N18]):
order and chunk sizes, laziness, the small handle, per-asset/CID supersession, rollback
removal and the 30-day retention. Stack-free."""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass

import pytest

from notes_pipeline.core.chunks import (
    RETENTION_DAYS,
    ChunkedRecords,
    ChunksMissing,
    ChunkWriter,
    chunk_manifest,
    remove_chunks,
    remove_expired_chunks,
    run_chunk_dir,
    write_chunks,
)


@dataclass(frozen=True)
class Row:
    id: int
    text: str


def rows(n: int, start: int = 0) -> list[Row]:
    return [Row(i, f"secret-{i}") for i in range(start, start + n)]


def test_records_come_back_in_order_in_chunks_of_chunk_size(tmp_path):
    writer = ChunkWriter[Row](tmp_path / "d", chunk_size=3)
    writer.append(rows(2))
    writer.append(rows(4, 2))  # crosses a chunk boundary: split into two frames
    writer.append([])
    writer.append(rows(1, 6))
    handle = writer.close()
    assert handle.chunk_sizes == (3, 3, 1) and len(handle) == 7 and handle.chunk_count == 3
    assert list(handle) == rows(7)
    assert [len(c) for c in handle.iter_chunks()] == [3, 3, 1]
    assert [[r.id for r in f] for f in handle.iter_frames()] == [[0, 1], [2], [3, 4, 5], [6]]
    assert chunk_manifest(tmp_path / "d")["chunk_sizes"] == [3, 3, 1]
    with pytest.raises(RuntimeError):
        writer.append(rows(1))


def test_the_handle_is_small_and_holds_no_record(tmp_path):
    handle = write_chunks(tmp_path / "d", rows(5_000), chunk_size=1_000)
    pickled = pickle.dumps(handle)
    assert b"secret" not in pickled and len(pickled) < 1_000
    assert pickle.loads(pickled) == handle and list(pickle.loads(pickled))[-1] == Row(
        4999, "secret-4999"
    )


def test_reading_is_lazy_chunk_by_chunk(tmp_path):
    handle = write_chunks(tmp_path / "d", rows(10), chunk_size=4)
    records = iter(handle)
    assert next(records) == Row(0, "secret-0")
    handle.chunk_path(2).unlink()  # a later chunk is only opened when reached
    assert [r.id for r in (next(records) for _ in range(7))] == list(range(1, 8))
    with pytest.raises(ChunksMissing, match="chunk 2"):
        next(records)


def test_an_empty_stream(tmp_path):
    handle = write_chunks(tmp_path / "d", [], chunk_size=4)
    assert (len(handle), list(handle), list(handle.iter_chunks())) == (0, [], [])


def test_a_failed_writer_leaves_nothing_and_keeps_the_previous_run(tmp_path):
    first = ChunkWriter.for_run(tmp_path, "asset_a", "1001", "run-1", 10)
    first.append(rows(3))
    done = first.close()
    with pytest.raises(ZeroDivisionError):
        with ChunkWriter.for_run(tmp_path, "asset_a", "1001", "run-2", 10) as writer:
            writer.append(rows(3))
            raise ZeroDivisionError
    assert not run_chunk_dir(tmp_path, "asset_a", "1001", "run-2").exists()
    assert list(done) == rows(3)


def test_a_complete_run_supersedes_older_runs_of_the_same_asset_and_cid_only(tmp_path):
    old = write_chunks(run_chunk_dir(tmp_path, "asset_a", "1001", "run-1"), rows(2), 10)
    other_cid = write_chunks(run_chunk_dir(tmp_path, "asset_a", "1002", "run-1"), rows(2), 10)
    other_asset = write_chunks(run_chunk_dir(tmp_path, "asset_b", "1001", "run-1"), rows(2), 10)
    abandoned = run_chunk_dir(tmp_path, "asset_a", "1001", "run-0")
    abandoned.mkdir(parents=True)  # a killed worker's partial directory, or a writer still busy
    writer = ChunkWriter.for_run(tmp_path, "asset_a", "1001", "run-2", 10)
    concurrent = write_chunks(run_chunk_dir(tmp_path, "asset_a", "1001", "run-3"), rows(2), 10)
    writer.append(rows(1))
    assert list(old) == rows(2)  # still readable while the new run is incomplete
    new = writer.close()
    assert abandoned.exists()  # never a writer's half-written chunks: the retention clears it
    assert list(concurrent) == rows(2)  # completed after this writer started: a concurrent run
    with pytest.raises(ChunksMissing):
        list(old)
    assert list(new) == rows(1) and list(other_cid) == rows(2) and list(other_asset) == rows(2)


def test_a_run_in_flight_keeps_its_chunks_until_it_is_over(tmp_path):
    """Two runs of one CID: the first finished writing before the second started, but still
    has its load to run, so the second's writer must leave its chunks alone."""
    in_flight = {"run-1"}
    first = write_chunks(run_chunk_dir(tmp_path, "asset_a", "1001", "run-1"), rows(2), 10)
    over = write_chunks(run_chunk_dir(tmp_path, "asset_a", "1001", "run-0"), rows(2), 10)
    crashed = run_chunk_dir(tmp_path, "asset_a", "1001", "run-crashed")
    crashed.mkdir(parents=True)  # partial directory of a run the instance says is over
    second = ChunkWriter.for_run(
        tmp_path, "asset_a", "1001", "run-2", 10, run_in_flight=in_flight.__contains__
    )
    second.append(rows(1))
    second.close()
    assert list(first) == rows(2)
    assert not crashed.exists()
    with pytest.raises(ChunksMissing):
        list(over)
    in_flight.clear()  # run-1 ended: the next completing writer supersedes it
    ChunkWriter.for_run(
        tmp_path, "asset_a", "1001", "run-3", 10, run_in_flight=in_flight.__contains__
    ).close()
    with pytest.raises(ChunksMissing):
        list(first)


def test_a_retried_step_in_the_same_run_starts_from_an_empty_directory(tmp_path):
    write_chunks(run_chunk_dir(tmp_path, "a", "1", "run-1"), rows(5), 2)
    retried = ChunkWriter.for_run(tmp_path, "a", "1", "run-1", 2)
    retried.append(rows(1))
    assert list(retried.close()) == rows(1)


def test_rollback_removes_every_chunk_of_the_cid_only(tmp_path):
    for asset in ("asset_a", "asset_b"):
        for cid in ("1001", "1002"):
            write_chunks(run_chunk_dir(tmp_path, asset, cid, "run-1"), rows(1), 10)
    assert remove_chunks(tmp_path, "1001") == 2
    assert remove_chunks(tmp_path, "1001") == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("chunks/*/*")) == [
        "chunks/asset_a/1002",
        "chunks/asset_b/1002",
    ]
    assert remove_chunks(tmp_path / "nothing-here", "1001") == 0


def test_rollback_of_one_family_removes_only_its_assets_chunks(tmp_path):
    for asset in ("asset_a", "asset_b"):
        write_chunks(run_chunk_dir(tmp_path, asset, "1001", "run-1"), rows(1), 10)
    assert remove_chunks(tmp_path, "1001", ["asset_a"]) == 1
    assert [p.parent.name for p in tmp_path.glob("chunks/*/1001")] == ["asset_b"]


def test_paths_stay_inside_the_chunk_root(tmp_path):
    for bad in ("..", "../x", "a/b", "", "."):
        with pytest.raises(ValueError):
            run_chunk_dir(tmp_path, "asset_a", bad, "run-1")
        with pytest.raises(ValueError):
            remove_chunks(tmp_path, bad)


def test_chunks_older_than_the_retention_are_removed(tmp_path):
    """[N18]: at most 30 days; ages come from the manifest (no waiting: ``now`` is passed)."""
    aged = write_chunks(run_chunk_dir(tmp_path, "a", "1001", "run-1"), rows(1), 10)
    young = write_chunks(run_chunk_dir(tmp_path, "a", "1002", "run-1"), rows(1), 10)
    month = RETENTION_DAYS * 86_400
    old_stamp = time.time() - month - 60
    os.utime(os.path.join(aged.directory, "manifest.json"), (old_stamp, old_stamp))
    assert remove_expired_chunks(tmp_path) == 1
    with pytest.raises(ChunksMissing):
        list(aged)
    assert list(young) == rows(1)
    assert remove_expired_chunks(tmp_path, now=time.time() + month + 60) == 1
    # and a completing run applies the retention to the whole store
    stale = write_chunks(run_chunk_dir(tmp_path, "b", "1003", "run-1"), rows(1), 10)
    os.utime(os.path.join(stale.directory, "manifest.json"), (old_stamp, old_stamp))
    ChunkWriter.for_run(tmp_path, "a", "1004", "run-1", 10).close()
    with pytest.raises(ChunksMissing):
        list(stale)


def test_the_handle_compares_by_location_and_sizes(tmp_path):
    assert ChunkedRecords(str(tmp_path), (1, 2)) == ChunkedRecords(str(tmp_path), (1, 2))
    with pytest.raises(ValueError):
        ChunkWriter(tmp_path / "d", chunk_size=0)
