"""Note content (SPEC rule 4): CRM mention anchors to text, nh3 sanitizing, length/empty gates."""

from __future__ import annotations

import hashlib
import html as html_lib
import re
from urllib.parse import urlsplit

import nh3

from notes_pipeline.reason_codes import NOTE_EMPTY, NOTE_TOO_LONG

MAX_NOTE_CHARS = 10_000

ALLOWED_TAGS = frozenset(
    "a b i strong em u s span br div p ul ol li blockquote h1 h2 h3 h4 h5 h6 pre".split()
)
# Elements removed together with their content (script/style per spec; the rest hold raw
# text or foreign markup that would otherwise surface as escaped junk).
CLEAN_CONTENT_TAGS = frozenset(
    "script style template noscript iframe noembed noframes xmp textarea title svg math".split()
)
ALLOWED_URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "nofollow noopener"

_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]*):")
_ANCHOR = re.compile(
    # <a ...>: quoted values may hold '>'; no '<' anywhere, which keeps every scan linear.
    r"<a(?P<attrs>(?:\s(?:[^<>\"']++|\"[^\"<]*+\"|'[^'<]*+')*+)?)>"
    r"(?P<inner>(?:[^<]++|<(?!/?a[\s/>]))*+)"  # up to the next <a or </a: linear scan
    r"</a\s*>",
    re.IGNORECASE,
)
_ATTR = re.compile(
    r"(?P<name>[^\s\"'>/=]+)(?:\s*=\s*(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<uq>[^\s>]+)))?"
)
_EDIT_USER_PATH = re.compile(r"(?:^|/)users/\d+/edit_user/?$", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), " ")


class NoteContentError(ValueError):
    """A note whose content cannot be migrated; ``details`` carries lengths/ids only."""

    def __init__(self, reason_code: str, details: str = "") -> None:
        super().__init__(f"{reason_code}: {details}" if details else reason_code)
        self.reason_code = reason_code
        self.details = details


def _attributes(attrs: str) -> dict[str, str]:
    """Parse a start tag's attribute string into lower-cased names and unescaped values."""
    found: dict[str, str] = {}
    for match in _ATTR.finditer(attrs):
        value = match.group("dq") or match.group("sq") or match.group("uq") or ""
        found.setdefault(match.group("name").lower(), html_lib.unescape(value))
    return found


def _is_mention(attrs: dict[str, str]) -> bool:
    """True for CRM mention anchors: ``data-user-id`` or an ``/users/{id}/edit_user`` href."""
    if "data-user-id" in attrs:
        return True
    try:
        path = urlsplit(attrs.get("href", "").strip()).path
    except ValueError:
        return False
    return bool(_EDIT_USER_PATH.search(path))


def _mention_text(match: re.Match[str]) -> str:
    """Replacement for one anchor: its escaped text if it is a mention, else unchanged."""
    if not _is_mention(_attributes(match.group("attrs"))):
        return match.group(0)
    # Tags (and script/style bodies) dropped, text kept HTML-escaped: '@<x>' stays inert text.
    return nh3.clean(
        match.group("inner"),
        tags=set(),
        clean_content_tags=set(CLEAN_CONTENT_TAGS),
        attributes={"*": set()},
    )


def strip_mention_anchors(html: str) -> str:
    """Replace CRM mention anchors with their plain (escaped) ``@Name`` text."""
    return _ANCHOR.sub(_mention_text, html)


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    """nh3 attribute filter: ``href`` only with an allowed scheme (relative URLs are dropped)."""
    if attribute != "href":
        return value
    scheme = _SCHEME.match(value)
    return value if scheme and scheme.group(1).lower() in ALLOWED_URL_SCHEMES else None


def sanitize_html(html: str) -> str:
    """Deny-by-default nh3 sanitizing; never wraps the output in ``<p>``."""
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(CLEAN_CONTENT_TAGS),
        # "*" must be given explicitly, else ammonia's generic defaults (lang, title) survive.
        attributes={"*": set(), "a": {"href"}},
        attribute_filter=_keep_attribute,
        url_schemes=set(ALLOWED_URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
    )


def visible_text(sanitized: str) -> str:
    """The text a reader would see (tags removed, entities decoded, whitespace trimmed)."""
    text = html_lib.unescape(_TAG.sub(" ", sanitized)).translate(_INVISIBLE)
    return text.strip()


def normalize_note_html(html: str | None) -> str:
    """Mentions to text, sanitize, then reject too-long (never truncate) or empty content."""
    if html is None:
        raise NoteContentError(NOTE_EMPTY, "length=0")
    sanitized = sanitize_html(strip_mention_anchors(html))
    if len(sanitized) > MAX_NOTE_CHARS:
        raise NoteContentError(NOTE_TOO_LONG, f"length={len(sanitized)} limit={MAX_NOTE_CHARS}")
    if not visible_text(sanitized):
        raise NoteContentError(NOTE_EMPTY, f"source_length={len(html)}")
    return sanitized


def content_hash(sanitized: str) -> str:
    """sha256 hex of the sanitized content (fidelity checks)."""
    return hashlib.sha256(sanitized.encode("utf-8")).hexdigest()
