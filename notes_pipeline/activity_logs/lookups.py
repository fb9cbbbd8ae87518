"""Batched lookups of the plan (SPEC-activity-logs §4.3 steps 4-5, §4.4 hops 1-2) and the
batch loop that feeds them to the pure rules.

Contacts (§4.3 steps 4-5, [N8]) come from a ``ContactIndex`` per run: when the company has at
most ``contact_preload_max`` contacts, its ``source_id → _id`` pairs are read once, in one
streamed company-scoped query, and each batch is answered from memory (likewise the
``crm_contact_id_map`` rows, on the first miss); otherwise each batch sends one ``$in`` on
``contacts.source_id`` and one ``$in`` on ``crm_contact_id_map`` for the misses. Both give the
same matches; the preload avoids one query per batch, which servers that cannot use an index
for ``$in`` (FerretDB 1.24) answer with a scan of the collection (BENCHMARKS.md). A contact
created after the preload is found by a re-run (as audits after the high-water id, [N13]).

Per batch of audits, then: the contacts, at most one ``users`` query for the user ids not
seen yet in the run (hop 1, [N10]; ``UserCache``) and at most one identity call for the emails
not yet cached (hop 2). The identity cache lives for the run
(§4.4: one cache per job); a failed hop-2 call is retried, then narrowed to single emails, and
the emails that still fail make only their own audits fail ``actor_lookup_failed``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from notes_pipeline.activity_logs.records import CrmAudit, PlanEntry
from notes_pipeline.activity_logs.rules.actors import CrmUser, IdentityLookups, emails_to_look_up
from notes_pipeline.activity_logs.rules.contacts import (
    ContactLookups,
    SourceIdMatch,
    pick_contact,
    source_id_of,
)
from notes_pipeline.activity_logs.rules.plan import (
    PlanContext,
    PlanLookups,
    PreparedAudit,
    complete_plan_isolated,
    person_ids_to_look_up,
    prepare_audit_isolated,
    user_ids_to_look_up,
)
from notes_pipeline.core.resources.crm import CrmSource
from notes_pipeline.core.resources.identity import IdentityDirectory, IdentityLookupError
from notes_pipeline.core.resources.mongo import CdpMongo


@dataclass
class IdentityCache:
    """Hop 2 for one company and one run (§4.4): ``directory`` answers and caches; this adds
    the [N10] retry (``retries`` more attempts), narrows a failed batch to single emails, and
    remembers for the run the emails that still failed (never asked again)."""

    directory: IdentityDirectory
    company_sso_id: str
    retries: int = 1
    failed: set[str] = field(default_factory=set)
    asked: set[str] = field(default_factory=set)

    def _resolve(self, emails: list[str]) -> dict[str, str]:
        for attempt in range(self.retries + 1):
            try:
                return self.directory.resolve(self.company_sso_id, emails)
            except IdentityLookupError:
                if attempt == self.retries:
                    raise
        return {}  # unreachable (retries ≥ 0)

    def lookup(self, emails: Iterable[str]) -> IdentityLookups:
        """``IdentityLookups`` for normalized ``emails``: SSO ids found, and the emails whose
        lookup failed after the retry (this batch's or an earlier one's)."""
        wanted = sorted({e for e in emails if e not in self.failed})
        self.asked.update(wanted)
        found: dict[str, str] = {}
        if wanted:
            try:
                found = self._resolve(wanted)
            except IdentityLookupError:
                for email in wanted:
                    try:
                        found.update(self._resolve([email]))
                    except IdentityLookupError:
                        self.failed.add(email)
        failed = frozenset(e for e in emails if e in self.failed)
        return IdentityLookups(sso_by_email=found, failed_emails=failed)


@dataclass
class UserCache:
    """Hop 1 for one run (§4.4 [N10]: one cache per job): ``crm.users_by_id`` is asked only
    for the user ids not seen yet in this run, the rows found and the ids without a row (A4)
    are remembered. Memory: one entry per distinct acting user of the CID."""

    crm: CrmSource
    found: dict[int, CrmUser] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)
    queries: int = 0

    def lookup(self, user_ids: Sequence[int]) -> dict[int, CrmUser]:
        """The users rows of ``user_ids`` that exist (absent = no row). Raises what
        ``crm.users_by_id`` raises."""
        unseen = [u for u in user_ids if u not in self.found and u not in self.missing]
        if unseen:
            self.queries += 1
            rows = self.crm.users_by_id(unseen)
            self.found.update(rows)
            self.missing.update(u for u in unseen if u not in rows)
        return {u: self.found[u] for u in user_ids if u in self.found}


def pick_source_contact(customer_ids: Sequence[object]) -> SourceIdMatch | None:
    """[N8]: the smallest ``_id`` among the contacts sharing a ``source_id``, and their count.
    ``_id`` values of different types (ObjectId and text) are ordered by type name first."""
    try:
        return pick_contact(customer_ids)
    except TypeError:
        ordered = sorted(set(customer_ids), key=lambda v: (type(v).__name__, str(v)))
        return SourceIdMatch(ordered[0], len(ordered))


@dataclass
class ContactIndex:
    """§4.3 steps 4-5 lookups of one company for one run (see the module docstring).

    ``by_source_id`` / ``id_map``: the preloaded answers, or None while each batch queries
    (``$in``). ``max_preload``: the most contacts (and map rows) preloaded; 0 = never.
    """

    cdp: CdpMongo
    company_sso_id: str
    max_preload: int = 0
    by_source_id: dict[str, SourceIdMatch] | None = None
    id_map: dict[int, Any] | None = None
    _map_consulted: bool = False

    @classmethod
    def load(cls, cdp: CdpMongo, company_sso_id: str, max_preload: int) -> ContactIndex:
        """Preload the company's contacts when it has at most ``max_preload`` (one streamed
        query; over the bound it stops reading after ``max_preload + 1`` documents). Raises
        what ``cdp`` raises."""
        index = cls(cdp, company_sso_id, max_preload)
        if max_preload > 0:
            found = cdp.company_contact_source_ids(company_sso_id, max_preload)
            if found is not None:
                index.by_source_id = {
                    sid: match for sid, ids in found.items() if (match := pick_source_contact(ids))
                }
        return index

    @property
    def strategy(self) -> dict[str, str]:
        """How each lookup is answered (run metadata): ``preloaded`` or ``batched``; the map
        is ``not_consulted`` until some person misses step 4."""
        source = "batched" if self.by_source_id is None else "preloaded"
        if self.id_map is not None:
            id_map = "preloaded"
        else:
            id_map = "batched" if self._map_consulted else "not_consulted"
        return {"source_id": source, "crm_contact_id_map": id_map}

    def _id_map_for(self, misses: list[int]) -> dict[int, Any]:
        if not self._map_consulted and self.max_preload > 0:
            self.id_map = self.cdp.company_contact_id_map(self.company_sso_id, self.max_preload)
        self._map_consulted = True
        if self.id_map is None:
            return self.cdp.contact_id_map(self.company_sso_id, misses)
        return {p: self.id_map[p] for p in misses if p in self.id_map}

    def lookup(self, person_ids: Sequence[int]) -> ContactLookups:
        """``ContactLookups`` for a batch's distinct person ids: step 4 for each, step 5 for
        the misses only ([N8]). Raises what ``cdp`` raises."""
        source_ids = [source_id_of(p) for p in person_ids]
        if self.by_source_id is None:
            found = self.cdp.contacts_by_source_id(self.company_sso_id, source_ids)
            by_source_id = {
                sid: match for sid, ids in found.items() if (match := pick_source_contact(ids))
            }
        else:
            known = self.by_source_id
            by_source_id = {sid: known[sid] for sid in source_ids if sid in known}
        misses = [
            p for p, sid in zip(person_ids, source_ids, strict=True) if sid not in by_source_id
        ]
        id_map = self._id_map_for(misses) if misses else {}
        return ContactLookups(by_source_id=by_source_id, id_map=id_map)


def fetch_lookups(
    items: Sequence[PreparedAudit | PlanEntry],
    *,
    contacts: ContactIndex,
    users: UserCache,
    identity: IdentityCache,
) -> PlanLookups:
    """One batch's lookups, each at most one query for the whole batch (see the module
    docstring). Raises what the resources raise (a lookup outage fails the asset, not the
    audits)."""
    contact_lookups = contacts.lookup(person_ids_to_look_up(items))
    users_by_id = users.lookup(user_ids_to_look_up(items))
    return PlanLookups(
        contacts=contact_lookups,
        users_by_id=users_by_id,
        identity=identity.lookup(emails_to_look_up(users_by_id.values())),
    )


@contextmanager
def batch_collections() -> Iterator[Callable[[], int]]:
    """Cyclic garbage collection for a batch loop (§11 throughput): automatic collection is off
    inside the block and the caller runs the returned function after each batch, which
    collects the young generations (``gc.collect(1)``; returns the objects freed).

    Planning allocates some hundred short-lived, acyclic objects per audit (YAML nodes, the
    document); automatic collection would traverse them every 700 allocations (~15 % of the
    plan's CPU on the ``perf`` CID, BENCHMARKS.md). Cyclic garbage (e.g. of a
    ``transform_error``) is still reclaimed after its batch, so memory stays bounded by the
    batch. The previous state is restored on exit.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield lambda: gc.collect(1)
    finally:
        if enabled:
            gc.enable()


