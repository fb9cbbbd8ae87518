"""Note content (SPEC rule 4): CRM mention anchors to text, nh3 sanitizing, length/empty gates.

``normalize_note_html`` works on the HTML5 parse that nh3 (ammonia/html5ever) makes, never on
the raw markup:

1. ``_clean`` with the *mention* config: a first nh3 pass that keeps only ``ALLOWED_TAGS`` and,
   on ``a``, ``data-user-id`` plus an ``href`` that is allowed or a mention path. Its output is
   html5ever's serialization of a tree: every element is a balanced start/end pair, text and
   attribute values are escaped, attributes are always ``name="value"``.
2. ``_rewrite_anchors`` walks that serialization token by token with a stack (linear time):
   mention anchors become their escaped text (their inner tags dropped), anchors without an
   allowed ``href`` are unwrapped. Anchors may nest in that tree (an ``<a>`` inside a dropped
   ``<table>``/``<object>``); the stack handles it.
3. ``sanitize_html``: the final deny-by-default pass (adds ``rel``). Its input holds allowed
   tags only, so its output re-parses to the same tree: ``normalize_note_html`` is idempotent.
4. Gates: ``NOTE_TOO_LONG`` on the length, ``NOTE_EMPTY`` when no code point is visible.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import re
import unicodedata
from urllib.parse import urlsplit

import nh3

from notes_pipeline.contact_notes.reason_codes import NoteCode

MAX_NOTE_CHARS = 10_000
# html5ever's cost grows quadratically with nesting depth (20,000 nested <div> take ~0.8 s,
# 200,000 over 60 s). Every allowed tag writes output, so a source with more tag openers than
# this could only pass the 10,000-character gate by being mostly dropped markup: it is
# NOTE_TOO_LONG before parsing, so one note can never stall its CID.
MAX_SOURCE_TAGS = 20_000
# nh3's cost also grows quadratically with entity and attribute density (2,000,000 "&" take
# ~37 s). The output may hold 10,000 characters, so a source 20 times longer could only pass by
# being almost all dropped markup: it is NOTE_TOO_LONG before parsing, after inline ``data:``
# URI payloads (which no allowed scheme keeps, e.g. pasted images) are cut from attributes.
MAX_SOURCE_CHARS = 20 * 10_000
_DATA_URI_PAYLOAD = re.compile(r"(=\s*[\"']?\s*data:)[^\"'\s>]{256,}", re.IGNORECASE)

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

# --- Visibility (NOTE_EMPTY) -------------------------------------------------------------
#: General categories that never show a glyph: controls, format characters, separators.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
#: Unicode ``Default_Ignorable_Code_Point`` (DerivedCoreProperties.txt; unchanged since
#: Unicode 14, checked against the ``regex`` package's ``\p{Default_Ignorable_Code_Point}``
#: at Unicode 17). The stdlib ``unicodedata`` has no such property, and a dependency only
#: for this table is not worth it. Inclusive ``(first, last)`` code point ranges.
DEFAULT_IGNORABLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # SOFT HYPHEN
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x061C, 0x061C),  # ARABIC LETTER MARK
    (0x115F, 0x1160),  # HANGUL CHOSEONG FILLER, HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ, AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS, MONGOLIAN VOWEL SEPARATOR
    (0x200B, 0x200F),  # ZERO WIDTH SPACE .. RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # WORD JOINER, invisible operators, bidi isolates, deprecated formats
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTOR-1 .. 16
    (0xFEFF, 0xFEFF),  # ZERO WIDTH NO-BREAK SPACE (byte order mark)
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),  # reserved
    (0x1BCA0, 0x1BCA3),  # SHORTHAND FORMAT LETTER OVERLAP .. UP STEP
    (0x1D173, 0x1D17A),  # MUSICAL SYMBOL BEGIN BEAM .. END PHRASE
    (0xE0000, 0xE0FFF),  # tags (incl. TAG SPACE), VARIATION SELECTOR-17 .. 256, reserved
)
# Code points that may be visible: everything but whitespace, C0/C1 controls and the
# default-ignorables. A match still needs its general category checked (Cf, e.g. U+0600).
_MAYBE_VISIBLE = re.compile(
    r"[^\s\x00-\x1f\x7f-\x9f"
    + "".join(f"\\U{first:08x}-\\U{last:08x}" for first, last in DEFAULT_IGNORABLE_RANGES)
    + "]"
)

# --- URLs and mentions ---------------------------------------------------------------------
_URL_TRIM = "".join(map(chr, range(0x21)))  # WHATWG "C0 control or space"
_URL_TAB_NEWLINE = dict.fromkeys(map(ord, "\t\n\r"))  # removed anywhere by the URL parser
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_EDIT_USER_PATH = re.compile(r"(?:^|/)users/\d+/edit_user/?$", re.IGNORECASE)

# --- Canonical (html5ever-serialized) markup -------------------------------------------------
# Only for nh3's own output: text never holds '<', tags are lower-case, attributes are always
# ` name="value"` with '"' escaped inside the value. A bare '<' (never produced) is inert text.
_CANONICAL_TOKEN = re.compile(
    r"(?P<text>[^<]++)"
    r"|<(?P<end>/?)(?P<name>[a-z][a-z0-9]*+)(?P<attrs>(?: [^\s\"'<>/=]++=\"[^\"]*+\")*+)>"
    r"|<"
)
_CANONICAL_TAG = re.compile(r"</?[a-z][a-z0-9]*+(?: [^\s\"'<>/=]++=\"[^\"]*+\")*+>")
_CANONICAL_ATTR = re.compile(r" ([^\s\"'<>/=]++)=\"([^\"]*+)\"")
# A <pre> start tag followed by a newline, skipping whole <a ...> tags (only they carry
# attributes, whose values might hold "<pre>").
_PRE_NEWLINE = re.compile(r"<a(?: [^\s\"'<>/=]++=\"[^\"]*+\")*+>|<pre>(?=\n)")
_VOID_TAGS = frozenset({"br"})
_SURROGATES = re.compile("[\\ud800-\\udfff]")

# Stack entries of _rewrite_anchors: what became of an open element's tags.
_HIDDEN, _KEPT, _MENTION = 0, 1, 2


class NoteContentError(ValueError):
    """A note whose content cannot be migrated; ``details`` carries lengths/ids only."""

    def __init__(self, reason_code: str, details: str = "") -> None:
        super().__init__(f"{reason_code}: {details}" if details else reason_code)
        self.reason_code = reason_code
        self.details = details


def url_scheme(href: str) -> str | None:
    """SPEC rule 4 link check: the lower-cased scheme (str) a browser reads from a decoded
    ``href`` value, or None for a relative URL. Raises nothing.

    Follows the WHATWG URL parser's first steps: leading/trailing C0 controls and spaces
    are trimmed and tab/CR/LF removed anywhere (so ``java\\tscript:`` is ``javascript``).
    """
    cleaned = href.strip(_URL_TRIM).translate(_URL_TAB_NEWLINE)
    match = _SCHEME.match(cleaned)
    return match.group(1).lower() if match else None


def is_allowed_href(href: str) -> bool:
    """SPEC rule 4: True when the decoded ``href`` (str) has an http/https/mailto scheme;
    False for relative URLs and every other scheme. Raises nothing."""
    return url_scheme(href) in ALLOWED_URL_SCHEMES


def _is_mention_href(href: str) -> bool:
    """True for CRM profile links: a URL whose path ends in ``users/{id}/edit_user``."""
    try:
        path = urlsplit(href.strip(_URL_TRIM)).path
    except ValueError:
        return False
    return bool(_EDIT_USER_PATH.search(path))


def is_mention(attributes: dict[str, str]) -> bool:
    """SPEC rule 4: True for a CRM mention anchor, given its decoded attributes as a dict by
    lower-case name: a ``data-user-id`` attribute, or an ``href`` whose path ends in
    ``users/{id}/edit_user``. Raises nothing."""
    return "data-user-id" in attributes or _is_mention_href(attributes.get("href", ""))


def _mention_pass_attribute(tag: str, attribute: str, value: str) -> str | None:
    """nh3 filter of the first pass: keep what tells a mention from a link, nothing else."""
    if attribute == "data-user-id":
        return ""  # its presence is the mark; the user id itself is not needed
    if attribute == "href" and (is_allowed_href(value) or _is_mention_href(value)):
        return value
    return None


def _final_pass_attribute(tag: str, attribute: str, value: str) -> str | None:
    """nh3 filter of the final pass: ``href`` only with an allowed scheme."""
    if attribute != "href":
        return value
    return value if is_allowed_href(value) else None


def _keep_pre_newlines(canonical: str) -> str:
    """Double the newline right after each ``<pre>`` of a canonical serialization.

    An HTML parser drops one newline right after ``<pre>``; html5ever's serializer does not
    re-add it, so ``<pre>\\n\\nx`` would lose a line on every parse and break idempotence.
    """
    if "<pre>\n" not in canonical:
        return canonical
    return _PRE_NEWLINE.sub(
        lambda m: m.group(0) + "\n" if m.group(0) == "<pre>" else m.group(0), canonical
    )


def _clean(html: str, *, mention_pass: bool) -> str:
    """One nh3 pass (first: mention-marking config; final: the SPEC rule 4 config)."""
    if mention_pass:
        cleaned = nh3.clean(
            html,
            tags=set(ALLOWED_TAGS),
            clean_content_tags=set(CLEAN_CONTENT_TAGS),
            attributes={"*": set(), "a": {"href", "data-user-id"}},
            attribute_filter=_mention_pass_attribute,
            url_schemes=set(ALLOWED_URL_SCHEMES),
            link_rel=None,
            strip_comments=True,
        )
    else:
        cleaned = nh3.clean(
            html,
            tags=set(ALLOWED_TAGS),
            clean_content_tags=set(CLEAN_CONTENT_TAGS),
            # "*" must be given explicitly, else ammonia's generic defaults (lang, title) survive.
            attributes={"*": set(), "a": {"href"}},
            attribute_filter=_final_pass_attribute,
            url_schemes=set(ALLOWED_URL_SCHEMES),
            link_rel=LINK_REL,
            strip_comments=True,
        )
    return _keep_pre_newlines(cleaned)


def _canonical_attributes(attrs: str) -> dict[str, str]:
    """Decoded attributes of one canonical start tag."""
    return {name: html_lib.unescape(value) for name, value in _CANONICAL_ATTR.findall(attrs)}


def _rewrite_anchors(canonical: str) -> str:
    """Mention anchors to their escaped text, other anchors without an allowed href unwrapped.

    ``canonical`` is a ``_clean`` output (balanced tags, escaped text). One left-to-right
    pass with a stack of open elements; every tag inside a mention is dropped, its text kept.
    """
    if "<a" not in canonical:
        return canonical
    out: list[str] = []
    stack: list[int] = []
    mentions = 0  # mention anchors currently open
    # 1: the last thing written is a <pre> start tag; 2: and tags were dropped since then.
    after_pre = 0
    for token in _CANONICAL_TOKEN.finditer(canonical):
        text = token.group("text")
        name = token.group("name")
        if text is not None or name is None:
            text = "&lt;" if text is None else text
            # Text that a dropped tag kept apart from <pre>: its leading newline needs a twin
            # (right after <pre>, _keep_pre_newlines already doubled it).
            out.append("\n" + text if after_pre == 2 and text.startswith("\n") else text)
            after_pre = 0
            continue
        if token.group("end"):
            state = stack.pop() if stack else _HIDDEN
            if state == _MENTION:
                mentions -= 1
        elif name == "a":
            attributes = _canonical_attributes(token.group("attrs"))
            if is_mention(attributes):
                state = _MENTION
                mentions += 1
            elif mentions == 0 and is_allowed_href(attributes.get("href", "")):
                state = _KEPT
            else:
                state = _HIDDEN
        else:
            state = _HIDDEN if mentions else _KEPT
        if state == _KEPT:
            out.append(token.group(0))
            after_pre = 1 if name == "pre" and not token.group("end") else 0
        elif after_pre:
            after_pre = 2
        if not token.group("end") and name not in _VOID_TAGS:
            stack.append(state)
    return "".join(out)


def strip_mention_anchors(html: str) -> str:
    """First stage of rule 4: HTML5-parse ``html`` like the sanitizer, keep allowed tags only,
    turn CRM mention anchors (``data-user-id`` or a ``/users/{id}/edit_user`` href) into their
    plain escaped text and unwrap every other ``<a>`` without an allowed ``href``.

    Returns well-formed HTML (str) holding only ``ALLOWED_TAGS`` and ``a href``; raises
    nothing for any ``str`` (lone surrogates become U+FFFD).
    """
    if not html.isascii():
        html = _SURROGATES.sub("\ufffd", html)
    return _rewrite_anchors(_clean(html, mention_pass=True))


def sanitize_html(html: str) -> str:
    """Deny-by-default nh3 sanitizing (SPEC rule 4): ``ALLOWED_TAGS`` only, no attributes but
    ``a href`` (http/https/mailto) with ``rel="nofollow noopener"``; never wraps in ``<p>``.

    Takes and returns HTML as str; raises nothing for any ``str`` (lone surrogates become
    U+FFFD). Anchors left without an ``href`` are not unwrapped here (see
    ``strip_mention_anchors``).
    """
    if not html.isascii():
        html = _SURROGATES.sub("\ufffd", html)
    return _clean(html, mention_pass=False)


def is_invisible(char: str) -> bool:
    """SPEC rule 4 (NOTE_EMPTY): True when the one-code-point str ``char`` shows nothing:
    whitespace, general category Cc/Cf/Zs/Zl/Zp, or Default_Ignorable_Code_Point
    (``DEFAULT_IGNORABLE_RANGES``). ``char`` must be exactly one code point."""
    return _MAYBE_VISIBLE.match(char) is None or unicodedata.category(char) in (
        INVISIBLE_CATEGORIES
    )


def has_visible_text(text: str) -> bool:
    """SPEC rule 4 (NOTE_EMPTY): True when the plain, decoded ``text`` holds at least one
    code point that is not ``is_invisible``. Stops at the first visible one; raises nothing."""
    position = 0
    while (match := _MAYBE_VISIBLE.search(text, position)) is not None:
        if unicodedata.category(match.group()) not in INVISIBLE_CATEGORIES:
            return True
        position = match.end()
    return False


def text_content(sanitized: str) -> str:
    """Decoded text (str) of sanitized, nh3-serialized HTML: tags removed, entities decoded.
    Raises nothing."""
    return html_lib.unescape(_CANONICAL_TAG.sub("", sanitized))


def visible_text(sanitized: str) -> str:
    """The text (str) a reader would see in sanitized HTML: ``text_content`` without the
    ``is_invisible`` code points; empty means NOTE_EMPTY (SPEC rule 4). Raises nothing."""
    return "".join(char for char in text_content(sanitized) if not is_invisible(char))


def normalize_note_html(html: str | None) -> str:
    """SPEC rule 4 for one note's HTML: mentions to text, sanitize, then gate.

    Returns the sanitized HTML (str; idempotent: normalizing it again returns it unchanged).
    Raises ``NoteContentError``: ``NOTE_TOO_LONG`` when the result exceeds ``MAX_NOTE_CHARS``
    (never truncated), or when the source holds more than ``MAX_SOURCE_TAGS`` ``<`` or
    (inline ``data:`` payloads aside) more than ``MAX_SOURCE_CHARS`` characters;
    ``NOTE_EMPTY`` for None or when no visible code point is left.
    Error details carry lengths only, never content.
    """
    if html is None:
        raise NoteContentError(NoteCode.NOTE_EMPTY, "length=0")
    if not isinstance(html, str):
        raise NoteContentError(NoteCode.NOTE_EMPTY, f"not_text={type(html).__name__}")
    source_length = len(html)
    if source_length > MAX_SOURCE_CHARS:
        html = _DATA_URI_PAYLOAD.sub(r"\1", html)
        if len(html) > MAX_SOURCE_CHARS:
            raise NoteContentError(
                NoteCode.NOTE_TOO_LONG,
                f"source_length={source_length} limit={MAX_SOURCE_CHARS}",
            )
    tags = html.count("<")
    if tags > MAX_SOURCE_TAGS:
        raise NoteContentError(
            NoteCode.NOTE_TOO_LONG, f"source_tags={tags} limit={MAX_SOURCE_TAGS}"
        )
    if "<" in html:
        sanitized = sanitize_html(strip_mention_anchors(html))
    else:  # text only: one parse gives a text node, which re-parses to itself
        sanitized = sanitize_html(html)
    if len(sanitized) > MAX_NOTE_CHARS:
        raise NoteContentError(
            NoteCode.NOTE_TOO_LONG, f"length={len(sanitized)} limit={MAX_NOTE_CHARS}"
        )
    if not has_visible_text(text_content(sanitized)):
        raise NoteContentError(NoteCode.NOTE_EMPTY, f"source_length={source_length}")
    return sanitized


def content_hash(sanitized: str) -> str:
    """sha256 hex (64-char str) of the sanitized content, for the fidelity checks."""
    return hashlib.sha256(sanitized.encode("utf-8")).hexdigest()
