"""Rule 4 properties (issue #8): whatever the CRM holds, ``normalize_note_html`` either raises
``NoteContentError`` or returns safe, canonical, idempotent HTML.

Outputs are checked with the stdlib ``html.parser`` tokenizer (not regexes): only
``ALLOWED_TAGS``; no attributes but ``href``/``rel`` on ``a``; every ``a`` has an
http/https/mailto ``href`` and ``rel="nofollow noopener"``; no comments, declarations or raw
``<``/``>`` in text. Inputs: arbitrary text (lone surrogates included) and HTML from a grammar
of tags, attributes, entities, CRM mentions and odd code points.

Settings are bounded and derandomized (same examples every run, no database files), so the
file runs in a few seconds and cannot flake in CI.
"""

from __future__ import annotations

import html
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notes_pipeline.contact_notes.reason_codes import NoteCode
from notes_pipeline.contact_notes.rules.html import (
    ALLOWED_TAGS,
    ALLOWED_URL_SCHEMES,
    LINK_REL,
    NoteContentError,
    normalize_note_html,
)

BOUNDED = settings(
    max_examples=250,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- the grammar ---------------------------------------------------------------------------
ODD_CHARS = [
    "\u200b", "\u200e", "\u00ad", "\u2063", "\u180e", "\u3164", "\ufe0f", "\U000e0020",
    "\u00a0", "\u3000", "\u2028", "\u0085", "\x00", "\x01", "\x0c", "\r", "\n", "\t",
    "\ufeff", "\ufffd", "\ud800", "\udfff", "\U0001f600", "\u0301", "\u202e", "\u0600",
]  # fmt: skip
TAG_NAMES = sorted(ALLOWED_TAGS) + [
    "script", "style", "img", "svg", "math", "mi", "mtext", "mglyph", "table", "tr", "td",
    "caption", "object", "applet", "marquee", "iframe", "textarea", "title", "plaintext",
    "xmp", "noscript", "noembed", "template", "form", "select", "option", "button", "abbr",
    "font", "foreignObject", "desc", "annotation-xml", "body", "html", "head", "frameset",
    "base", "meta", "input", "listing", "image", "isindex", "o:p",
]  # fmt: skip
ATTR_NAMES = [
    "href", "HREF", "data-user-id", "DATA-USER-ID", "rel", "style", "onclick", "onerror",
    "src", "class", "id", "title", "target", "xlink:href", "formaction", "srcdoc", "lang",
]  # fmt: skip
ATTR_VALUES = [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", "java\tscript:alert(1)",
    "java&#x09;script:x", "&#106;avascript:x", " javascript:x", "\x01javascript:x",
    "data:text/html,<script>x</script>", "vbscript:x", "http://example.com/",
    "https://e.example/?a=1&amp;b=<2>", "mailto:a@example.com",
    "https://crm.example/users/12/edit_user", "/users/5/edit_user?x=1", "//evil.example/x",
    "http://[bad", "\u00a0http://x.example", "ht\ttp://x.example", "#frag", "", "12",
    "nofollow", 'a"b', "a'b", "x>y", "<script>", "@Ann", "<pre>\n",
]  # fmt: skip
ENTITIES = [
    "&amp;", "&lt;", "&gt;", "&quot;", "&nbsp;", "&lrm;", "&shy;", "&#x2063;", "&#0;",
    "&#x110000;", "&#xD800;", "&", "&#", "&lt", "&#60;script&#62;", "&colon;", "&NewLine;",
    "&Tab;", "&zwj;", "&#x200b;", "&#x80;", "&#8238;",
]  # fmt: skip
JUNK = [
    "<!-- c -->", "<!--", "-->", "<![CDATA[x]]>", "<?x y?>", "<!doctype html>", "</", "<",
    "<a", '<a href="x', "</a", '<a data-user-id="1"', "<pre>\n", "\n", " ", ">", "/>",
]  # fmt: skip

text_chars = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.sampled_from(ODD_CHARS),
    st.characters(exclude_categories=()),  # anything, lone surrogates included
)
texts = st.text(text_chars, max_size=12)


def _case(name: str, upper: bool) -> str:
    return name.upper() if upper else name


@st.composite
def attributes(draw) -> str:
    name = draw(st.sampled_from(ATTR_NAMES))
    value = draw(st.one_of(st.sampled_from(ATTR_VALUES), texts))
    form = draw(st.sampled_from(['="{}"', "='{}'", "={}", ""]))
    separator = draw(st.sampled_from([" ", "/", "\n", "\t", "  "]))
    return separator + name + form.format(value)


@st.composite
def start_tags(draw) -> str:
    name = _case(draw(st.sampled_from(TAG_NAMES)), draw(st.booleans()))
    attrs = "".join(draw(st.lists(attributes(), max_size=3)))
    return f"<{name}{attrs}{draw(st.sampled_from(['', ' /', '/']))}>"


end_tags = st.builds(lambda name: f"</{name}>", st.sampled_from(TAG_NAMES))


@st.composite
def mentions(draw, inner: st.SearchStrategy[str]) -> str:
    user_id = draw(st.integers(0, 99))
    opening = draw(
        st.sampled_from(
            [
                f'<a data-user-id="{user_id}">',
                f"<a/data-user-id={user_id}>",
                f"<A DATA-USER-ID='{user_id}' class=m>",
                f'<a href="https://crm.example/users/{user_id}/edit_user">',
                f'<a href="/users/{user_id}/edit_user?tab=1" target=_blank>',
                f'<a data-user-id="{user_id}" href="javascript:alert(1)">',
            ]
        )
    )
    closing = draw(st.sampled_from(["</a>", "</A >", ""]))  # unclosed ones too
    return opening + "@" + draw(inner) + closing


