"""Rule 4: mention anchors, nh3 sanitizing, length and empty gates (task 1.2 table)."""

import contextlib
import time

import pytest

from notes_pipeline.contact_notes.reason_codes import NoteCode
from notes_pipeline.contact_notes.rules.html import (
    MAX_NOTE_CHARS,
    MAX_SOURCE_CHARS,
    NoteContentError,
    content_hash,
    normalize_note_html,
    sanitize_html,
    strip_mention_anchors,
)

REL = 'rel="nofollow noopener"'


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('<p onerror="x">hi</p>', "<p>hi</p>"),
        ('<a data-user-id="123">@Alice</a>', "@Alice"),
        ('<a href="/users/123/edit_user">@Bob</a>', "@Bob"),
        ("<strong>bold</strong>", "<strong>bold</strong>"),
        ("just some text", "just some text"),
        ('<span style="background:url(https://evil/x)">hi</span>', "<span>hi</span>"),
        ("hi <img src=x onerror=alert(1)>", "hi "),
        (
            '<a href="https://example.com/a?b=1&amp;c=2">x</a>',
            f'<a href="https://example.com/a?b=1&amp;c=2" {REL}>x</a>',
        ),
        ('<a href="http://example.com">x</a>', f'<a href="http://example.com" {REL}>x</a>'),
        (
            '<a href="mailto:a@example.com">mail</a>',
            f'<a href="mailto:a@example.com" {REL}>mail</a>',
        ),
        (
            "<ul><li><em>a</em></li></ul><blockquote><u>q</u></blockquote><h2>t</h2><pre>c</pre>",
            "<ul><li><em>a</em></li></ul><blockquote><u>q</u></blockquote><h2>t</h2><pre>c</pre>",
        ),
        ("<div>a<br>b</div>", "<div>a<br>b</div>"),
        ('<b class="c" id="i" title="t" data-x="1">b</b>', "<b>b</b>"),
        ("<table><tr><td>cell</td></tr></table>", "cell"),
        ("<p>keep</p><script>alert(1)</script><style>p{}</style>", "<p>keep</p>"),
        ("a<!-- secret -->b", "ab"),
    ],
)
def test_normalize_table(source, expected):
    assert normalize_note_html(source) == expected


@pytest.mark.parametrize(
    "href",
    [
        "javascript:void(0)",
        "JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html,x",
        "vbscript:x",
        "/relative/path",
        "//evil.example/x",
        "&#106;avascript:alert(1)",
        "&#x6A;&#x61;vascript&colon;alert(1)",
        " javascript:alert(1)",
        "\x01javascript:alert(1)",
        "javas&#09;cript:alert(1)",
        "jav&#x0A;ascript:alert(1)",
        "javascript&colon;alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "http://[bad",
        "#top",
        "",
    ],
)
def test_unsafe_href_removed_but_text_kept(href):
    """No <a> without an allowed href survives: the anchor is unwrapped, its text kept."""
    assert normalize_note_html(f'<a href="{href}" onclick="x">click</a>') == "click"


def test_anchor_without_href_is_unwrapped():
    assert normalize_note_html('<p><a name="x" title="t">plain</a></p>') == "<p>plain</p>"


