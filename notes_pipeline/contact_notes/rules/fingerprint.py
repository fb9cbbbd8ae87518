"""Source fingerprint of a CRM note, and the drift rule (issue #12 item 2). Pure.

A migrated note stores, at insert, ``legacy_crm_source_fingerprint``: a hash of the CRM fields
its document derives from. Validation plans the note again from the CRM row as it is now; when
the stored document differs from that plan, the fingerprints tell why:

* stored fingerprint ≠ the current one → the CRM row changed after migration: **drift**
  (CRM notes are read-only during the coexistence window, PRD §11.1, so this is an anomaly
  for Ops to review; the note is never overwritten);
* equal → the source is unchanged and the document is not what was planned: a **write-path
  mismatch**.

Notes stored without a fingerprint of this version (older runs) fall back to the CRM row's
``updated_at``: later than the stored one → drift, else mismatch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from notes_pipeline.core.crm_records import CrmNote

#: the CDP document field holding the fingerprint (net-new migration metadata, like
#: ``legacy_crm_note_id``)
SOURCE_FINGERPRINT = "legacy_crm_source_fingerprint"
VERSION = "v1"


def source_fingerprint(note: CrmNote, created_at: datetime, updated_at: datetime) -> str:
    """``"v1:<sha256 hex>"`` over the CRM fields the note's document derives from: content
    (raw HTML), ``created_at``/``updated_at`` (as normalized to UTC by rule 5, so the
    transport does not matter), contact (``crm_person_id``), owner (``creator_id``, the
    creator's email and name) and attachments (asset id, kind, file name, content type, size;
    not the URL, which a CRM API may sign per request). Deterministic; never raises."""
    attachments = sorted(
        [a.asset_id, a.kind, a.file_name, a.content_type, a.file_size] for a in note.attachments
    )
    payload = {
        "note": note.note,
        "created_at": created_at.isoformat(),
        "updated_at": updated_at.isoformat(),
        "crm_person_id": note.crm_person_id,
        "creator_id": note.creator_id,
        "creator_email": note.creator_email,
        "creator_name": note.creator_name,
        "attachments": attachments,
    }
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return f"{VERSION}:{hashlib.sha256(body.encode()).hexdigest()}"


def _version(fingerprint: Any) -> str | None:
    if not isinstance(fingerprint, str) or ":" not in fingerprint:
        return None
    return fingerprint.split(":", 1)[0]


def source_changed(planned: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """True when the CRM source of a migrated note changed after it was stored (drift).

    ``planned``: the document planned now; ``stored``: the document in CDP. Compares the
    fingerprints when both carry one of the same version; otherwise the CRM row's
    ``updated_at`` (planned) is later than the stored one. Never raises.
    """
    now, then = planned.get(SOURCE_FINGERPRINT), stored.get(SOURCE_FINGERPRINT)
    if _version(now) is not None and _version(now) == _version(then):
        return now != then
    planned_updated, stored_updated = planned.get("updated_at"), stored.get("updated_at")
    if isinstance(planned_updated, datetime) and isinstance(stored_updated, datetime):
        try:
            return planned_updated > stored_updated
        except TypeError:  # aware vs naive: not comparable, not evidence of drift
            return False
    return False