def plan_batches(
    audits: Iterable[CrmAudit],
    ctx: PlanContext,
    fetch: Callable[[Sequence[PreparedAudit | PlanEntry]], PlanLookups],
    batch_size: int,
) -> Iterator[list[PlanEntry]]:
    """The plan (§4, §15), one list of entries per batch of ``batch_size`` audits, in order.

    ``audits`` is consumed lazily (memory: one batch). Each batch is prepared without lookups,
    then ``fetch`` runs the batch's lookups once (skipped when every audit was already
    decided), then each prepared audit is completed. Rules never raise here (``*_isolated``:
    an unexpected exception fails that audit alone, ``transform_error``); what ``fetch`` raises
    propagates (a lookup outage fails the asset, not the audits).
    """
    iterator = iter(audits)
    while batch := list(islice(iterator, batch_size)):
        prepared = [prepare_audit_isolated(audit, ctx) for audit in batch]
        needs_lookups = any(isinstance(item, PreparedAudit) for item in prepared)
        lookups = fetch(prepared) if needs_lookups else PlanLookups()
        yield [
            item if isinstance(item, PlanEntry) else complete_plan_isolated(item, ctx, lookups)
            for item in prepared
        ]


def plan_audits(
    audits: Iterable[CrmAudit],
    ctx: PlanContext,
    fetch: Callable[[Sequence[PreparedAudit | PlanEntry]], PlanLookups],
    batch_size: int,
) -> tuple[list[PlanEntry], int]:
    """``plan_batches`` collected: every entry in one list, and the number of batches. Holds
    the whole plan in memory: for small inputs (tests, tools); the asset streams batches."""
    entries: list[PlanEntry] = []
    count = 0
    for batch in plan_batches(audits, ctx, fetch, batch_size):
        entries.extend(batch)
        count += 1
    return entries, count