def test_bare_text_is_not_wrapped_in_p():
    result = normalize_note_html("hello <b>world</b>")
    assert result == "hello <b>world</b>"
    assert not result.startswith("<p>")


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        "",
        "   \n\t ",
        "&nbsp;",
        " &nbsp; &#160;\u00a0",
        "<br>",
        "<br/><br />&nbsp;",
        "<p></p><div> </div><p>&nbsp;</p>",
        "<img src=x onerror=alert(1)>",
        "<style>body{}</style>",
        "\u200b",
        None,
        # Issue #8: nothing visible, decided by Unicode property
        "<p>&lrm;</p>",
        "<p>&shy;</p>",
        "<p>\u2063</p>",
        "<p>\u180e</p>",  # MONGOLIAN VOWEL SEPARATOR (Cf)
        "<p>\u3164</p>",  # HANGUL FILLER (Lo, default-ignorable)
        "<p>\uffa0\u115f\u1160</p>",  # halfwidth / choseong / jungseong fillers
        "<p>\ufe0f</p>",  # VARIATION SELECTOR-16 (Mn, default-ignorable)
        "<p>\U000e0020</p>",  # TAG SPACE
        "<p>\U000e0001\U000e0100</p>",  # LANGUAGE TAG, VARIATION SELECTOR-17
        "<p>\u00a0</p>",  # NBSP
        "<p>\u3000</p>",  # IDEOGRAPHIC SPACE
        "<p>\u2028\u2029\u0085\x0c</p>",  # line/paragraph separators, NEL, form feed
        "<p>\x01\x7f\x9f</p>",  # C0/C1 controls
        "<p>\u034f\u061c\u17b4\u202e\u2066\u206f\ufeff</p>",
        "<p>\U0001d173\U0001bca0</p>",  # musical / shorthand format controls
        "<p>\u0600\u200b</p>",  # Cf outside the default-ignorable set
        "<p>&#x200e;&#8203;&zwj;&zwnj;&NoBreak;</p>",  # as character references
        "<div>\u200b<b>&shy;</b><br><span>\u3164\ufe0f</span>&nbsp;\u3000</div>",
        '<p><a href="https://example.com">\u200b</a></p>',  # a link with no visible text
        '<a data-user-id="1">\u2063</a>',  # an invisible mention
        "<pre>\n\n\u200b</pre>",
    ],
)
def test_empty_content_is_note_empty(source):
    with pytest.raises(NoteContentError) as info:
        normalize_note_html(source)
    assert info.value.reason_code == NoteCode.NOTE_EMPTY


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<p>&lrm;a</p>", "<p>\u200ea</p>"),
        ("\u3164x", "\u3164x"),
        ("\u2764\ufe0f", "\u2764\ufe0f"),  # heart + VS16
        ("&shy;\u00e9", "\u00ad\u00e9"),
        ("\u0301", "\u0301"),  # a lone combining mark is not invisible by property
        ("\u200f\u05e9\u05dc\u05d5\u05dd", "\u200f\u05e9\u05dc\u05d5\u05dd"),
        ("\U0001f600", "\U0001f600"),
        ("\ue000", "\ue000"),  # private use: may be an icon glyph
        ("<b>\u3000.\u3000</b>", "<b>\u3000.\u3000</b>"),
    ],
)
def test_any_visible_code_point_passes(source, expected):
    assert normalize_note_html(source) == expected


def test_lone_surrogates_never_crash():
    assert normalize_note_html("a\ud800b\udfff") == "a\ufffdb\ufffd"


def test_too_long_after_sanitizing_fails_never_truncates():
    source = "<b>" + "x" * MAX_NOTE_CHARS + "</b>"
    with pytest.raises(NoteContentError) as info:
        normalize_note_html(source)
    assert info.value.reason_code == NoteCode.NOTE_TOO_LONG
    assert "x" not in info.value.details  # lengths only, never content
    assert str(MAX_NOTE_CHARS + 7) in info.value.details


def test_exactly_at_limit_passes():
    text = "y" * MAX_NOTE_CHARS
    assert normalize_note_html(text) == text


def test_long_input_that_shrinks_below_limit_passes():
    junk = '<span style="color:red" onclick="steal()" data-a="1">z</span>' * 400
    assert len(junk) > MAX_NOTE_CHARS
    result = normalize_note_html(junk)
    assert result == "<span>z</span>" * 400


def test_error_details_carry_no_content():
    with pytest.raises(NoteContentError) as info:
        normalize_note_html("<script>secret customer data</script>")
    assert "secret" not in info.value.details and "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('<a data-user-id="123">@Alice</a> hi', "@Alice hi"),
        ("<a data-user-id='7' class=\"mention\">@Al</a>", "@Al"),
        ('<a class="m" href="https://crm.qontak.com/users/123/edit_user">@Bob</a>', "@Bob"),
        ('<a href="/users/123/edit_user?tab=profile&amp;x=1">@Bob</a>', "@Bob"),
        ("<a target='_blank' href='/users/9/edit_user'><span>@Bob</span></a>", "@Bob"),
        ('<A HREF="/users/9/edit_user" TITLE="a>b">@Caps</A >', "@Caps"),
        (
            'x <a href="https://example.com/users">site</a>',
            'x <a href="https://example.com/users">site</a>',
        ),
        # Was "<abbr>t</abbr>" (the regex helper left foreign markup alone); the helper now
        # returns the sanitizer's HTML5 parse, so only allowed tags are left.
        ("<abbr>t</abbr>", "t"),
        ('<a href="javascript:x">t</a>', "t"),  # anchors without an allowed href: unwrapped
    ],
)
def test_strip_mention_anchors(source, expected):
    assert strip_mention_anchors(source) == expected


