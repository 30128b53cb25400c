"""HTML sanitising: Mastodon's allow-list for remote HTML, hostile input, UTF-8 byte for byte."""

from __future__ import annotations

import pytest

from fedibridge.sanitize import escape_text, plain_text, sanitize_article, sanitize_remote, text_to_html

FRENCH = "Ça marche\u00a0: « très bien »\u202f! Noël, œuvre, déjà-vu 😀🇫🇷 👩‍💻"


# -- remote content: what Mastodon keeps ------------------------------------------------------


def test_mastodon_reply_markup_survives_with_forced_link_attributes() -> None:
    # Shaped like Mastodon 4.x status HTML: h-card mention, hashtag, invisible/ellipsis link parts.
    html = (
        '<p><span class="h-card" translate="no"><a href="https://masto.example/@alice" '
        'class="u-url mention">@<span>alice</span></a></span> Merci ! '
        '<a href="https://masto.example/tags/fediverse" class="mention hashtag" rel="tag">'
        "#<span>fediverse</span></a> "
        '<a href="https://example.org/un/tres/long/lien" target="_blank" rel="nofollow noopener">'
        '<span class="invisible">https://</span><span class="ellipsis">example.org/un/tres</span>'
        '<span class="invisible">/long/lien</span></a></p>'
    )
    out = sanitize_remote(html)
    assert '<span class="h-card" translate="no">' in out
    assert 'href="https://masto.example/@alice"' in out
    assert 'class="u-url mention"' in out
    assert 'class="mention hashtag"' in out
    assert '<span class="invisible">https://</span>' in out
    assert '<span class="ellipsis">example.org/un/tres</span>' in out
    assert out.count('rel="nofollow ugc noopener noreferrer"') == 3
    assert out.count('target="_blank"') == 3
    assert 'rel="tag"' not in out


def test_allowed_formatting_elements_are_kept() -> None:
    html = (
        "<p><b>b</b> <strong>s</strong> <i>i</i> <em>e</em> <u>u</u> <del>d</del> <s>x</s> "
        "<code>c</code></p><pre>pre</pre><blockquote><p>q</p></blockquote>"
        '<ol start="3" reversed><li value="5">un</li></ol><ul><li>deux</li></ul>'
        "<ruby>漢<rp>(</rp><rt>kan</rt><rp>)</rp></ruby><br>"
    )
    out = sanitize_remote(html)
    for fragment in (
        "<b>b</b>",
        "<strong>s</strong>",
        "<i>i</i>",
        "<em>e</em>",
        "<u>u</u>",
        "<del>d</del>",
        "<s>x</s>",
        "<code>c</code>",
        "<pre>pre</pre>",
        "<blockquote><p>q</p></blockquote>",
        '<ol start="3" reversed="">',
        '<li value="5">un</li>',
        "<ul><li>deux</li></ul>",
        "<ruby>漢<rp>(</rp><rt>kan</rt><rp>)</rp></ruby>",
        "<br>",
    ):
        assert fragment in out


def test_unknown_classes_are_dropped_known_ones_kept() -> None:
    out = sanitize_remote('<p class="e-content evil"><span class="mention big red">x</span></p>')
    assert out == '<p class="e-content"><span class="mention">x</span></p>'


def test_headings_become_strong_paragraphs_like_mastodon() -> None:
    out = sanitize_remote('<h1 style="color:red">Titre</h1><h3>Sous-titre</h3><p>texte</p>')
    assert out == "<p><strong>Titre</strong></p><p><strong>Sous-titre</strong></p><p>texte</p>"


def test_unsupported_elements_are_unwrapped_keeping_text() -> None:
    out = sanitize_remote(
        '<div><table><tr><td>cellule</td></tr></table><sup>2</sup><img src="https://x/a.png" alt="A"></div>'
    )
    assert out == "cellule2"


def test_lang_attribute_kept_only_when_it_looks_like_a_language_tag() -> None:
    assert sanitize_remote('<p lang="fr-CA">bonjour</p>') == '<p lang="fr-CA">bonjour</p>'
    assert sanitize_remote('<p lang="x&quot;>y">bonjour</p>') == "<p>bonjour</p>"


# -- remote content: hostile input --------------------------------------------------------------


def test_script_removed_with_its_content() -> None:
    out = sanitize_remote("<p>avant<script>alert('xss')</script>après</p>")
    assert out == "<p>avantaprès</p>"
    assert "alert" not in out


def test_style_removed_with_its_content() -> None:
    out = sanitize_remote("<style>body{display:none}</style><p style='color:red'>visible</p>")
    assert out == "<p>visible</p>"


def test_img_onerror_removed() -> None:
    out = sanitize_remote('<p>photo <img src="x" onerror="alert(1)"> ici</p>')
    assert out == "<p>photo  ici</p>"


def test_event_handlers_removed_from_allowed_elements() -> None:
    out = sanitize_remote(
        '<p onclick="steal()" onmouseover="x()">texte <a href="https://ok.example" onfocus="x()">lien</a></p>'
    )
    assert "onclick" not in out and "onmouseover" not in out and "onfocus" not in out
    assert "texte" in out and 'href="https://ok.example"' in out


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java&#x09;script:alert(1)",
        "java&#x0A;script:alert(1)",
        " javascript:alert(1)",
        "&#106;avascript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "/relative/path",
        "//evil.example/x",
        "ftp://files.example/x",
    ],
)
def test_dangerous_or_relative_hrefs_become_plain_text(href: str) -> None:
    out = sanitize_remote(f'<p>voir <a href="{href}">ce lien</a> !</p>')
    assert out == "<p>voir ce lien !</p>"


