"""Keyed ``$setOnInsert`` upserts with per-row outcomes from the bulk reply.

Both families write the same way (SPEC "Loading", SPEC-activity-logs §5): one ``UpdateOne``
per record, filter = company scope + the record's key, ``$setOnInsert`` of the document,
``upsert=True``, unordered. Each row gets a client-side ``_id`` so that, whatever the
server's reply holds, a row's outcome can be told from one keyed read:

* complete reply (MongoDB; FerretDB when no row fails): ``upserted`` lists the inserted rows
  (by their ``_id``), ``writeErrors`` the failed ones, every other row matched an existing
  document. No read.
* incomplete reply (FerretDB 1.x stops at the first failing row and returns a reply pymongo
  cannot parse, with wrong indexes): each row is resolved by keyed ``find_one`` calls (its own
  ``_id`` present → upserted; its key present under another ``_id`` → matched; neither →
  error). At most two indexed reads per row, only for that batch.

A retry sends the rows with the ``_id`` of their first attempt (``with_ids``) and
``recheck_matched``: a call that raised after its writes reached the server (a connection
dropped before the reply) left rows that the retry finds "matched"; one read by ``_id`` tells
this row's own earlier insert (upserted) from a document that was there before (matched).

So a batch's cost never depends on the collection's or the CID's size. A batch longer than
the server's bulk call size (FerretDB 1.x: 40 operations) is split, and the calls may run in
parallel (``concurrency``): a call is a round trip of keyed upserts the server runs one at a
time, so one call at a time leaves the server's other cores idle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, ConnectionFailure, ExecutionTimeout, PyMongoError

DUPLICATE_KEY = 11000


@dataclass
class BulkUpsertResult:
    """Per-row result of one bulk upsert: indexes into the submitted batch.

    ``upserted``: inserted by this call; ``matched``: the key already existed (nothing
    written); ``errors``: index → ``code=<server code>`` or an exception class name.
    ``resolved_by_reads``: rows whose outcome needed keyed reads (incomplete reply).
    """

    upserted: set[int] = field(default_factory=set)
    matched: set[int] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)
    resolved_by_reads: int = 0


def with_ids(documents: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``documents``, each with an ``_id`` (its own, also 0 or "", else a new
    ``ObjectId`` for a missing or None one): send every attempt of a row with the same ``_id``
    so that a retry can recognise its own insert."""
    return [
        {**doc, "_id": doc["_id"] if doc.get("_id") is not None else ObjectId()}
        for doc in documents
    ]


def upsert_on_insert(
    collection: Collection,
    scope: Mapping[str, Any],
    key_field: str,
    documents: Sequence[Mapping[str, Any]],
    max_ops: int,
    concurrency: int = 1,
    *,
    recheck_matched: bool = False,
) -> BulkUpsertResult:
    """Insert each document unless ``scope`` + its ``key_field`` value already exists.

    ``scope`` (e.g. ``{"company_sso_id": …}``) must match every document; each call carries at
    most ``max_ops`` operations (longer batches are split into calls, up to ``concurrency`` of
    them at once; the result is the same either way). Raises ``ValueError`` for a document
    outside the scope; ``ConnectionFailure``/``ExecutionTimeout`` propagate, once every call
    has ended, so the caller may retry the batch (upserts make that safe); the exception's
    ``partial_result`` holds the outcomes of the calls that ended (``partial_result()``), so
    that a retry need only send the rows in ``errors``. Any other failure is per row.
    ``recheck_matched`` (retries, documents from ``with_ids``): a row the server calls matched
    whose own ``_id`` is stored is upserted (an earlier attempt inserted it); one read per such
    row.
    """
    for doc in documents:
        if any(doc.get(k) != v for k, v in scope.items()):
            raise ValueError("document outside the company scope")
    ids = [doc.get("_id", ObjectId()) for doc in documents]
    requests = [
        UpdateOne(
            {**scope, key_field: doc[key_field]},
            {"$setOnInsert": {**doc, "_id": _id}},
            upsert=True,
        )
        for doc, _id in zip(documents, ids, strict=True)
    ]
    step = max(1, max_ops)
    parts = [range(s, min(s + step, len(requests))) for s in range(0, len(requests), step)]

    def write(part: range) -> BulkUpsertResult:
        done = BulkUpsertResult()
        _write_part(
            collection, scope, key_field, documents, ids, requests, part, done, recheck_matched
        )
        return done

    workers = min(max(1, concurrency), len(parts))
    raised: ConnectionFailure | ExecutionTimeout | None = None
    results: list[BulkUpsertResult] = []
    if workers <= 1:
        for part in parts:
            if raised is None:
                try:
                    results.append(write(part))
                    continue
                except (ConnectionFailure, ExecutionTimeout) as exc:
                    raised = exc
            results.append(_failed(part, raised))  # this call and the ones not sent
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(write, part) for part in parts]
        for part, future in zip(parts, futures, strict=True):
            try:
                results.append(future.result())  # re-raises a call's other exceptions
            except (ConnectionFailure, ExecutionTimeout) as exc:
                raised = raised or exc
                results.append(_failed(part, exc))
    merged = BulkUpsertResult()
    for done in results:
        merged.upserted |= done.upserted
        merged.matched |= done.matched
        merged.errors.update(done.errors)
        merged.resolved_by_reads += done.resolved_by_reads
    if raised is not None:
        # the calls that did end keep their outcomes: a retry of the whole batch would find
        # their inserted rows already there and call them matched
        raised.partial_result = merged  # type: ignore[union-attr]
        raise raised
    return merged