def test_mentions_become_text_through_the_full_pipeline():
    source = (
        'Hi <a data-user-id="1">@Alice</a> and '
        '<a href="https://crm.qontak.com/users/2/edit_user"><b>@Bob</b></a>, see '
        '<a href="https://example.com/doc">doc</a>'
    )
    assert normalize_note_html(source) == (
        f'Hi @Alice and @Bob, see <a href="https://example.com/doc" {REL}>doc</a>'
    )


@pytest.mark.parametrize(
    "inner",
    [
        "@&lt;script&gt;alert(1)&lt;/script&gt;",
        "@<script>alert(1)</script>",
        '@<img src=x onerror="alert(1)">',
        "@&lt;img src=x onerror=alert(1)&gt;",
    ],
)
def test_mention_inner_text_cannot_smuggle_markup(inner):
    result = normalize_note_html(f'<a data-user-id="1">{inner}</a>')
    assert "<script" not in result and "<img" not in result
    assert result.startswith("@")
    assert sanitize_html(result) == result  # already-safe text survives a second pass


def test_sanitize_is_deterministic_and_idempotent():
    source = '<p style="x">a <a href="https://e.com" onclick="y">l</a><script>z</script></p>'
    first = sanitize_html(source)
    assert first == sanitize_html(source)
    assert sanitize_html(first) == first
    assert normalize_note_html(source) == normalize_note_html(source)


def test_content_hash():
    assert content_hash("<b>x</b>") == content_hash("<b>x</b>")
    assert content_hash("<b>x</b>") != content_hash("<b>y</b>")
    assert content_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# --- Issue #8: mentions are stripped on the HTML5 parse tree, not by regex -------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # the parser closes the first anchor at the second <a>: two mentions, then text
        ('<a data-user-id="5">@Ann<a data-user-id="5">@Annie</a> more</a>', "@Ann@Annie more"),
        # '/' between tag name and attribute is a separator in HTML5
        ('<a/data-user-id="12">@Ann</a>', "@Ann"),
        # the parser re-creates the unclosed anchor around "next": no link of it survives
        ('<p>Hi <a data-user-id="12">@Ann</p><p>next</p>', "<p>Hi @Ann</p><p>next</p>"),
        ("<a data-user-id>@NoValue</a>", "@NoValue"),
        ("<A DATA-USER-ID=9>@Up</A>", "@Up"),
        ('<a href="HTTPS://CRM.EXAMPLE/USERS/3/EDIT_USER/">@Caps</a>', "@Caps"),
        ('<a href="//crm.example/users/3/edit_user#x">@Proto</a>', "@Proto"),
        ('<a data-user-id="1" href="javascript:alert(1)">@X</a>', "@X"),
        ('<a href="https://x.example" data-user-id="1">@X</a>', "@X"),
        ("<b><a data-user-id=1>@A</b>tail</a>", "<b>@A</b>tail"),
        ("<a data-user-id=1><a data-user-id=2><a data-user-id=3>@deep", "@deep"),
        # everything the parser puts inside a mention becomes its plain text
        ("<div><a data-user-id=1>@A<div>block</div></a>", "<div>@Ablock</div>"),
        (
            '<a data-user-id=1>@A<a href="https://ok.example">link</a></a>',
            f'@A<a href="https://ok.example" {REL}>link</a>',
        ),
        (
            '<a href="https://ok.example">link<a data-user-id=1>@A</a></a>',
            f'<a href="https://ok.example" {REL}>link</a>@A',
        ),
        # anchors nested through a dropped <table>: the mention is flattened, the link kept
        (
            '<a href="https://ok.example">1<table><td><a data-user-id=2>@B</a></td></table></a>',
            f'<a href="https://ok.example" {REL}>1@B</a>',
        ),
        (
            '<a data-user-id=2>@B<table><td><a href="https://ok.example">l</a></td></table></a>',
            "@Bl",
        ),
        (
            '<a href="javascript:alert(1)">a<table><td><a href="https://ok.example">b</a></td>',
            f'a<a href="https://ok.example" {REL}>b</a>',
        ),
        (
            '<a href="https://ok.example">a<table><td><a href="javascript:x">b</a></td></table>',
            f'<a href="https://ok.example" {REL}>ab</a>',
        ),
        # look-alikes are links, not mentions
        (
            '<a href="https://crm.example/users/3/edit_user_x">x</a>',
            f'<a href="https://crm.example/users/3/edit_user_x" {REL}>x</a>',
        ),
        (
            '<a href="https://crm.example/users/abc/edit_user">x</a>',
            f'<a href="https://crm.example/users/abc/edit_user" {REL}>x</a>',
        ),
        # a dropped tag between <pre> and a leading newline: the newline is kept
        ("<pre><a data-user-id=1>\nx</a></pre>", "<pre>\n\nx</pre>"),
    ],
)
def test_mentions_on_the_parse_tree(source, expected):
    assert normalize_note_html(source) == expected
    assert normalize_note_html(expected) == expected


