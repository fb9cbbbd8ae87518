"""Activity logs, part 1, without services: the CRM audit source's SQL, retries and row
isolation, the batched lookups and the identity retry/timeout (§4.4 [N10]), the gates as pure
functions, the extraction window, discovery and the resource selection (SPEC-activity-logs
§2-§4, §15). The stack versions are in ``test_activity_logs_stage1.py``."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from notes_pipeline.activity_logs import events
from notes_pipeline.activity_logs.checks import normalized_checks
from notes_pipeline.activity_logs.lookups import (
    ContactIndex,
    IdentityCache,
    UserCache,
    batch_collections,
    pick_source_contact,
    plan_audits,
)
from notes_pipeline.activity_logs.records import (
    FailureCode,
    NormalizedActivityLogs,
    PlanEntry,
    PlanOutcome,
    SkipCode,
)
from notes_pipeline.activity_logs.rules.actors import IdentityLookups
from notes_pipeline.activity_logs.rules.contacts import SourceIdMatch
from notes_pipeline.activity_logs.rules.plan import PlanContext, PlanLookups
from notes_pipeline.activity_logs.rules.window import parse_date_range_start
from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.activity_logs.summary import (
    PlanTally,
    person_coverage,
    plan_metadata,
    planned_failure_rate,
)
from notes_pipeline.core.chunks import ChunksMissing, write_chunks
from notes_pipeline.core.crm_records import AuditScope, CrmAudit, CrmUser, Organization
from notes_pipeline.core.discovery import discoverable_cids
from notes_pipeline.core.resources.crm import (
    OWNER_TABLES,
    CrmExtractError,
    HttpCrmSource,
    PostgresCrmSource,
    account_predicate,
    audit_params,
    page_sql,
    read_audit_row,
    summarize_explain,
)
from notes_pipeline.core.resources.identity import (
    HttpIdentityDirectory,
    IdentityDirectory,
    IdentityLookupError,
)
from notes_pipeline.core.resources.in_memory import (
    InMemoryCdpMongo,
    InMemoryCrmSource,
    in_memory_store,
)
from notes_pipeline.core.vocabulary import RunCode
from notes_pipeline.deployment import in_memory_resources, resources_for_environment

KINDS = ActivityLogSettings().auditable_kinds
ORG = Organization("7101", "Org", "company-7101")


# --------------------------------------------------------------------------- the SQL


def test_page_query_has_the_seed_shape_and_the_account_predicate():
    sql = page_sql(KINDS)
    for clause in (
        "a.id > %(cursor)s AND a.id <= %(high_water)s",
        "a.auditable_type = ANY(%(types)s)",
        "a.created_at >= %(cutoff)s::timestamp",
        "ORDER BY a.id\nLIMIT %(limit)s",
    ):
        assert clause in sql
    for table in OWNER_TABLES.values():  # [N1]: every owner table, both sides, this org
        assert f"FROM {table} o WHERE o.id = a.auditable_id AND o.organization_id" in sql
        assert f"FROM {table} o WHERE o.id = a.associated_id AND o.organization_id" in sql
    params = audit_params(AuditScope("1001", KINDS, 99, "2020-01-01 00:00:00"))
    assert params["types"] == sorted(KINDS) and params["k_person"] == ["Crm::Person"]
    assert params["k_join_deal"] == ["Crm::DealPerson"] and params["org"] == 1001


def test_the_predicate_follows_the_configured_kinds_and_never_takes_table_names():
    only_people = {"Crm::Person": "person", "Legacy::Contact": "person"}
    sql = account_predicate(only_people)
    assert "crm_people" in sql and "crm_deals" not in sql
    assert audit_params(AuditScope("1", only_people, 1))["k_person"] == [
        "Crm::Person",
        "Legacy::Contact",
    ]
    assert "organization_id" not in account_predicate(KINDS, any_account=True)
    assert account_predicate({}) == "(false)"


def test_explain_summary_keeps_structure_not_filters():
    plan = [
        {
            "Plan": {
                "Node Type": "Limit",
                "Plan Rows": 500,
                "Actual Rows": 12,
                "Total Cost": 9.5,
                "Plans": [
                    {
                        "Node Type": "Index Scan",
                        "Index Name": "audits_pkey",
                        "Relation Name": "audits",
                        "Filter": "(auditable_type = ANY ('{secret}'))",
                        "Plans": [{"Node Type": "Seq Scan", "Relation Name": "crm_people"}],
                    }
                ],
            },
            "Planning Time": 0.2,
            "Execution Time": 1.5,
        }
    ]
    summary = summarize_explain(plan)
    assert summary["node_types"] == ["Limit", "Index Scan", "Seq Scan"]
    assert summary["index_scans"] == ["audits_pkey"] and summary["uses_index"]
    assert summary["seq_scans"] == ["crm_people"]
    assert (summary["estimated_rows"], summary["actual_rows"]) == (500, 12)
    assert (summary["planning_ms"], summary["execution_ms"]) == (0.2, 1.5)
    assert "secret" not in json.dumps(summary)


# --------------------------------------------------------------------------- extraction errors


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_audit_queries_retry_with_backoff_then_crm_extract_failed(closed_port):
    """[N23]: each query retried after 1/3/9 s (here recorded, not slept), then the run code."""
    source = PostgresCrmSource(dsn=f"postgresql://r:pg-secret@127.0.0.1:{closed_port}/crm")
    waits: list[float] = []
    source._sleep = waits.append
    with pytest.raises(CrmExtractError) as raised:
        source.audit_high_water_id()
    assert waits == [1.0, 3.0, 9.0]
    assert (
        str(raised.value)
        == f"{RunCode.CRM_EXTRACT_FAILED}: high-water id failed (OperationalError)"
    )
    assert raised.value.reason_code == RunCode.CRM_EXTRACT_FAILED
    faster = source.with_backoff([0.5])
    waits.clear()
    with pytest.raises(CrmExtractError):
        list(faster.iter_audit_pages(AuditScope("1", KINDS, 10, "2020-01-01 00:00:00")))
    assert waits == [0.5] and "pg-secret" not in str(raised.value)


def test_an_unreadable_audit_row_fails_alone():
    row = {"id": 7, "auditable_type": "Crm::Person"}  # the other columns are missing
    placeholder = read_audit_row(row)
    assert (placeholder.id, placeholder.extract_error) == (7, "KeyError")
    [entry], _ = plan_audits([placeholder], PlanContext("c"), lambda items: PlanLookups(), 500)
    assert (entry.code, entry.details) == (
        FailureCode.TRANSFORM_ERROR,
        "stage=extract exception=KeyError",
    )
    with pytest.raises(CrmExtractError, match="without an integer id"):
        read_audit_row({"id": "x"})


# --------------------------------------------------------------------------- identity (hop 2)

CALLS: list[list[str]] = []
FAILING: dict[str, int] = {}  # email → failures left (-1: always)


class ScriptedDirectory(IdentityDirectory):
    """Knows every email (sso = "sso-" + email); emails in FAILING make a call fail."""

    def _lookup(self, company_sso_id: str, emails: list[str]) -> dict[str, str]:
        CALLS.append(list(emails))
        for email in emails:
            left = FAILING.get(email, 0)
            if left:
                FAILING[email] = left - 1 if left > 0 else left
                raise IdentityLookupError("ReadTimeout")
        return {e: f"sso-{e}" for e in emails}


@pytest.fixture
def directory() -> Iterator[ScriptedDirectory]:
    CALLS.clear()
    FAILING.clear()
    yield ScriptedDirectory()


def test_a_timeout_once_is_retried_and_recovers(directory):
    FAILING["slow@x.test"] = 1
    cache = IdentityCache(directory, "c", retries=1)
    found = cache.lookup(["a@x.test", "slow@x.test"])
    assert found.sso_by_email == {"a@x.test": "sso-a@x.test", "slow@x.test": "sso-slow@x.test"}
    assert not found.failed_emails and len(CALLS) == 2


def test_a_persistent_timeout_fails_only_that_email_and_is_never_asked_again(directory):
    FAILING["slow@x.test"] = -1
    cache = IdentityCache(directory, "c", retries=1)
    found = cache.lookup(["a@x.test", "b@x.test", "slow@x.test"])
    assert found.failed_emails == frozenset({"slow@x.test"})
    assert set(found.sso_by_email) == {"a@x.test", "b@x.test"}
    calls = len(CALLS)
    again = cache.lookup(["a@x.test", "slow@x.test"])
    assert again.failed_emails == frozenset({"slow@x.test"}) and len(CALLS) == calls  # cached
    assert cache.asked == {"a@x.test", "b@x.test", "slow@x.test"}


def test_persistent_identity_failure_plans_actor_lookup_failed_for_that_actor_only(directory):
    FAILING["slow@x.test"] = -1
    users = {1: CrmUser(1, "slow@x.test", "S"), 2: CrmUser(2, "ok@x.test", "O")}
    cache = IdentityCache(directory, ORG.company_sso_id)

    def fetch(items):
        from notes_pipeline.activity_logs.rules.contacts import ContactLookups, SourceIdMatch

        return PlanLookups(
            ContactLookups({"5": SourceIdMatch("contact-5")}),
            users,
            cache.lookup(["slow@x.test", "ok@x.test"]),
        )

    audits = [
        CrmAudit(
            n,
            "Crm::Person",
            5,
            None,
            None,
            user,
            "update",
            "--- {}",
            None,
            1,
            "2023-01-01 00:00:00",
        )
        for n, user in ((1, 1), (2, 2), (3, None))
    ]
    entries, batches = plan_audits(audits, PlanContext(ORG.company_sso_id), fetch, 500)
    assert [(e.crm_audit_id, e.code or e.actor_case) for e in entries] == [
        (1, FailureCode.ACTOR_LOOKUP_FAILED),
        (2, "A2"),
        (3, "A1"),
    ]
    assert batches == 1


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


def test_the_family_timeout_bounds_each_identity_call(silent_server):
    """§4.4: the family sets its own timeout (3 s by default) on the shared directory."""
    assert ActivityLogSettings().identity_timeout_s == 3.0
    directory = HttpIdentityDirectory(root_url=silent_server)
    assert directory.with_timeout(3.0).timeout_s == 3.0 and directory.timeout_s == 10.0
    bounded = directory.with_timeout(0.3)
    assert bounded._cache is directory._cache  # one cache per run
    started = time.monotonic()
    with pytest.raises(IdentityLookupError, match="ReadTimeout"):
        bounded.resolve("c", ["a@x.test"])
    assert time.monotonic() - started < 2.0


def test_duplicate_contacts_pick_the_smallest_id_whatever_its_type():
    assert pick_source_contact(["b", "a", "b"]).customer_id == "a"
    mixed = pick_source_contact(["b", 3])
    assert (mixed.customer_id, mixed.match_count) == (3, 2)  # int sorts by type name first


class CountingCdp(InMemoryCdpMongo):
    """The in-memory CDP, counting the queries of each kind."""

    def model_post_init(self, context) -> None:
        super().model_post_init(context)
        object.__setattr__(self, "_calls", Counter())

    def contacts_by_source_id(self, company_sso_id, source_ids):
        self._calls["source_id_in"] += 1
        return super().contacts_by_source_id(company_sso_id, source_ids)

    def contact_id_map(self, company_sso_id, crm_person_ids):
        self._calls["map_in"] += 1
        return super().contact_id_map(company_sso_id, crm_person_ids)

    def company_contact_source_ids(self, company_sso_id, max_contacts):
        self._calls["source_id_preload"] += 1
        return super().company_contact_source_ids(company_sso_id, max_contacts)

    def company_contact_id_map(self, company_sso_id, max_rows):
        self._calls["map_preload"] += 1
        return super().company_contact_id_map(company_sso_id, max_rows)


@pytest.fixture
def contacts_store():
    store = in_memory_store("contact-index", reset=True)
    store.contacts["c"] = {"1": "contact-1", "2": "contact-2", "3": "contact-3"}
    store.contact_id_map["c"] = {4: "mapped-4", 5: "mapped-5"}
    return store


BATCHES = ([1, 4], [2, 3], [6, 5, 1])  # person ids per batch: 4 and 5 via the map, 6 nowhere


def _lookups(index: ContactIndex) -> list:
    return [index.lookup(batch) for batch in BATCHES]


def test_a_small_company_is_preloaded_once_with_the_same_answers_as_the_batched_in(
    contacts_store,
):
    """§4.3 [N8]: one streamed query per run instead of one $in per batch; same matches."""
    batched = ContactIndex.load(CountingCdp(store="contact-index"), "c", max_preload=0)
    preloaded = ContactIndex.load(CountingCdp(store="contact-index"), "c", max_preload=5)
    answers = _lookups(batched)
    assert _lookups(preloaded) == answers
    assert answers[0].by_source_id == {"1": SourceIdMatch("contact-1")}
    assert answers[2].id_map == {5: "mapped-5"}  # 6: no contact, no map row
    assert batched.cdp._calls == {"source_id_in": 3, "map_in": 2}  # batch 2 has no miss
    assert preloaded.cdp._calls == {"source_id_preload": 1, "map_preload": 1}
    assert preloaded.strategy == {"source_id": "preloaded", "crm_contact_id_map": "preloaded"}
    assert batched.strategy == {"source_id": "batched", "crm_contact_id_map": "batched"}


def test_over_the_bound_each_batch_queries(contacts_store):
    index = ContactIndex.load(CountingCdp(store="contact-index"), "c", max_preload=2)
    assert index.strategy == {"source_id": "batched", "crm_contact_id_map": "not_consulted"}
    assert index.lookup([1]).by_source_id == {"1": SourceIdMatch("contact-1")}
    assert index.lookup([4]).id_map == {4: "mapped-4"}  # the map has 2 rows: preloaded
    assert index.cdp._calls == {"source_id_preload": 1, "source_id_in": 2, "map_preload": 1}
    contacts_store.contact_id_map["c"][7] = "mapped-7"  # now 3 rows, over the bound
    over = ContactIndex.load(CountingCdp(store="contact-index"), "c", max_preload=2)
    assert over.lookup([7, 4]).id_map == {7: "mapped-7", 4: "mapped-4"}
    assert over.strategy == {"source_id": "batched", "crm_contact_id_map": "batched"}


def test_hop_1_asks_only_for_users_not_seen_in_the_run():
    """§4.4 [N10]: one cache per job; users without a row (A4) are not asked again either."""
    asked: list[list[int]] = []

    class Crm(InMemoryCrmSource):
        def users_by_id(self, user_ids):
            asked.append(sorted(user_ids))
            return super().users_by_id(user_ids)

    store = in_memory_store("user-cache", reset=True)
    store.crm_users[1] = CrmUser(1, "a@x.test", "A")
    store.crm_users[2] = CrmUser(2, "b@x.test", "B")
    cache = UserCache(Crm(store="user-cache"))
    assert cache.lookup([1, 9]) == {1: store.crm_users[1]}
    assert cache.lookup([1, 2, 9]) == {1: store.crm_users[1], 2: store.crm_users[2]}
    assert cache.lookup([9, 2]) == {2: store.crm_users[2]}
    assert asked == [[1, 9], [2]] and cache.queries == 2


def test_batch_collections_pause_automatic_gc_and_still_reclaim_cycles():
    assert gc.isenabled()
    with batch_collections() as collect:
        assert not gc.isenabled()
        for _ in range(5_000):  # far past the automatic threshold (700 allocations)
            holder = Placeholder()
            holder.self = holder  # a cycle: only the cyclic collector frees it
        watched = weakref.ref(holder)
        del holder
        assert watched() is not None  # no automatic collection inside the block
        assert collect() >= 5_000 and watched() is None  # the batch's cycles are freed
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), batch_collections():
        raise ZeroDivisionError
    assert gc.isenabled()


class Placeholder:
    """An object that can sit in a reference cycle."""


# --------------------------------------------------------------------------- the gates


def _entry(n: int, outcome: PlanOutcome, code=None, path=None, person=None, case=None):
    return PlanEntry(
        crm_audit_id=n,
        external_id=f"crm_audit:{n}",
        outcome=outcome,
        code=code,
        contact_resolved_by=path,
        crm_person_id=person,
        actor_case=case,
    )


def _plan(ready: int, not_found: int = 0, failed: int = 0, skipped: int = 0):
    entries = [
        _entry(n, PlanOutcome.READY, path="source_id", person=n % 7, case="A2")
        for n in range(ready)
    ]
    entries += [
        _entry(1000 + n, PlanOutcome.FAILED, FailureCode.CONTACT_NOT_FOUND, person=900)
        for n in range(not_found)
    ]
    entries += [
        _entry(2000 + n, PlanOutcome.FAILED, FailureCode.INVALID_TIMESTAMP, path="source_id")
        for n in range(failed)
    ]
    entries += [
        _entry(3000 + n, PlanOutcome.SKIPPED, SkipCode.UNMAPPED_ACTION_TYPE) for n in range(skipped)
    ]
    directory = Path(tempfile.mkdtemp(dir=PLANS_DIR))
    return NormalizedActivityLogs(
        ORG, write_chunks(directory, entries, chunk_size=400), len(entries), PlanTally.of(entries)
    )


@pytest.fixture(autouse=True, scope="module")
def plans_dir(tmp_path_factory):
    global PLANS_DIR
    PLANS_DIR = tmp_path_factory.mktemp("plans")
    yield PLANS_DIR


PLANS_DIR: Path | None = None


def _results(plan, **settings):
    return {r.check_name: r for r in normalized_checks(plan, ActivityLogSettings(**settings))}


def test_coverage_gate_is_exact_at_99_and_reports_the_person_weighted_figure():
    low, high = (
        _results(_plan(989, 11))["contact_coverage"],
        _results(_plan(99, 1))["contact_coverage"],
    )
    assert not low.passed and low.metadata["coverage_pct"].value == 98.9
    assert high.passed and high.metadata["coverage_pct"].value == 99.0
    assert high.metadata["person_weighted_source_id_pct"].value == pytest.approx(87.5)
    assert high.metadata["persons_not_found"].value == 1
    # unmapped skips are outside the denominator [N9]
    assert (
        _results(_plan(99, 1, skipped=50))["contact_coverage"].metadata["in_scope_audits"].value
        == 100
    )


def test_planned_failure_rate_exactly_10_percent_passes_one_more_fails():
    at = _results(_plan(90, failed=10))["planned_failure_rate"]
    over = _results(_plan(89, failed=11))["planned_failure_rate"]
    assert at.passed and at.metadata["failure_rate"].value == 0.1
    assert not over.passed and over.metadata["failed_by_reason"].value == {"invalid_timestamp": 11}
    assert planned_failure_rate([]).rate == 0.0


def test_warn_checks_flag_unmapped_and_unresolved_actor_shares():
    results = _results(_plan(97, skipped=3))
    assert results["unmapped_share"].severity == dg.AssetCheckSeverity.WARN
    assert not results["unmapped_share"].passed  # 3 % > 1 %
    assert results["actor_unresolved_share"].passed
    assert _results(_plan(97, skipped=3), unmapped_warn_pct=5.0)["unmapped_share"].passed
    coverage = person_coverage(_plan(10).iter_entries())
    assert (coverage.persons, coverage.via_source_id) == (7, 7)


def test_gates_and_metadata_come_from_the_tally_without_rereading_the_plan():
    """§11: the figures are tallied while planning; the chunks are never read again."""
    plan = _plan(900, not_found=30, failed=70, skipped=5)
    assert plan.entries.chunk_count == 3 and plan.planned == 1005
    expected = [e.external_id for e in plan.iter_entries() if str(e.outcome) == "failed"][:20]
    shutil.rmtree(plan.entries.directory)
    with pytest.raises(ChunksMissing):
        next(plan.iter_entries())
    results = _results(plan)
    assert results["planned_failure_rate"].metadata["failed_ids"].value == expected
    assert results["planned_failure_rate"].metadata["failed_by_reason"].value == {
        "contact_not_found": 30,
        "invalid_timestamp": 70,
    }
    assert results["contact_coverage"].metadata["contact_not_found_ids"].value == [
        f"crm_audit:{1000 + n}" for n in range(20)
    ]
    assert results["unmapped_share"].metadata["unmapped"].value == 5
    meta = plan_metadata(plan)
    assert (meta["ready"], meta["failed"], meta["skipped"], meta["chunks"]) == (900, 100, 5, 3)
    assert plan.count(PlanOutcome.FAILED) == 100


def test_the_tally_equals_the_figures_of_the_entries():
    entries = list(_plan(50, not_found=3, failed=2, skipped=4).iter_entries())
    entries.append(
        PlanEntry(
            crm_audit_id=9,
            external_id="crm_audit:9",
            outcome=PlanOutcome.FAILED,
            code=FailureCode.TRANSFORM_ERROR,
            dropped_tags=(("!ruby/object:Money", 2),),
        )
    )
    tally = PlanTally.of(entries)
    assert tally.outcome_counts() == {"ready": 50, "skipped": 4, "failed": 6}
    assert dict(tally.codes) == {
        "contact_not_found": 3,
        "invalid_timestamp": 2,
        "unmapped_action_type": 4,
        "transform_error": 1,
    }
    assert (tally.coverage.resolved, tally.coverage.in_scope) == (52, 56)
    assert dict(tally.contact_paths) == {"source_id": 52, "not_found": 3, "not_reached": 1}
    assert dict(tally.unknown_tags) == {"!ruby/object:Money": 2}
    assert tally.actor_unresolved == (0, 50)
    assert tally.failure_rate.rate == round(6 / 60, 6)
    assert tally.person_coverage == person_coverage(entries)


# --------------------------------------------------------------------------- the window


def test_date_range_start_accepts_a_date_an_offset_or_zone_less_utc():
    assert parse_date_range_start(None) is None and parse_date_range_start(" ") is None
    assert parse_date_range_start("2022-01-01") == datetime(2022, 1, 1)
    assert parse_date_range_start("2022-01-01T07:00:00+07:00") == datetime(2022, 1, 1)
    assert parse_date_range_start("2022-01-01 10:00:00") == datetime(2022, 1, 1, 10)
    with pytest.raises(ValueError) as raised:
        parse_date_range_start("last tuesday")
    assert "tuesday" not in str(raised.value)


# --------------------------------------------------------------------------- discovery, wiring


def test_discovery_is_the_union_of_notes_and_audits_and_survives_a_source_without_audits():
    store = in_memory_store("discovery", reset=True)
    store.notes["7201"] = []
    store.audits["7202"] = [
        CrmAudit(1, "Crm::Person", 1, None, None, None, "update", "--- {}", None, 1, None)
    ]
    store.audits["7203"] = [
        CrmAudit(2, "Crm::Company", 1, None, None, None, "update", "--- {}", None, 1, None)
    ]
    crm = InMemoryCrmSource(store="discovery")
    assert discoverable_cids(crm, crm, KINDS) == ["7202"]  # 7201: no person notes; 7203: type
    http = HttpCrmSource(base_url="https://crm.invalid", api_token="t")
    assert discoverable_cids(crm, http, KINDS) == []  # no audit access: notes only


def test_the_audit_source_is_selected_by_environment():
    common = {
        "NOTES_PIPELINE_MONGO_URI": "mongodb://x",
        "NOTES_PIPELINE_MONGO_DB": "cdp",
        "NOTES_PIPELINE_CDP_BUCKET": "b",
        "NOTES_PIPELINE_ATTACHMENT_ALLOWED_HOSTS": "h",
        "NOTES_PIPELINE_CDP_PROXY_BASE_URL": "https://p",
        "NOTES_PIPELINE_IDENTITY_URL": "https://id",
        "NOTES_PIPELINE_CRM_DSN": "postgresql://crm",
    }
    same = resources_for_environment(common)
    assert same["crm_audits"] is same["crm"]  # [N22] falls back to the CRM DSN
    own = resources_for_environment({**common, "NOTES_PIPELINE_CRM_AUDIT_DSN": "postgresql://a"})
    assert own["crm_audits"].dsn == dg.EnvVar("NOTES_PIPELINE_CRM_AUDIT_DSN")
    http = resources_for_environment(
        {
            **common,
            "NOTES_PIPELINE_CRM_SOURCE": "http",
            "NOTES_PIPELINE_CRM_API_URL": "https://crm",
            "CRM_API_AUTH": "t",
        }
    )
    assert type(http["crm_audits"]) is HttpCrmSource  # no audits until the DSN is granted
    assert type(same["activity_log_settings"]) is ActivityLogSettings
    assert {"crm_audits", "activity_log_settings"} <= set(in_memory_resources())


def test_plan_events_carry_ids_and_codes_only(caplog):
    caplog.set_level(logging.INFO, logger="notes_pipeline.activity_logs.events")
    failed = PlanEntry(
        crm_audit_id=9,
        external_id="crm_audit:9",
        outcome=PlanOutcome.FAILED,
        code=FailureCode.INVALID_AUDITED_CHANGES,
        details="reason=malformed",
        crm_user_id=4,
        actor_case="A4",
        actor_not_resolved=True,
    )
    events.emit_plan_events("run-1", "7101", failed)
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert lines == [
        {
            "event": "crm_activity_logs_migration_record_failed",
            "job_id": "run-1",
            "cid": "7101",
            "external_id": "crm_audit:9",
            "reason_code": "invalid_audited_changes",
        },
        {
            "event": "crm_activity_logs_migration_actor_not_resolved",
            "job_id": "run-1",
            "cid": "7101",
            "external_id": "crm_audit:9",
            "crm_user_id": 4,
            "actor_case": "A4",
        },
    ]
    assert IdentityLookups().failed_emails == frozenset()