def _failed(part: range, exc: BaseException) -> BulkUpsertResult:
    return BulkUpsertResult(errors={index: type(exc).__name__ for index in part})


def partial_result(exc: BaseException, size: int) -> BulkUpsertResult:
    """What a raising ``upsert_on_insert`` of ``size`` rows had done: the outcomes of its calls
    that ended (``partial_result`` of a ``ConnectionFailure``/``ExecutionTimeout``), the other
    rows as errors; every row an error for any other exception."""
    done = getattr(exc, "partial_result", None)
    if isinstance(done, BulkUpsertResult):
        return done
    return BulkUpsertResult(errors={index: type(exc).__name__ for index in range(size)})


def _write_part(
    collection, scope, key_field, documents, ids, requests, part, result, recheck_matched
) -> None:
    reply: dict[str, Any] | None
    failure = ""
    try:
        reply = collection.bulk_write([requests[i] for i in part], ordered=False).bulk_api_result
    except BulkWriteError as exc:
        reply = exc.details
    except (ConnectionFailure, ExecutionTimeout):
        raise
    except (PyMongoError, KeyError, TypeError) as exc:  # a reply pymongo could not parse
        reply, failure = None, type(exc).__name__
    outcomes = _from_reply(reply, [ids[i] for i in part]) if reply is not None else None
    if outcomes is None:
        result.resolved_by_reads += len(part)
        code = failure or "write error"  # the reply's own row codes cannot be trusted here
        for index in part:
            _resolve_by_reads(collection, scope, key_field, documents, ids, index, code, result)
        return
    upserted, errors = outcomes
    for offset, index in enumerate(part):
        if offset in upserted:
            result.upserted.add(index)
        elif offset in errors and errors[offset] == DUPLICATE_KEY:
            # a concurrent writer inserted the key between our match and insert
            dup = f"code={DUPLICATE_KEY}"
            _resolve_by_reads(collection, scope, key_field, documents, ids, index, dup, result)
            result.resolved_by_reads += 1
        elif offset in errors:
            result.errors[index] = f"code={errors[offset]}"
        elif recheck_matched:
            gone = "matched, then not found"
            _resolve_by_reads(collection, scope, key_field, documents, ids, index, gone, result)
            result.resolved_by_reads += 1
        else:
            result.matched.add(index)


def _from_reply(
    reply: Mapping[str, Any], part_ids: Sequence[ObjectId]
) -> tuple[set[int], dict[int, Any]] | None:
    """(upserted offsets, error offset → code) when the reply accounts for every row.

    Upserted rows are recognised by their ``_id``, not the reply's ``index``: FerretDB 1.x
    numbers upserts among themselves rather than by their position in the batch.
    """
    size = len(part_ids)
    offset_of = {_id: offset for offset, _id in enumerate(part_ids)}
    try:
        upserted = {offset_of[u["_id"]] for u in reply.get("upserted", [])}
        errors = {int(e["index"]): e.get("code") for e in reply.get("writeErrors", [])}
        matched = int(reply["nMatched"])
    except (KeyError, TypeError, ValueError):
        return None
    if any(not 0 <= i < size for i in errors) or upserted & set(errors):
        return None
    if len(upserted) + len(errors) + matched != size:
        return None
    return upserted, errors


def _resolve_by_reads(collection, scope, key_field, documents, ids, index, code, result) -> None:
    if collection.find_one({"_id": ids[index]}, {"_id": 1}) is not None:
        result.upserted.add(index)
    elif (
        collection.find_one({**scope, key_field: documents[index][key_field]}, {"_id": 1})
        is not None
    ):
        result.matched.add(index)
    else:
        result.errors[index] = code