# --- XSS / hostile HTML: exact results --------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x<svg onload=alert(1)>y", "x"),
        (
            'a<math><mtext><table><mglyph><style><!--</style><img title="--&gt;&lt;img src=1 '
            'onerror=alert(1)&gt;">',
            "a",
        ),
        ('<noscript><p title="</noscript><img src=x onerror=alert(1)>">', '"&gt;'),
        ('a<iframe srcdoc="<script>alert(1)</script>">b</iframe>c', "ac"),
        ("<form action=javascript:alert(1)><button>x</button></form>", "x"),
        ("<object data=javascript:alert(1)>o</object>", "o"),
        ("e<embed src=javascript:alert(1)>", "e"),
        ("b<base href=javascript:/>", "b"),
        ('m<meta http-equiv=refresh content="0;url=javascript:alert(1)">', "m"),
        ("l<link rel=stylesheet href=//evil>", "l"),
        ('k<style>@import "x"</style>', "k"),
        ('<div style="background:url(javascript:alert(1))">d</div>', "<div>d</div>"),
        ("<p/onmouseover=alert(1)>x", "<p>x</p>"),
        (
            "<a href=https://ok.example onclick=alert(1) target=_blank rel=opener>x</a>",
            f'<a href="https://ok.example" {REL}>x</a>',
        ),
        ("<scr<script>ipt>alert(1)</script>", "ipt&gt;alert(1)"),
        ("<<script>script>alert(1)<</script>/script>", "&lt;/script&gt;"),
        ("<!--<script>-->alert(1)", "alert(1)"),
        ("c<![CDATA[<script>alert(1)</script>]]>", "calert(1)]]&gt;"),
        ("t<textarea><script>alert(1)</script></textarea>", "t"),
        ("u<title><script>alert(1)</script></title>", "u"),
        ("v<template><script>alert(1)</script></template>", "v"),
        ("w<xmp><script>alert(1)</script></xmp>", "w"),
        ("<plaintext><script>alert(1)", "&lt;script&gt;alert(1)"),
        ('q<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>', "q"),
        ("<isindex action=javascript:alert(1) type=image>i", "i"),
        ('<select><option><a href="javascript:x">s</a></option></select>', "s"),
        (
            '<a href="https://ok.example/&quot;onmouseover=&quot;alert(1)">x</a>',
            f'<a href="https://ok.example/&quot;onmouseover=&quot;alert(1)" {REL}>x</a>',
        ),
        (
            "<a href='https://ok.example/\"><script>alert(1)</script>'>x</a>",
            '<a href="https://ok.example/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" '
            f"{REL}>x</a>",
        ),
        (
            '<a href="mailto:a@example.com?body=<script>">m</a>',
            f'<a href="mailto:a@example.com?body=&lt;script&gt;" {REL}>m</a>',
        ),
        (
            '<a href="https://ok.example">a<a href="javascript:alert(1)">b</a></a>',
            f'<a href="https://ok.example" {REL}>a</a>b',
        ),
        ('<a data-user-id="1"><img src=x onerror=alert(1)>@X</a>', "@X"),
    ],
)
def test_hostile_html(source, expected):
    assert normalize_note_html(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        '<math href="javascript:alert(1)">x</math>',
        '<a href="https://x.example/" onmouseover="alert(1)"',  # unterminated tag
        '<a href="https://ok.example"><img src=x>\u200b</a>',  # an invisible link
    ],
)
def test_hostile_html_that_leaves_nothing(source):
    with pytest.raises(NoteContentError) as info:
        normalize_note_html(source)
    assert info.value.reason_code == NoteCode.NOTE_EMPTY


