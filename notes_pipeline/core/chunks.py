"""Chunked record streams between assets (SPEC-activity-logs §11 [N19], §15 "data passes between
assets through the IO manager in chunks", §10 [N18] retention).

An asset that produces many records writes them with a ``ChunkWriter`` into files under the
Dagster instance's storage directory and returns a ``ChunkedRecords`` handle — a small, picklable
value (a directory and the record count of each chunk) — so what the IO manager pickles is the
handle, never the records. A reader iterates the handle lazily: ``iter(handle)`` holds one frame
(one appended batch, e.g. a CRM page of 500) at a time, ``handle.iter_chunks()`` one chunk
(≤ ``chunk_size`` records). Memory is therefore bounded by the chunk, never by the CID.

Layout: ``<storage_dir>/chunks/<asset>/<cid>/<run_id>/`` holding ``chunk-00000.pickle``, … and
``manifest.json`` (written last: the directory is complete). Each chunk file is a sequence of
pickle frames, each a list of records (a fresh pickler per frame: no memo across frames).
Pickle, not Parquet: the records are frozen dataclasses with enums and free-form nested documents
(``changes[].from/to`` of any JSON type), which round-trip exactly through pickle and would need
a lossy JSON-in-a-column schema in Parquet; the files are written and read by the same trusted
pipeline, as the default IO manager's pickles are.

Retention: when a writer completes, the other run directories of the same asset and CID whose run
is over (finished, or gone from the instance) are removed — a run still in flight keeps its chunks
until it ends, since its downstream steps read them — and every chunk directory older than
``RETENTION_DAYS`` is removed ([N18]: intermediates are kept at most 30 days).
``remove_chunks(storage_dir, cid)`` removes a CID's intermediates (rollback, [N18]).
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # this module needs no Dagster at run time (records import it)
    import dagster as dg

T = TypeVar("T")

CHUNKS_DIR = "chunks"
MANIFEST = "manifest.json"
RETENTION_DAYS = 30  # SPEC-activity-logs §10 [N18]: intermediates kept at most 30 days
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class ChunksMissing(FileNotFoundError):
    """A ``ChunkedRecords`` handle whose files are gone (removed by rollback, by retention or
    by a newer run of the same asset and CID): re-materialize the producing asset."""


def _segment(value: str, what: str) -> str:
    """``value`` as one path segment: letters, digits, ``_ . -``; raises ``ValueError``
    otherwise (a partition key never walks out of the chunk root)."""
    text = str(value)
    if not _SEGMENT.fullmatch(text) or text in (".", ".."):
        raise ValueError(f"invalid {what} for a chunk directory")
    return text


def chunk_root(storage_dir: str | Path) -> Path:
    """``<storage_dir>/chunks``: every chunk directory of the instance lives below it."""
    return Path(storage_dir) / CHUNKS_DIR


def run_chunk_dir(storage_dir: str | Path, asset: str, cid: str, run_id: str) -> Path:
    """``<storage_dir>/chunks/<asset>/<cid>/<run_id>`` (each part a single safe path segment;
    raises ``ValueError`` otherwise)."""
    return (
        chunk_root(storage_dir)
        / _segment(asset, "asset")
        / _segment(cid, "cid")
        / _segment(run_id, "run id")
    )


@dataclass(frozen=True)
class ChunkedRecords(Generic[T]):
    """A stored, chunked stream of records of type ``T``, in the order they were appended.

    ``directory`` is absolute; ``chunk_sizes`` the record count of each chunk file, in order
    (every chunk but the last holds exactly the writer's ``chunk_size``). Picklable and small:
    this, not the records, is what the IO manager stores. Iterating raises ``ChunksMissing``
    when the files are gone.
    """

    directory: str
    chunk_sizes: tuple[int, ...] = ()

    def __len__(self) -> int:
        """Records in the stream."""
        return sum(self.chunk_sizes)

    @property
    def chunk_count(self) -> int:
        """Chunk files in the stream."""
        return len(self.chunk_sizes)

    def chunk_path(self, index: int) -> Path:
        """The file of chunk ``index`` (0-based)."""
        return Path(self.directory) / f"chunk-{index:05d}.pickle"

    def _frames(self, index: int) -> Iterator[list[T]]:
        path = self.chunk_path(index)
        try:
            handle: IO[bytes] = path.open("rb")
        except FileNotFoundError:
            raise ChunksMissing(
                f"chunk {index} of {self.directory} is missing: re-materialize the asset"
            ) from None
        with handle:
            while True:
                try:
                    yield pickle.load(handle)
                except EOFError:
                    return

    def iter_frames(self) -> Iterator[list[T]]:
        """Every record, as the lists the writer was given (split at chunk boundaries):
        memory is one frame."""
        for index in range(self.chunk_count):
            yield from self._frames(index)

    def iter_chunks(self) -> Iterator[list[T]]:
        """Every record, one list per chunk (≤ the writer's ``chunk_size``): memory is one
        chunk."""
        for index in range(self.chunk_count):
            chunk: list[T] = []
            for frame in self._frames(index):
                chunk.extend(frame)
            yield chunk

    def __iter__(self) -> Iterator[T]:
        """Every record once, in order; memory is one frame."""
        for frame in self.iter_frames():
            yield from frame


class ChunkWriter(Generic[T]):
    """Appends records to chunk files in ``directory`` (created empty; an existing one, e.g.
    from an earlier attempt of the same step, is cleared first), ``chunk_size`` records per
    chunk file. Use as a context manager: on an exception the directory is removed.

    ``close()`` writes the manifest and returns the ``ChunkedRecords`` handle; a writer made by
    ``for_run`` / ``for_asset`` then also removes the other run directories of its asset and
    CID whose run is over (``run_in_flight(run_id)`` false; without that predicate: complete
    before this writer started) and the chunk directories older than ``retention_days``
    (§10 [N18]). Raises ``ValueError`` for ``chunk_size < 1`` and ``OSError`` from the file
    system.
    """

    def __init__(
        self,
        directory: str | Path,
        chunk_size: int,
        *,
        prune_siblings: bool = False,
        run_in_flight: Callable[[str], bool] | None = None,
        retention: tuple[Path, float] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be ≥ 1")
        self.directory = Path(directory).absolute()
        self.chunk_size = chunk_size
        self._prune_siblings = prune_siblings
        self._run_in_flight = run_in_flight
        self._retention = retention
        self._started = time.time()
        self._sizes: list[int] = []
        self._file: IO[bytes] | None = None
        self._closed = False
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)

    @classmethod
    def for_run(
        cls,
        storage_dir: str | Path,
        asset: str,
        cid: str,
        run_id: str,
        chunk_size: int,
        retention_days: float = RETENTION_DAYS,
        run_in_flight: Callable[[str], bool] | None = None,
    ) -> ChunkWriter[T]:
        """A writer into ``run_chunk_dir(storage_dir, asset, cid, run_id)`` that, once
        complete, supersedes the asset's chunk directories for ``cid`` of runs that are over
        (``run_in_flight``: run id → still queued or running)."""
        return cls(
            run_chunk_dir(storage_dir, asset, cid, run_id),
            chunk_size,
            prune_siblings=True,
            run_in_flight=run_in_flight,
            retention=(Path(storage_dir), retention_days),
        )

    @classmethod
    def for_asset(cls, context: dg.AssetExecutionContext, chunk_size: int) -> ChunkWriter[T]:
        """``for_run`` for the running partitioned asset: the instance's storage directory,
        the asset key, the partition key (the CID) and the run id of ``context``; a sibling
        run is in flight while the instance holds it in a status that is not final."""
        instance = context.instance

        def in_flight(run_id: str) -> bool:
            run = instance.get_run_by_id(run_id)
            return run is not None and not run.is_finished

        return cls.for_run(
            instance.storage_directory(),
            context.asset_key.to_python_identifier(),
            context.partition_key,
            context.run.run_id,
            chunk_size,
            run_in_flight=in_flight,
        )

    def __len__(self) -> int:
        """Records appended so far."""
        return sum(self._sizes)

    def _open_chunk(self) -> IO[bytes]:
        if self._file is None:
            path = ChunkedRecords(str(self.directory)).chunk_path(len(self._sizes))
            self._file = path.open("wb")
            self._sizes.append(0)
        return self._file

    def append(self, records: Sequence[T] | Iterable[T]) -> None:
        """Append ``records`` (one frame per chunk they fall into; an empty batch writes
        nothing). Raises ``RuntimeError`` after ``close``."""
        if self._closed:
            raise RuntimeError("append after close")
        items = records if isinstance(records, list | tuple) else list(records)
        start = 0
        while start < len(items):
            handle = self._open_chunk()
            room = self.chunk_size - self._sizes[-1]
            frame = list(items[start : start + room])
            pickle.dump(frame, handle, protocol=_PROTOCOL)
            self._sizes[-1] += len(frame)
            start += len(frame)
            if self._sizes[-1] == self.chunk_size:
                handle.close()
                self._file = None

    def close(self) -> ChunkedRecords[T]:
        """Finish the last chunk, write ``manifest.json`` (the directory is complete), apply
        retention (see the class docstring) and return the handle."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._closed = True
        manifest = {"chunk_sizes": self._sizes, "records": len(self), "completed_at": time.time()}
        (self.directory / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        if self._prune_siblings:
            for sibling in self.directory.parent.iterdir():
                if sibling != self.directory and self._superseded(sibling):
                    shutil.rmtree(sibling, ignore_errors=True)
        if self._retention is not None:
            storage_dir, days = self._retention
            remove_expired_chunks(storage_dir, days, keep=self.directory)
        return ChunkedRecords(str(self.directory), tuple(self._sizes))

    def _superseded(self, run_dir: Path) -> bool:
        """A sibling run's chunks are superseded once its run is over (its downstream steps
        no longer read them). Without ``run_in_flight``: when they were complete before this
        writer started (a writer still busy, or one that completed meanwhile, keeps them; the
        retention removes what a crash left)."""
        if self._run_in_flight is not None:
            try:
                return not self._run_in_flight(run_dir.name)
            except Exception:  # the instance unreachable: keep the chunks, retention clears them
                return False
        try:
            manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return float(manifest.get("completed_at", 0)) < self._started

    def abort(self) -> None:
        """Close and remove the directory (nothing of this attempt stays)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._closed = True
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ChunkWriter[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


def write_chunks(
    directory: str | Path, records: Iterable[T], chunk_size: int, frame_size: int = 500
) -> ChunkedRecords[T]:
    """Write ``records`` to a fresh ``directory`` in frames of ``frame_size`` and return the
    handle (no retention: for tests and tools)."""
    iterator = iter(records)
    with ChunkWriter[T](directory, chunk_size) as writer:
        while frame := list(islice(iterator, frame_size)):
            writer.append(frame)
        return writer.close()


def _run_dirs(storage_dir: str | Path) -> Iterator[Path]:
    root = chunk_root(storage_dir)
    if root.is_dir():
        yield from (p for p in root.glob("*/*/*") if p.is_dir())


def _age_reference(run_dir: Path) -> float:
    manifest = run_dir / MANIFEST
    try:
        return manifest.stat().st_mtime
    except FileNotFoundError:
        return run_dir.stat().st_mtime


def remove_chunks(storage_dir: str | Path, cid: str, assets: Iterable[str] | None = None) -> int:
    """Remove every chunk directory of ``cid`` (all runs; of ``assets`` only, when given)
    under the instance's ``storage_dir`` (rollback, SPEC-activity-logs §10 [N18]). Returns the
    run directories removed (0 when none). Raises ``ValueError`` for a ``cid`` or asset name
    that is not one path segment."""
    segment = _segment(cid, "cid")
    removed = 0
    root = chunk_root(storage_dir)
    if not root.is_dir():
        return 0
    names = None if assets is None else {_segment(a, "asset") for a in assets}
    for cid_dir in root.glob(f"*/{segment}"):
        if names is not None and cid_dir.parent.name not in names:
            continue
        if cid_dir.is_dir():
            removed += sum(1 for p in cid_dir.iterdir() if p.is_dir())
            shutil.rmtree(cid_dir, ignore_errors=True)
    return removed


def remove_expired_chunks(
    storage_dir: str | Path,
    max_age_days: float = RETENTION_DAYS,
    *,
    now: float | None = None,
    keep: Path | None = None,
) -> int:
    """Remove the chunk directories completed (or, if incomplete, last written) more than
    ``max_age_days`` days before ``now`` (epoch seconds; default: the current time), except
    ``keep``. Returns how many were removed (§10 [N18] retention)."""
    limit = (time.time() if now is None else now) - max_age_days * 86_400
    removed = 0
    for run_dir in list(_run_dirs(storage_dir)):
        if keep is not None and run_dir == keep:
            continue
        try:
            expired = _age_reference(run_dir) < limit
        except FileNotFoundError:  # removed meanwhile
            continue
        if expired:
            shutil.rmtree(run_dir, ignore_errors=True)
            removed += 1
    return removed


def chunk_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a run directory (``chunk_sizes``, ``records``, ``completed_at`` epoch
    seconds), or None while it is incomplete."""
    path = Path(run_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
