"""The article store's pure parts (slugs, validation, hashing, front matter) and its transactions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fedibridge import articles, frontmatter
from fedibridge.errors import BadRequest, Gone, NotFound
from fedibridge.models import Article
from fedibridge.store import Store
from fedibridge.tables import activities, deliveries, followers
from fedibridge.vocab import Site

SITE = Site(base_url="https://bridge.example", domain="bridge.example", username="blog", name="Blog", summary="",
            blog_url="https://blog.example", public_key_pem="", published=datetime(2024, 1, 1, tzinfo=UTC),
            language="fr")


@pytest.mark.parametrize(("title", "slug"), [
    ("L’été à Paris", "l-ete-a-paris"),
    ("L'été à Paris", "l-ete-a-paris"),
    ("« Où est passé l’œuf ? »", "ou-est-passe-l-oeuf"),
    ("Ça, c'est Noël !", "ca-c-est-noel"),
    ("Straße & Ærø", "strasse-aero"),
    ("  --Déjà vu--  ", "deja-vu"),
])
def test_slugify_french(title: str, slug: str) -> None:
    assert articles.slugify(title) == slug


def test_slugify_edge_cases() -> None:
    assert articles.slugify("🌞🌞").startswith("article-")  # nothing left: still a usable slug
    long = articles.slugify("mot " * 60)
    assert len(long) <= articles.SLUG_MAX and not long.endswith("-")
    assert articles.slug_from_url("https://blog.example/2024/07/ete-a-paris/") == "ete-a-paris"
    assert articles.slug_from_url("https://blog.example/posts/caf%C3%A9.html") == "cafe"
    assert articles.slug_from_url("https://blog.example/?p=12") is None
    assert articles.slug_from_url("https://blog.example/2024/07/14/") is None


def test_validate_cleans_and_keeps_text() -> None:
    inp = articles.validate({
        "title": "  Été  ", "url": "https://blog.example/ete/",
        "content": '<p onclick="x">« Oui » 🌞</p><script>1</script>',
        "summary": "<b>Résumé</b><iframe></iframe>", "tags": ["a", " a ", "", "b"],
        "published": "2024-07-14T10:30:00+02:00",
        "sensitive": True, "content_warning": "spoiler", "extra": {"ignored": True},
    })
    assert inp.title == "Été" and inp.content == "<p>« Oui » 🌞</p>"
    assert inp.summary == "<b>Résumé</b>" and inp.tags == ("a", "b")
    assert inp.published == datetime(2024, 7, 14, 8, 30, tzinfo=UTC)
    assert inp.sensitive and inp.content_warning == "spoiler"
    assert articles.parse_when("2024-07-14") == datetime(2024, 7, 14, tzinfo=UTC)
    assert articles.parse_when("2024-07-14T08:30:00Z") == datetime(2024, 7, 14, 8, 30, tzinfo=UTC)
    with pytest.raises(BadRequest, match="content"):
        articles.validate({"title": "x", "url": "https://b.example/", "content": "<script>only</script>"})


def test_content_hash_ignores_nothing_visible() -> None:
    base = {"title": "T", "url": "https://b.example/", "content": "<p>x</p>", "tags": ["a"],
            "published": datetime(2024, 1, 1, tzinfo=UTC)}
    assert articles.content_hash(base) == articles.content_hash(dict(base))
    for change in ({"title": "U"}, {"tags": ["b"]}, {"content": "<p>y</p>"}, {"image_alt": "alt"},
                   {"published": datetime(2024, 1, 2, tzinfo=UTC)}):
        assert articles.content_hash({**base, **change}) != articles.content_hash(base)


def test_article_from_row() -> None:
    row = {"slug": "s", "title": "T", "url": "https://b.example/", "content": "<p>x</p>",
           "published": datetime(2024, 1, 1, tzinfo=UTC), "updated": None, "summary": None, "tags": ["a", "b"],
           "language": "fr", "image": None, "image_alt": None, "sensitive": 0, "content_warning": None,
           "deleted": None}
    got = articles.article_from_row(row, likes=2)
    assert got == Article(slug="s", title="T", url="https://b.example/", content="<p>x</p>",
                          published=datetime(2024, 1, 1, tzinfo=UTC), tags=("a", "b"), language="fr", likes=2)


def test_front_matter_markdown(tmp_path: Path) -> None:
    post = tmp_path / "ete.md"
    post.write_text(
        "---\ntitle: \"L’été à Paris « enfin »\"\ndate: 2024-07-14\ntags: [voyage, été]\nlang: fr\n"
        "image: https://blog.example/seine.jpg\nalt: La Seine\nurl: https://blog.example/ete/\nsensitive: true\n"
        "content_warning: Chaleur\ndescription: Un résumé.\n---\n\n# Bonjour\n\nIl fait *chaud* — « oui » 🌞.\n",
        encoding="utf-8")
    data = frontmatter.load_file(post)
    assert data["title"] == "L’été à Paris « enfin »" and data["published"] == date(2024, 7, 14).isoformat()
    assert data["tags"] == ["voyage", "été"] and data["language"] == "fr" and data["image_alt"] == "La Seine"
    assert data["summary"] == "Un résumé." and data["sensitive"] is True and data["content_warning"] == "Chaleur"
    assert "<h1>Bonjour</h1>" in data["content"]
    assert "<p>Il fait <em>chaud</em> — « oui » 🌞.</p>" in data["content"]  # no smart-quote rewriting
    inp = articles.validate(data, source="cli")
    assert inp.url == "https://blog.example/ete/" and inp.sensitive


def test_front_matter_html_and_errors(tmp_path: Path) -> None:
    post = tmp_path / "p.html"
    post.write_text("---\ntitle: Hé\nslug: he\ntags: a, b\nurl: https://blog.example/he/\n"
                    "image: {src: 'https://blog.example/i.png', alt: 'Un chat'}\n---\n<p>Salut</p>\n", encoding="utf-8")
    data = frontmatter.load_file(post)
    assert data["content"].strip() == "<p>Salut</p>" and data["tags"] == ["a", "b"]
    assert data["image"] == "https://blog.example/i.png" and data["image_alt"] == "Un chat"
    (tmp_path / "bad.md").write_text("---\ntitle: [unclosed\n---\nx", encoding="utf-8")
    with pytest.raises(BadRequest, match="YAML"):
        frontmatter.load_file(tmp_path / "bad.md")
    (tmp_path / "open.md").write_text("---\ntitle: x\n", encoding="utf-8")
    with pytest.raises(BadRequest, match="never ends"):
        frontmatter.load_file(tmp_path / "open.md")
    with pytest.raises(BadRequest, match="url"):
        articles.validate(frontmatter.load_file(tmp_path / "p.html") | {"url": None})


async def test_store_transactions(database_url: str) -> None:
    """Create → no-op → Update → Delete, each one activity and one delivery row per inbox."""
    store = await Store.open(database_url)
    try:
        async with store.begin() as conn:
            await conn.execute(followers.insert().values(
                actor_id="https://misskey.example/users/9x", inbox="https://misskey.example/users/9x/inbox",
                shared_inbox="https://misskey.example/inbox", since=datetime.now(UTC)))
        data = {"title": "Titre", "url": "https://blog.example/t/", "content": "<p>v1</p>"}
        first = await articles.publish_one(store, SITE, articles.validate(data))
        assert first.created and first.queued == 1 and first.article.slug == "t"
        same = await articles.publish_one(store, SITE, articles.validate(data))
        assert not same.changed and same.activity is None
        upd = await articles.publish_one(store, SITE, articles.validate({**data, "content": "<p>v2</p>"}),
                                         deliver=False)
        assert upd.changed and upd.queued == 0 and upd.article.updated is not None
        gone = await articles.delete_one(store, SITE, "t")
        assert gone.article.deleted is not None and gone.queued == 1
        with pytest.raises(Gone):
            await articles.publish_one(store, SITE, articles.validate(data))
        with pytest.raises(NotFound):
            await articles.delete_one(store, SITE, "nope")
        async with store.connect() as conn:
            kinds = [r.type for r in await conn.execute(select(activities.c.type).order_by(activities.c.id))]
            assert kinds == ["Create", "Update", "Delete"]
            assert (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one() == 2
            article = await articles.get_article(conn, "t")
        assert article is not None and article.content == "<p>v2</p>" and article.deleted is not None
    finally:
        await store.close()


def test_front_matter_toml_and_json_as_hugo_writes_them(tmp_path: Path) -> None:
    toml_post = tmp_path / "toml.md"
    toml_post.write_text('+++\ntitle = "Hé « là »"\ndate = 2024-07-14T10:30:00+02:00\ntags = ["a", "b"]\n'
                         'url = "https://blog.example/he/"\n+++\nCorps *ici*.\n', encoding="utf-8")
    data = frontmatter.load_file(toml_post)
    assert data["title"] == "Hé « là »" and data["published"] == "2024-07-14T10:30:00+02:00"
    assert data["tags"] == ["a", "b"] and "<em>ici</em>" in data["content"] and "+++" not in data["content"]
    json_post = tmp_path / "json.md"
    json_post.write_text('{\n  "title": "Hé",\n  "categories": ["x"],\n  "url": "https://blog.example/he/"\n}\n\n'
                         "Corps.\n", encoding="utf-8")
    data = frontmatter.load_file(json_post)
    assert data["title"] == "Hé" and data["tags"] == ["x"] and data["content"] == "<p>Corps.</p>"
    (tmp_path / "bad.md").write_text('+++\ntitle = "unclosed\n+++\nx', encoding="utf-8")
    with pytest.raises(BadRequest, match="TOML"):
        frontmatter.load_file(tmp_path / "bad.md")
    (tmp_path / "open.md").write_text('+++\ntitle = "x"\n', encoding="utf-8")
    with pytest.raises(BadRequest, match=r"starts with \+\+\+ but never ends"):
        frontmatter.load_file(tmp_path / "open.md")
    (tmp_path / "badjson.md").write_text('{"title": "x",}\nbody', encoding="utf-8")
    with pytest.raises(BadRequest, match="not valid JSON"):
        frontmatter.load_file(tmp_path / "badjson.md")


def test_article_file_errors_use_the_files_own_names(tmp_path: Path) -> None:
    post = tmp_path / "p.md"
    post.write_text("---\ntitle: x\nurl: https://blog.example/x/\ndate: someday\n---\nbody\n", encoding="utf-8")
    file = frontmatter.read(post)
    with pytest.raises(BadRequest) as info:
        articles.validate(file.data, source="cli")
    assert str(file.explain(info.value)).startswith(f"{post}: date must be an ISO 8601 date")
    bare = tmp_path / "bare.md"
    bare.write_text("# Titre\n\nTexte.\n", encoding="utf-8")
    file = frontmatter.read(bare)
    with pytest.raises(BadRequest) as info:
        articles.validate(file.data, source="cli")
    assert "no front matter found" in str(file.explain(info.value)) and "+++" in str(file.explain(info.value))