# --- linear time on large hostile inputs -----------------------------------------------------
@pytest.mark.parametrize(
    "source",
    [
        '<a data-user-id="1">@A ' * 20_000,  # unclosed mentions
        '<a data-user-id="1">@A</a> ' * 20_000,
        "<a " * 100_000,
        '<a x="' * 50_000,
        "<a " + '"' * 200_000,
        '<a href="https://e.example/' + "x" * 300_000 + '">y</a>',
        "<a data-user-id=1>@A<table><td>" * 10_000,  # anchors nested through table cells
        '<a href="https://e.example">l<table><td>' * 10_000,
        "<pre>" + "\n" * 200_000,
        "<p>" + "\u200b" * 200_000 + "</p>",
        "<p>" + "\u0600" * 200_000 + "</p>",
        "<" * 100_000,
        "&" * 100_000,
    ],
    ids=lambda source: f"{source[:12]!r}x{len(source)}",
)
def test_large_hostile_inputs_take_linear_time(source):
    started = time.perf_counter()
    with contextlib.suppress(NoteContentError):
        normalize_note_html(source)
    # ~0.05-0.4 s on a 2-core machine; a quadratic scan of these sizes would take minutes
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # a dropped scope boundary (<object>, <button>) would leave <p> inside <p>, which a
        # second parse splits: the final pass re-parses allowed tags only
        ("<p>x<object><p>y</p></object></p>", "<p>x</p><p>y</p><p></p>"),
        ("<p>x<button><p>y</p></button></p>", "<p>x</p><p>y</p><p></p>"),
        ("<h1>a<table><td><h2>b", "<h1>a</h1><h2>b</h2>"),
        # the parser drops one newline after <pre>; the serializer must keep the second one
        ("<pre>\n\nx</pre>", "<pre>\n\nx</pre>"),
        ("<pre>\r\n\r\nx</pre>", "<pre>\n\nx</pre>"),
        ("<pre>\nx</pre>", "<pre>x</pre>"),
    ],
)
def test_output_reparses_to_itself(source, expected):
    assert normalize_note_html(source) == expected
    assert normalize_note_html(expected) == expected


def test_deeply_nested_source_is_too_long_before_parsing():
    """html5ever is quadratic in nesting depth: such a note must fail fast, alone."""
    from notes_pipeline.contact_notes.rules.html import MAX_SOURCE_TAGS

    nested = "<div>" * (MAX_SOURCE_TAGS + 1) + "x"
    with pytest.raises(NoteContentError) as raised:
        normalize_note_html(nested)
    assert raised.value.reason_code == "NOTE_TOO_LONG"
    assert raised.value.details == f"source_tags={MAX_SOURCE_TAGS + 1} limit={MAX_SOURCE_TAGS}"
    assert normalize_note_html("<b>x</b>" * 1000).startswith("<b>x</b>")  # below: still parsed


@pytest.mark.parametrize(
    "hostile",
    [
        "&" * (MAX_SOURCE_CHARS + 1),  # entity density: nh3 is quadratic
        "<p " + " ".join(f"a{i}" for i in range(40_000)) + ">t",  # attribute count
    ],
    ids=["ampersands", "attributes"],
)
def test_sources_far_over_the_output_limit_are_too_long_before_parsing(hostile):
    with pytest.raises(NoteContentError) as raised:
        normalize_note_html(hostile)
    assert raised.value.reason_code == "NOTE_TOO_LONG"
    assert raised.value.details == f"source_length={len(hostile)} limit={MAX_SOURCE_CHARS}"


def test_inline_data_uri_payloads_do_not_count_against_the_source_limit():
    """A pasted image (base64 in an <img src>) is dropped by the sanitizer anyway."""
    image = '<img src="data:image/png;base64,' + "A" * (MAX_SOURCE_CHARS + 10) + '">'
    assert normalize_note_html("<p>see the screenshot</p>" + image) == "<p>see the screenshot</p>"


def test_non_text_content_is_empty_not_an_exception():
    with pytest.raises(NoteContentError) as raised:
        normalize_note_html(12345)  # type: ignore[arg-type]
    assert (raised.value.reason_code, raised.value.details) == ("NOTE_EMPTY", "not_text=int")
