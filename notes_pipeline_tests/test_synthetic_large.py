"""The one-CID ``large`` / ``large-plain`` profiles of the synthetic generator (no stack).

The 200,000-note default is checked through ``profile_sizes`` (building it takes ~25 s and
~1 GB); the datasets are built resized with ``notes=`` and compared with ``full``'s mix.
"""

from __future__ import annotations

import json

import pytest

from devtools.synthetic import build_dataset, profile_sizes, synthetic_cids
from devtools.synthetic.__main__ import main as cli_main
from devtools.synthetic.dataset import LARGE_CIDS, LARGE_NOTES, TEST_PROFILES

NOTES = 3000


@pytest.fixture(scope="module")
def large():
    return build_dataset("large", notes=NOTES)


@pytest.fixture(scope="module")
def plain():
    return build_dataset("large-plain", notes=NOTES)


@pytest.fixture(scope="module")
def full():
    return build_dataset("full")


def test_one_cid_of_200k_notes_by_default_and_resizable():
    assert LARGE_NOTES == 200_000
    assert profile_sizes("large") == [(LARGE_CIDS["large"], 200_000)]
    assert profile_sizes("large-plain") == [(LARGE_CIDS["large-plain"], 200_000)]
    assert profile_sizes("large-plain", 50_000) == [(LARGE_CIDS["large-plain"], 50_000)]
    assert {LARGE_CIDS["large"], LARGE_CIDS["large-plain"]} <= synthetic_cids()
    assert "large" not in TEST_PROFILES and "large-plain" not in TEST_PROFILES


def test_notes_is_refused_for_fixed_profiles_and_must_be_positive():
    with pytest.raises(ValueError, match="fixed sizes"):
        profile_sizes("full", 1000)
    with pytest.raises(ValueError, match=">= 1"):
        profile_sizes("large", 0)


@pytest.mark.parametrize("name", ["large", "plain"])
def test_summary_counts_agree_with_the_rows(name, large, plain):
    ds = {"large": large, "plain": plain}[name]
    summary = ds.summary()
    cid = str(ds.organizations[0]["id"])
    totals = summary["totals"]
    assert summary["cids"] == [int(cid)] and summary["cid_count"] == 1
    assert totals["notes_total"] == len(ds.crm_notes) == NOTES
    assert summary["per_cid"][cid]["notes_total"] == NOTES
    assert summary["rows"]["crm_notes"] == NOTES
    assert totals["attachments"]["total"] == len(ds.assets) + len(ds.crm_note_attachments)
    assert summary["objects"] == len(ds.objects) == totals["attachments"]["total"]
    expected = totals["expected"]
    assert expected["ready"] + expected["failed"] == totals["in_scope_notes"]
    assert summary["audit_rows"] == 0 and ds.audits == []  # notes only


def test_large_plain_has_no_attachment_at_all(plain):
    summary = plain.summary()
    assert plain.assets == [] and plain.crm_note_attachments == [] and plain.objects == {}
    assert summary["totals"]["attachments"]["total"] == 0
    assert summary["totals"]["expected"]["attachments_planned"]["total"] == 0


def test_large_has_the_full_profiles_mix(large, plain, full):
    def shares(ds) -> dict[str, float]:
        totals = ds.summary()["totals"]
        n = totals["notes_total"]
        return {
            "in_scope": totals["in_scope_notes"] / n,
            "person": totals["person_notes"] / n,
            "with_attachments": totals["attachments"]["notes_with_any"] / n,
            "failed": totals["expected"]["failed"] / totals["in_scope_notes"],
        }

    mine, reference, no_files = shares(large), shares(full), shares(plain)
    for key in ("in_scope", "person", "with_attachments"):
        assert mine[key] == pytest.approx(reference[key], abs=0.04), key
    for key in ("in_scope", "person"):
        assert no_files[key] == pytest.approx(reference[key], abs=0.04), key
    assert mine["failed"] < 0.01 and no_files["failed"] < 0.01  # under the 1 % gates


def test_same_seed_same_dataset_and_size_changes_it(plain):
    assert build_dataset("large-plain", notes=NOTES).fingerprint() == plain.fingerprint()
    assert build_dataset("large-plain", notes=NOTES + 1).fingerprint() != plain.fingerprint()
    assert build_dataset("large-plain", 43, notes=NOTES).fingerprint() != plain.fingerprint()


def test_cli_summary_takes_notes_for_large_profiles_only(capsys):
    assert cli_main(["summary", "--profile", "large-plain", "--notes", "500", "--totals-only"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "large-plain" and out["totals"]["notes_total"] == 500
    assert out["objects"] == 0
    with pytest.raises(SystemExit) as exc:
        cli_main(["summary", "--profile", "stage1", "--notes", "500"])
    assert exc.value.code == 2