leaves = st.one_of(
    texts,
    st.sampled_from(ENTITIES),
    st.sampled_from(JUNK),
    start_tags(),
    end_tags,
    mentions(texts),
)


def _nest(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    fragments = st.lists(children, max_size=4).map("".join)
    element = st.builds(
        lambda start, body, end: start + body + end,
        start_tags(),
        fragments,
        st.one_of(end_tags, st.just("")),
    )
    return st.one_of(fragments, element, mentions(fragments))


documents = st.recursive(leaves, _nest, max_leaves=30)


# --- the checks ----------------------------------------------------------------------------
class _Tokens(HTMLParser):
    """Records every token of the output (character references are kept as references)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.start: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.end: list[str] = []
        self.data: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.start.append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.other.append(f"self-closing {tag}")

    def handle_endtag(self, tag):
        self.end.append(tag)

    def handle_data(self, data):
        self.data.append(data)

    def handle_comment(self, data):
        self.other.append("comment")

    def handle_decl(self, decl):
        self.other.append("declaration")

    def handle_pi(self, data):
        self.other.append("processing instruction")

    def unknown_decl(self, data):
        self.other.append("unknown declaration")


def _scheme(href: str) -> str:
    """The scheme a browser reads: C0/space trimmed, tab/CR/LF removed (urlsplit does both)."""
    return urlsplit(href).scheme.lower()


def assert_safe_output(output: str) -> None:
    tokens = _Tokens()
    tokens.feed(output)
    tokens.close()
    assert tokens.other == []
    for tag, attrs in tokens.start:
        assert tag in ALLOWED_TAGS
        if tag != "a":
            assert attrs == [], (tag, attrs)
            continue
        values = dict(attrs)
        assert sorted(name for name, _ in attrs) == ["href", "rel"], attrs
        assert values["rel"] == LINK_REL
        assert values["href"] is not None and _scheme(values["href"]) in ALLOWED_URL_SCHEMES
    assert set(tokens.end) <= ALLOWED_TAGS
    for data in tokens.data:  # text is escaped: a raw '<' or '>' would be a serializer bug
        assert "<" not in data and ">" not in data


def check_normalize(source: str) -> None:
    try:
        output = normalize_note_html(source)
    except NoteContentError:
        return
    assert_safe_output(output)
    assert normalize_note_html(output) == output  # idempotent


@BOUNDED
@given(st.text(st.characters(exclude_categories=()), max_size=200))
def test_arbitrary_text(source):
    check_normalize(source)


@BOUNDED
@given(documents)
def test_grammar_html(source):
    check_normalize(source)


@BOUNDED
@given(st.lists(leaves, max_size=40).map("".join))
def test_token_soup(source):
    check_normalize(source)


@BOUNDED
@given(
    name=st.text(text_chars, max_size=20),
    opening=st.sampled_from(
        [
            '<a data-user-id="7">',
            "<a/data-user-id=7>",
            '<a href="https://crm.example/users/7/edit_user">',
            '<a href="/users/7/edit_user" data-user-id="7">',
        ]
    ),
)
def test_mention_becomes_its_escaped_text(name, opening):
    """A mention anchor yields exactly what its text alone yields (no link of any kind)."""
    escaped = html.escape(name, quote=False)
    mentioned = f"<p>Hi {opening}@{escaped}</a> there</p>"
    plain = f"<p>Hi @{escaped} there</p>"
    assert _outcome(mentioned) == _outcome(plain)


def _outcome(source: str) -> str:
    try:
        return normalize_note_html(source)
    except NoteContentError as error:
        return f"error {error.reason_code}"


# --- NOTE_EMPTY by Unicode property --------------------------------------------------------
# Default_Ignorable_Code_Point outside the C*/Z* categories (Lo fillers, Mn selectors), written
# out here independently of the module's table.
_IGNORABLE_NON_C_Z = (
    [0x115F, 0x1160, 0x3164, 0xFFA0, 0x034F, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F]
    + list(range(0xFE00, 0xFE10))
    + list(range(0xE0100, 0xE01F0))
)
invisible_chars = st.one_of(
    st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]),
    st.sampled_from([chr(cp) for cp in _IGNORABLE_NON_C_Z]),
    st.characters(min_codepoint=0xE0000, max_codepoint=0xE0FFF),  # tags, reserved: ignorable
)
visible_chars = st.characters(
    categories=["L", "M", "N", "P", "S"],
    exclude_characters=[chr(cp) for cp in _IGNORABLE_NON_C_Z],
)
wrappers = st.sampled_from(["{}", "<p>{}</p>", "<div><b>{}</b><br></div>", "<pre>{}</pre>"])


@BOUNDED
@given(text=st.text(invisible_chars, min_size=1, max_size=30), wrapper=wrappers)
def test_only_invisible_code_points_is_note_empty(text, wrapper):
    with pytest.raises(NoteContentError) as info:
        normalize_note_html(wrapper.format(html.escape(text)))
    assert info.value.reason_code == NoteCode.NOTE_EMPTY


@BOUNDED
@given(
    before=st.text(invisible_chars, max_size=10),
    char=visible_chars,
    after=st.text(invisible_chars, max_size=10),
    wrapper=wrappers,
)
def test_one_visible_code_point_passes(before, char, after, wrapper):
    output = normalize_note_html(wrapper.format(html.escape(before + char + after)))
    assert char in html.unescape(output)