def test_iframe_removed_with_content() -> None:
    out = sanitize_remote('<p>vidéo</p><iframe src="https://evil.example"><b>fallback</b></iframe><p>fin</p>')
    assert out == "<p>vidéo</p><p>fin</p>"


def test_nested_and_broken_markup() -> None:
    html = (
        '<p><a href="https://ok.example"><a href="javascript:alert(1)">x</a></a>'
        "<scr<script>ipt>alert(2)</script>"
        '<svg><script>alert(3)</script></svg><math><mi xlink:href="javascript:alert(4)">m</mi></math>'
        "<!-- <script>alert(5)</script> --><noscript><p title='</noscript><img src=x onerror=alert(6)>'>"
        "</noscript>fin</p>"
    )
    out = sanitize_remote(html)
    for bad in ("alert(1)", "alert(3)", "alert(4)", "alert(5)", "onerror", "javascript", "<script", "<img", "<svg"):
        assert bad not in out
    assert "fin" in out


def test_output_is_stable_when_sanitised_twice() -> None:
    html = '<h2>T</h2><p class="h-entry x">a <a href="https://ok.example" class="mention">b</a>\u00a0»</p>'
    once = sanitize_remote(html)
    assert sanitize_remote(once) == once


# -- UTF-8 byte for byte --------------------------------------------------------------------------


def test_french_guillemets_nbsp_and_emoji_survive_byte_for_byte() -> None:
    out = sanitize_remote(f"<p>{FRENCH}</p>")
    assert out == f"<p>{FRENCH}</p>"
    assert out.encode("utf-8") == f"<p>{FRENCH}</p>".encode()
    assert "&nbsp;" not in out


def test_nbsp_entity_input_becomes_the_character() -> None:
    assert sanitize_remote("<p>Bonjour&nbsp;!</p>") == "<p>Bonjour\u00a0!</p>"


def test_article_keeps_french_byte_for_byte() -> None:
    assert sanitize_article(f"<h2>{FRENCH}</h2>") == f"<h2>{FRENCH}</h2>"


# -- outgoing articles ----------------------------------------------------------------------------


def test_article_keeps_headings_and_plain_links() -> None:
    out = sanitize_article('<h2>Partie 1</h2><p>Voir <a href="https://blog.example/a" rel="author">a</a></p>')
    assert out == '<h2>Partie 1</h2><p>Voir <a href="https://blog.example/a">a</a></p>'


def test_article_drops_images_and_turns_figcaption_into_paragraph() -> None:
    html = (
        '<figure><img src="https://blog.example/chat.jpg" alt="Un chat">'
        "<figcaption>Mon chat « Tigre »</figcaption></figure>"
    )
    assert sanitize_article(html) == "<p>Mon chat « Tigre »</p>"


def test_article_relative_links_resolved_against_base_or_dropped() -> None:
    html = '<p><a href="/a-propos">à propos</a></p>'
    assert sanitize_article(html, base_url="https://blog.example/posts/x") == (
        '<p><a href="https://blog.example/a-propos">à propos</a></p>'
    )
    assert sanitize_article(html) == "<p>à propos</p>"


def test_article_hostile_input() -> None:
    html = (
        '<p onclick="x()">ok<script>alert(1)</script><a href="javascript:alert(2)">lien</a>'
        '<img src="data:image/png;base64,AAAA" onerror="alert(3)"></p><iframe src="https://e"></iframe>'
    )
    assert sanitize_article(html) == "<p>oklien</p>"


# -- plain text -------------------------------------------------------------------------------------


def test_plain_text_strips_tags_and_collapses_ascii_whitespace_only() -> None:
    html = "<p>Bonjour\u00a0!</p>\n\n<p>Deux   mots<br>et  «\u202fguillemets\u202f»</p><script>x()</script>"
    assert plain_text(html) == "Bonjour\u00a0! Deux mots et «\u202fguillemets\u202f»"


def test_plain_text_decodes_entities() -> None:
    assert plain_text("<p>Tom &amp; Jerry &lt;3 &eacute;t&eacute;</p>") == "Tom & Jerry <3 été"


def test_plain_text_cuts_at_word_boundary_with_ellipsis() -> None:
    text = plain_text("<p>Un article sur la typographie française</p>", limit=25)
    assert text == "Un article sur la…"
    assert len(text) <= 25


def test_plain_text_under_limit_is_untouched_and_long_word_is_hard_cut() -> None:
    assert plain_text("<p>court</p>", limit=10) == "court"
    assert plain_text("anticonstitutionnellement", limit=10) == "anticonst…"


def test_plain_text_does_not_cut_before_a_nonbreaking_space() -> None:
    # "Bonjour\u00a0!" is one unit: the cut must not leave a dangling "!" nor split there.
    text = plain_text("Oui\u00a0! Bonjour\u00a0! Encore", limit=16)
    assert text == "Oui\u00a0! Bonjour\u00a0!…"


def test_plain_text_keeps_emoji_shortcodes_and_emoji() -> None:
    assert plain_text("<p>Salut :blobcat: 😀</p>") == "Salut :blobcat: 😀"


# -- escaping -----------------------------------------------------------------------------------------


def test_escape_text_makes_display_names_inert() -> None:
    name = 'Zoé <script>alert("x")</script> & « amis » :blobcat:'
    out = escape_text(name)
    assert out == "Zoé &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; « amis » :blobcat:"
    assert plain_text(out) == name


def test_text_to_html_paragraphs_and_breaks() -> None:
    assert text_to_html("Ligne 1\nLigne <2>\n\nPara 2 😀") == "<p>Ligne 1<br>Ligne &lt;2&gt;</p><p>Para 2 😀</p>"
