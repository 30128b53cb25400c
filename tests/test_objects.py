"""Parsing remote ActivityStreams objects as Mastodon, Misskey, Pleroma/Akkoma, GoToSocial,
Friendica and Lemmy really send them (compacted JSON, no JSON-LD expansion)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fedibridge.models import Attachment
from fedibridge.objects import (
    as_list,
    is_public,
    parse_actor,
    parse_datetime,
    parse_note,
    ref_id,
    visibility,
)

PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
ARTICLE = "https://blog.example/articles/typographie-francaise"
BLOG_ACTOR = "https://blog.example/actor"


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


PEM = _pem()

# -- notes ------------------------------------------------------------------------------------------

MASTODON_REPLY: dict[str, Any] = {
    "@context": [
        "https://www.w3.org/ns/activitystreams",
        {
            "ostatus": "http://ostatus.org#",
            "atomUri": "ostatus:atomUri",
            "inReplyToAtomUri": "ostatus:inReplyToAtomUri",
            "conversation": "ostatus:conversation",
            "sensitive": "as:sensitive",
            "toot": "http://joinmastodon.org/ns#",
            "votersCount": "toot:votersCount",
            "blurhash": "toot:blurhash",
            "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
            "Hashtag": "as:Hashtag",
            "Emoji": "toot:Emoji",
        },
    ],
    "id": "https://mastodon.social/users/alice/statuses/113278413562930123",
    "type": "Note",
    "summary": "Spoiler\u00a0: la fin de l’article",
    "inReplyTo": ARTICLE,
    "published": "2024-10-09T08:15:03Z",
    "updated": "2024-10-09T08:20:41Z",
    "url": "https://mastodon.social/@alice/113278413562930123",
    "attributedTo": "https://mastodon.social/users/alice",
    "to": [PUBLIC],
    "cc": ["https://mastodon.social/users/alice/followers", BLOG_ACTOR],
    "sensitive": True,
    "atomUri": "https://mastodon.social/users/alice/statuses/113278413562930123",
    "inReplyToAtomUri": ARTICLE,
    "conversation": "tag:mastodon.social,2024-10-09:objectId=812345678:objectType=Conversation",
    "content": (
        '<p><span class="h-card" translate="no"><a href="https://blog.example/@blog" class="u-url mention">'
        "@<span>blog</span></a></span> Très bel article\u00a0! « Les guillemets » enfin expliqués 😀 "
        ':blobcat: <a href="https://mastodon.social/tags/typographie" class="mention hashtag" rel="tag">'
        "#<span>typographie</span></a></p>"
    ),
    "contentMap": {
        "fr": (
            '<p><span class="h-card" translate="no"><a href="https://blog.example/@blog" class="u-url mention">'
            "@<span>blog</span></a></span> Très bel article\u00a0! « Les guillemets » enfin expliqués 😀 "
            ':blobcat: <a href="https://mastodon.social/tags/typographie" class="mention hashtag" rel="tag">'
            "#<span>typographie</span></a></p>"
        )
    },
    "attachment": [
        {
            "type": "Document",
            "mediaType": "image/jpeg",
            "url": "https://files.mastodon.social/media_attachments/files/113/278/413/original/1f2e3d.jpg",
            "name": "Un chat endormi sur un clavier AZERTY",
            "blurhash": "UBL_:rOpGG-oBUNG,qRj2so|=eE1w^n4S5NH",
            "focalPoint": [0.0, 0.0],
            "width": 1200,
            "height": 800,
        }
    ],
    "tag": [
        {"type": "Mention", "href": BLOG_ACTOR, "name": "@blog@blog.example"},
        {"type": "Hashtag", "href": "https://mastodon.social/tags/typographie", "name": "#typographie"},
        {
            "id": "https://mastodon.social/emojis/4242",
            "type": "Emoji",
            "name": ":blobcat:",
            "updated": "2022-11-20T00:00:00Z",
            "icon": {
                "type": "Image",
                "mediaType": "image/png",
                "url": "https://files.mastodon.social/custom_emojis/images/000/004/242/original/blobcat.png",
            },
        },
    ],
    "replies": {
        "id": "https://mastodon.social/users/alice/statuses/113278413562930123/replies",
        "type": "Collection",
        "first": {"type": "CollectionPage", "items": []},
    },
    "likes": {"id": "https://mastodon.social/users/alice/statuses/113278413562930123/likes", "totalItems": 0},
}

MISSKEY_NOTE: dict[str, Any] = {
    "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1", {"Key": "sec:Key"}],
    "id": "https://misskey.io/notes/9yq3k1w2a7",
    "type": "Note",
    "attributedTo": "https://misskey.io/users/9h5xq2m1zz",
    "content": (
        '<p><a href="https://blog.example/@blog" class="u-url mention">@blog@blog.example</a>'
        "<span> これは面白い記事！ :misskey_love:<br>引用します</span></p>"
    ),
    "_misskey_content": "@blog@blog.example これは面白い記事！ :misskey_love:\n$[tada 引用します]",
    "source": {
        "content": "@blog@blog.example これは面白い記事！ :misskey_love:\n$[tada 引用します]",
        "mediaType": "text/x.misskeymarkdown",
    },
    "_misskey_quote": ARTICLE,
    "quoteUrl": ARTICLE,
    "quoteUri": ARTICLE,
    "published": "2024-10-09T09:01:02.345Z",
    "to": [PUBLIC],
    "cc": ["https://misskey.io/users/9h5xq2m1zz/followers", BLOG_ACTOR],
    "inReplyTo": None,
    "attachment": [
        {
            "type": "Document",
            "mediaType": "image/webp",
            "url": "https://media.misskeyusercontent.jp/io/webpublic-3c8e.webp",
            "name": None,
            "sensitive": False,
        }
    ],
    "sensitive": False,
    "tag": [
        {"type": "Mention", "href": BLOG_ACTOR, "name": "@blog@blog.example"},
        {
            "id": "https://misskey.io/emojis/misskey_love",
            "type": "Emoji",
            "name": ":misskey_love:",
            "updated": "2023-01-01T00:00:00.000Z",
            "icon": {"type": "Image", "mediaType": "image/png", "url": "https://s3.arkjp.net/emoji/misskey_love.png"},
        },
    ],
}

AKKOMA_REPLY: dict[str, Any] = {
    "@context": [
        "https://www.w3.org/ns/activitystreams",
        "https://akko.example/schemas/litepub-0.1.jsonld",
        {"@language": "und"},
    ],
    "actor": "https://akko.example/users/lanodan",
    "attachment": [
        {
            "mediaType": "image/png",
            "name": "capture d’écran",
            "type": "Document",
            # Pleroma/Akkoma: url as a list of Link objects carrying the mediaType.
            "url": [{"href": "https://akko.example/media/5f1e.png", "mediaType": "image/png", "type": "Link"}],
        }
    ],
    "attributedTo": "https://akko.example/users/lanodan",
    "cc": [PUBLIC],
    "content": (
        '<span class="h-card"><a class="u-url mention" data-user="9zkUX4o3WxGM8vGPfU" '
        'href="https://blog.example/actor" rel="ugc">@<span>blog</span></a></span> D’accord&nbsp;!'
    ),
    "contentMap": {"fr": "D’accord\u00a0!"},
    "context": "https://akko.example/contexts/34cba3d2-2f35-4169-aeff-56af9bfeb753",
    "conversation": "https://akko.example/contexts/34cba3d2-2f35-4169-aeff-56af9bfeb753",
    "id": "https://akko.example/objects/8d4973f4-53de-49cd-8c27-df160e16a9c2",
    # Pleroma may embed the replied-to object instead of giving its id.
    "inReplyTo": {"id": ARTICLE, "type": "Article", "attributedTo": BLOG_ACTOR},
    "published": "2024-10-09T18:06:52.555500Z",
    "sensitive": None,
    "source": "@blog@blog.example D’accord !",
    "summary": "",
    "tag": [{"href": BLOG_ACTOR, "name": "@blog@blog.example", "type": "Mention"}],
    "to": [BLOG_ACTOR, "https://akko.example/users/lanodan/followers"],
    "type": "Note",
}

GOTOSOCIAL_REPLY: dict[str, Any] = {
    "@context": [
        "https://gotosocial.org/ns",
        "https://www.w3.org/ns/activitystreams",
        {"Hashtag": "as:Hashtag", "sensitive": "as:sensitive"},
    ],
    "attachment": [
        {
            "blurhash": "LIIE|gRj00WB-;j[t7j[4nWBj[Rj",
            "mediaType": "video/mp4",
            "name": "Une courte vidéo",
            "type": "Document",
            "url": "https://gts.example/fileserver/01HZ/attachment/original/01J9.mp4",
        },
        {"type": "PropertyValue", "name": "ignored", "value": "not media"},
    ],
    "attributedTo": "https://gts.example/users/bob",
    "cc": ["https://gts.example/users/bob/followers", BLOG_ACTOR],
    "content": '<p>Réponse depuis GoToSocial <a href="https://gts.example/tags/blog" class="mention hashtag" '
    'rel="tag nofollow noreferrer noopener" target="_blank">#<span>blog</span></a></p>',
    "contentMap": {"fr": "<p>Réponse depuis GoToSocial #blog</p>"},
    "id": "https://gts.example/users/bob/statuses/01J9ZQ7V1N2M3K4J5H6G7F8E9D",
    "inReplyTo": ARTICLE,
    "interactionPolicy": {"canLike": {"always": [PUBLIC]}, "canReply": {"always": [PUBLIC]}},
    "published": "2024-10-09T11:12:13Z",
    "replies": "https://gts.example/users/bob/statuses/01J9ZQ7V1N2M3K4J5H6G7F8E9D/replies",
    "sensitive": False,
    "summary": "",
    "tag": [
        {"href": BLOG_ACTOR, "name": "@blog@blog.example", "type": "Mention"},
        {"href": "https://gts.example/tags/blog", "name": "#blog", "type": "Hashtag"},
    ],
    "to": [PUBLIC],
    "type": "Note",
    "url": "https://gts.example/@bob/statuses/01J9ZQ7V1N2M3K4J5H6G7F8E9D",
}

FRIENDICA_REPLY: dict[str, Any] = {
    "@context": [
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/v1",
        {"diaspora": "https://diasporafoundation.org/ns/", "sensitive": "as:sensitive"},
    ],
    "id": "https://soc.example/objects/4edd2508-4361-edb8-c4d8-b45181083984",
    "type": "Note",
    "summary": "",
    "inReplyTo": ARTICLE,
    "diaspora:guid": "4edd2508-4361-edb8-c4d8-b45181083984",
    "published": "2024-10-09T20:21:24+00:00",
    "url": "https://soc.example/display/4edd2508-4361-edb8-c4d8-b45181083984",
    "attributedTo": "https://soc.example/profile/jakob",
    "sensitive": False,
    "context": f"{ARTICLE}#context",
    "content": (
        '<span class="h-card"><a href="https://blog.example/actor" class="u-url mention">@<span>blog</span></a>'
        "</span> Sehr gut, danke!"
    ),
    "contentMap": {
        "de": '<bdi>@<a href="https://blog.example/actor" class="userinfo mention" title="blog">blog</a></bdi> '
        "Sehr gut, danke!"
    },
    "source": {"content": "@[url=https://blog.example/actor]blog[/url] Sehr gut, danke!", "mediaType": "text/bbcode"},
    "attachment": [],
    "tag": [{"type": "Mention", "href": BLOG_ACTOR, "name": "@blog@blog.example"}],
    "to": [BLOG_ACTOR, PUBLIC],
    "cc": ["https://soc.example/followers/jakob"],
}

LEMMY_COMMENT: dict[str, Any] = {
    "@context": ["https://join-lemmy.org/context.json", "https://www.w3.org/ns/activitystreams"],
    "id": "https://lemmy.example/comment/38741",
    "type": "Note",
    "attributedTo": "https://lemmy.example/u/picard",
    "to": ["https://lemmy.example/c/blogs", PUBLIC],
    "cc": ["https://lemmy.example/u/picard"],
    "audience": "https://lemmy.example/c/blogs",
    "inReplyTo": "https://lemmy.example/post/55143",
    "content": "<p>Premier commentaire\u00a0! <strong>Bravo</strong></p>\n",
    "mediaType": "text/html",
    "source": {"content": "Premier commentaire\u00a0! **Bravo**", "mediaType": "text/markdown"},
    "tag": [{"href": "https://lemmy.example/u/data", "type": "Mention", "name": "@data@lemmy.example"}],
    "distinguished": False,
    "language": {"identifier": "fr", "name": "Français"},
    "published": "2024-10-01T13:42:43.966208Z",
    "updated": "2024-10-01T13:43:03.955787Z",
}

LEMMY_PAGE: dict[str, Any] = {
    "id": "https://lemmy.example/post/55143",
    "type": "Page",
    "attributedTo": "https://lemmy.example/u/picard",
    "to": ["https://lemmy.example/c/blogs", PUBLIC],
    "name": "Un article sur la typographie",
    "cc": [],
    "content": "<p>Lien vers le blog</p>\n",
    "mediaType": "text/html",
    "source": {"content": "Lien vers le blog", "mediaType": "text/markdown"},
    "attachment": [{"href": ARTICLE, "type": "Link"}],
    "sensitive": False,
    "published": "2024-10-01T13:40:00.000000Z",
    "language": {"identifier": "fr", "name": "Français"},
    "audience": "https://lemmy.example/c/blogs",
}


def test_mastodon_reply() -> None:
    note = parse_note(MASTODON_REPLY)
    assert note.id == "https://mastodon.social/users/alice/statuses/113278413562930123"
    assert note.type == "Note"
    assert note.attributed_to == "https://mastodon.social/users/alice"
    assert note.in_reply_to == ARTICLE
    assert note.summary == "Spoiler\u00a0: la fin de l’article"
    assert note.sensitive is True
    assert note.language == "fr"
    assert note.published == datetime(2024, 10, 9, 8, 15, 3, tzinfo=UTC)
    assert note.updated == datetime(2024, 10, 9, 8, 20, 41, tzinfo=UTC)
    assert note.url == "https://mastodon.social/@alice/113278413562930123"
    assert note.to == (PUBLIC,)
    assert note.cc == ("https://mastodon.social/users/alice/followers", BLOG_ACTOR)
    assert note.attachments == (
        Attachment(
            url="https://files.mastodon.social/media_attachments/files/113/278/413/original/1f2e3d.jpg",
            media_type="image/jpeg",
            alt="Un chat endormi sur un clavier AZERTY",
        ),
    )
    assert note.mentions == (BLOG_ACTOR,)
    assert note.hashtags == ("typographie",)
    assert note.emojis == (
        (":blobcat:", "https://files.mastodon.social/custom_emojis/images/000/004/242/original/blobcat.png"),
    )
    assert note.quote is None
    # Text, French punctuation and emoji byte for byte; the shortcode stays text, no <img>.
    assert "Très bel article\u00a0! « Les guillemets » enfin expliqués 😀 :blobcat:" in note.content_html
    assert "<img" not in note.content_html
    assert 'class="u-url mention"' in note.content_html
    assert 'rel="nofollow ugc noopener noreferrer"' in note.content_html
    assert 'rel="tag"' not in note.content_html
    assert visibility(MASTODON_REPLY, "https://mastodon.social/users/alice/followers") == "public"


def test_misskey_note_uses_html_content_and_quote() -> None:
    note = parse_note(MISSKEY_NOTE)
    assert "これは面白い記事！ :misskey_love:<br>引用します" in note.content_html
    assert "$[tada" not in note.content_html  # the MFM source is not what we show
    assert note.quote == ARTICLE
    assert note.in_reply_to is None
    assert note.published == datetime(2024, 10, 9, 9, 1, 2, 345000, tzinfo=UTC)
    assert note.attachments == (
        Attachment(url="https://media.misskeyusercontent.jp/io/webpublic-3c8e.webp", media_type="image/webp"),
    )
    assert note.emojis == ((":misskey_love:", "https://s3.arkjp.net/emoji/misskey_love.png"),)
    assert note.language is None
    assert note.summary is None


def test_misskey_without_html_falls_back_to_escaped_source() -> None:
    obj = copy.deepcopy(MISSKEY_NOTE)
    del obj["content"]
    obj["source"]["content"] = "Bonjour <b>toi</b> & « vous »\u00a0!\nSuite 😀"
    note = parse_note(obj)
    assert note.content_html == "<p>Bonjour &lt;b&gt;toi&lt;/b&gt; &amp; « vous »\u00a0!<br>Suite 😀</p>"


def test_misskey_poll_vote_with_name_only() -> None:
    vote = {
        "id": "https://misskey.io/notes/9yq3k1w2a8",
        "type": "Note",
        "attributedTo": "https://misskey.io/users/9h5xq2m1zz",
        "name": "Les deux <3",
        "inReplyTo": "https://blog.example/polls/1",
        "to": [BLOG_ACTOR],
        "published": "2024-10-09T09:03:00.000Z",
    }
    note = parse_note(vote)
    assert note.content_html == "<p>Les deux &lt;3</p>"
    assert visibility(vote, None) == "private"


def test_akkoma_reply_with_embedded_in_reply_to_and_link_list_attachment() -> None:
    note = parse_note(AKKOMA_REPLY)
    assert note.in_reply_to == ARTICLE
    assert note.sensitive is False  # Pleroma sends null
    assert note.summary is None  # empty CW is no CW
    assert note.published == datetime(2024, 10, 9, 18, 6, 52, 555500, tzinfo=UTC)
    assert note.attachments == (
        Attachment(url="https://akko.example/media/5f1e.png", media_type="image/png", alt="capture d’écran"),
    )
    assert note.content_html.endswith("D’accord\u00a0!")
    assert "data-user" not in note.content_html
    assert note.mentions == (BLOG_ACTOR,)
    assert visibility(AKKOMA_REPLY, "https://akko.example/users/lanodan/followers") == "unlisted"


def test_gotosocial_reply() -> None:
    note = parse_note(GOTOSOCIAL_REPLY)
    assert note.attributed_to == "https://gts.example/users/bob"
    assert note.language == "fr"
    assert note.hashtags == ("blog",)
    assert note.mentions == (BLOG_ACTOR,)
    assert note.attachments == (
        Attachment(
            url="https://gts.example/fileserver/01HZ/attachment/original/01J9.mp4",
            media_type="video/mp4",
            alt="Une courte vidéo",
        ),
    )
    assert note.content_html.startswith('<p>Réponse depuis GoToSocial <a href="https://gts.example/tags/blog"')
    assert 'rel="nofollow ugc noopener noreferrer"' in note.content_html


def test_friendica_reply_prefers_content_over_content_map() -> None:
    note = parse_note(FRIENDICA_REPLY)
    assert note.content_html.startswith('<span class="h-card"><a href="https://blog.example/actor"')
    assert "<bdi>" not in note.content_html and "userinfo" not in note.content_html
    assert note.language == "de"
    assert note.published == datetime(2024, 10, 9, 20, 21, 24, tzinfo=UTC)
    assert note.url == "https://soc.example/display/4edd2508-4361-edb8-c4d8-b45181083984"
    assert note.summary is None
    assert is_public(FRIENDICA_REPLY)


def test_lemmy_comment_replying_to_a_page() -> None:
    note = parse_note(LEMMY_COMMENT)
    assert note.in_reply_to == "https://lemmy.example/post/55143"
    assert note.content_html == "<p>Premier commentaire\u00a0! <strong>Bravo</strong></p>\n"
    assert note.language == "fr"
    assert note.url is None
    assert note.mentions == ("https://lemmy.example/u/data",)
    assert note.updated == datetime(2024, 10, 1, 13, 43, 3, 955787, tzinfo=UTC)
    page = parse_note(LEMMY_PAGE)
    assert page.type == "Page"
    assert page.attachments == ()  # a Link attachment is not media


def test_attributed_to_list_prefers_the_person() -> None:
    obj = copy.deepcopy(GOTOSOCIAL_REPLY)
    obj["attributedTo"] = [
        {"type": "Group", "id": "https://video.example/video-channels/chaine"},
        {"type": "Person", "id": "https://video.example/accounts/claire"},
    ]
    assert parse_note(obj).attributed_to == "https://video.example/accounts/claire"
    obj["attributedTo"] = ["https://video.example/accounts/claire", "https://video.example/c/x"]
    assert parse_note(obj).attributed_to == "https://video.example/accounts/claire"


def test_single_values_where_lists_are_usual() -> None:
    obj = copy.deepcopy(MASTODON_REPLY)
    obj["to"] = PUBLIC
    obj["cc"] = BLOG_ACTOR
    obj["tag"] = {"type": "Hashtag", "name": "#solo"}
    obj["attachment"] = {"type": "Image", "url": "https://files.example/a.png"}
    note = parse_note(obj)
    assert note.to == (PUBLIC,) and note.cc == (BLOG_ACTOR,)
    assert note.hashtags == ("solo",)
    assert note.attachments == (Attachment(url="https://files.example/a.png"),)


def test_content_map_used_when_content_missing() -> None:
    obj = copy.deepcopy(MASTODON_REPLY)
    del obj["content"]
    note = parse_note(obj)
    assert "« Les guillemets »" in note.content_html and note.language == "fr"


def test_image_only_post_is_accepted() -> None:
    obj = copy.deepcopy(MASTODON_REPLY)
    obj["content"] = ""
    del obj["contentMap"]
    note = parse_note(obj)
    assert note.content_html == "" and len(note.attachments) == 1


def test_hostile_content_is_sanitised_and_unsafe_media_dropped() -> None:
    obj = copy.deepcopy(GOTOSOCIAL_REPLY)
    obj["content"] = '<p onclick="x()">Salut<script>alert(1)</script> <a href="javascript:alert(2)">ici</a></p>'
    obj["attachment"] = [
        {"type": "Document", "mediaType": "image/png", "url": "javascript:alert(3)"},
        {"type": "Document", "mediaType": "text/html", "url": "https://evil.example/page.html"},
        {"type": "Document", "mediaType": "image/png", "url": "data:image/png;base64,AAAA"},
    ]
    obj["summary"] = "<b>CW</b><script>alert(4)</script>"
    note = parse_note(obj)
    assert note.content_html == "<p>Salut ici</p>"
    assert note.attachments == ()
    assert note.summary == "CW"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": None}, "no usable id"),
        ({"id": "javascript:alert(1)"}, "no usable id"),
        ({"attributedTo": None}, "no attributedTo"),
        ({"type": "Person"}, "not a note-like type"),
        ({"content": None, "contentMap": None, "attachment": []}, "no content"),
    ],
)
def test_unparseable_notes_say_why(change: dict[str, Any], reason: str) -> None:
    obj = copy.deepcopy(MASTODON_REPLY)
    obj.update(change)
    with pytest.raises(ValueError, match=reason):
        parse_note(obj)


def test_parse_note_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_note(["not", "an", "object"])  # type: ignore[arg-type]


# -- actors -----------------------------------------------------------------------------------------


def mastodon_actor() -> dict[str, Any]:
    return {
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
        "id": "https://mastodon.social/users/alice",
        "type": "Person",
        "following": "https://mastodon.social/users/alice/following",
        "followers": "https://mastodon.social/users/alice/followers",
        "inbox": "https://mastodon.social/users/alice/inbox",
        "outbox": "https://mastodon.social/users/alice/outbox",
        "featured": "https://mastodon.social/users/alice/collections/featured",
        "preferredUsername": "alice",
        "name": "Alice Dupré :blobcat:",
        "summary": "<p>Typographe 🇫🇷</p>",
        "url": "https://mastodon.social/@alice",
        "manuallyApprovesFollowers": False,
        "discoverable": True,
        "published": "2017-04-03T00:00:00Z",
        "publicKey": {
            "id": "https://mastodon.social/users/alice#main-key",
            "owner": "https://mastodon.social/users/alice",
            "publicKeyPem": PEM,
        },
        "tag": [
            {
                "id": "https://mastodon.social/emojis/4242",
                "type": "Emoji",
                "name": ":blobcat:",
                "icon": {
                    "type": "Image",
                    "mediaType": "image/png",
                    "url": "https://files.mastodon.social/e/blobcat.png",
                },
            }
        ],
        "attachment": [{"type": "PropertyValue", "name": "Blog", "value": '<a href="https://alice.example">x</a>'}],
        "endpoints": {"sharedInbox": "https://mastodon.social/inbox"},
        "icon": {
            "type": "Image",
            "mediaType": "image/jpeg",
            "url": "https://files.mastodon.social/accounts/avatars/000/000/001/original/a.jpg",
        },
        "image": {"type": "Image", "mediaType": "image/jpeg", "url": "https://files.mastodon.social/h.jpg"},
    }


def test_mastodon_actor() -> None:
    actor = parse_actor(mastodon_actor())
    assert actor.id == "https://mastodon.social/users/alice"
    assert actor.type == "Person"
    assert actor.preferred_username == "alice"
    assert actor.handle == "@alice@mastodon.social"
    assert actor.name == "Alice Dupré :blobcat:"
    assert actor.url == "https://mastodon.social/@alice"
    assert actor.avatar == "https://files.mastodon.social/accounts/avatars/000/000/001/original/a.jpg"
    assert actor.inbox == "https://mastodon.social/users/alice/inbox"
    assert actor.shared_inbox == "https://mastodon.social/inbox"
    assert actor.followers == "https://mastodon.social/users/alice/followers"
    assert actor.public_key_id == "https://mastodon.social/users/alice#main-key"
    assert actor.public_key_pem == PEM
    serialization.load_pem_public_key(actor.public_key_pem.encode())
    assert actor.domain == "mastodon.social"
    assert actor.emojis == ((":blobcat:", "https://files.mastodon.social/e/blobcat.png"),)
    author = actor.to_author()
    assert (author.id, author.handle, author.name) == (actor.id, "@alice@mastodon.social", "Alice Dupré :blobcat:")
    assert author.emojis == actor.emojis


def test_misskey_actor_top_level_shared_inbox_and_emoji_name() -> None:
    doc = {
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
        "type": "Person",
        "id": "https://misskey.io/users/9h5xq2m1zz",
        "inbox": "https://misskey.io/users/9h5xq2m1zz/inbox",
        "outbox": "https://misskey.io/users/9h5xq2m1zz/outbox",
        "followers": "https://misskey.io/users/9h5xq2m1zz/followers",
        "following": "https://misskey.io/users/9h5xq2m1zz/following",
        "featured": "https://misskey.io/users/9h5xq2m1zz/collections/featured",
        "sharedInbox": "https://misskey.io/inbox",
        "endpoints": {"sharedInbox": "https://misskey.io/inbox"},
        "url": "https://misskey.io/@neko",
        "preferredUsername": "neko",
        "name": "ねこ :misskey_love: ",
        "summary": "<p>にゃーん</p>",
        "_misskey_summary": "にゃーん",
        "icon": {
            "type": "Image",
            "url": "https://media.misskeyusercontent.jp/io/avatar.webp",
            "sensitive": False,
            "name": None,
        },
        "image": None,
        "tag": [
            {
                "id": "https://misskey.io/emojis/misskey_love",
                "type": "Emoji",
                "name": ":misskey_love:",
                "updated": "2023-01-01T00:00:00.000Z",
                "icon": {
                    "type": "Image",
                    "mediaType": "image/png",
                    "url": "https://s3.arkjp.net/emoji/misskey_love.png",
                },
            }
        ],
        "manuallyApprovesFollowers": False,
        "discoverable": True,
        "publicKey": {
            "id": "https://misskey.io/users/9h5xq2m1zz#main-key",
            "type": "Key",
            "owner": "https://misskey.io/users/9h5xq2m1zz",
            "publicKeyPem": PEM,
        },
        "isCat": True,
    }
    actor = parse_actor(doc)
    assert actor.handle == "@neko@misskey.io"
    assert actor.name == "ねこ :misskey_love:"
    assert actor.shared_inbox == "https://misskey.io/inbox"
    assert actor.avatar == "https://media.misskeyusercontent.jp/io/avatar.webp"
    assert actor.public_key_id == "https://misskey.io/users/9h5xq2m1zz#main-key"
    assert actor.emojis == ((":misskey_love:", "https://s3.arkjp.net/emoji/misskey_love.png"),)
    del doc["endpoints"]  # older Misskey: only the top-level field
    assert parse_actor(doc).shared_inbox == "https://misskey.io/inbox"


def test_gotosocial_actor_without_shared_inbox_and_with_port() -> None:
    doc = {
        "@context": ["https://w3id.org/security/v1", "https://www.w3.org/ns/activitystreams"],
        "id": "https://gts.example:8443/users/bob",
        "type": "Person",
        "preferredUsername": "bob",
        "name": "Bob",
        "inbox": "https://gts.example:8443/users/bob/inbox",
        "outbox": "https://gts.example:8443/users/bob/outbox",
        "followers": "https://gts.example:8443/users/bob/followers",
        "following": "https://gts.example:8443/users/bob/following",
        "featured": "https://gts.example:8443/users/bob/collections/featured",
        "manuallyApprovesFollowers": True,
        "discoverable": False,
        "icon": {"mediaType": "image/png", "type": "Image", "url": "https://gts.example:8443/fileserver/avatar.png"},
        "publicKey": {
            "id": "https://gts.example:8443/users/bob/main-key",
            "owner": "https://gts.example:8443/users/bob",
            "publicKeyPem": PEM,
        },
        "url": "https://gts.example:8443/@bob",
        "summary": "",
        "published": "2023-02-01T00:00:00Z",
    }
    actor = parse_actor(doc)
    assert actor.shared_inbox is None
    assert actor.domain == "gts.example:8443"
    assert actor.handle == "@bob@gts.example:8443"
    assert actor.public_key_id == "https://gts.example:8443/users/bob/main-key"
    assert actor.emojis == ()


def test_pleroma_actor_with_emojis_in_name() -> None:
    doc = {
        "@context": ["https://www.w3.org/ns/activitystreams", {"@language": "und"}],
        "id": "https://akko.example/users/lanodan",
        "type": "Person",
        "preferredUsername": "lanodan",
        "name": "Haelwenn /элвэн/ :bzh: ",
        "inbox": "https://akko.example/users/lanodan/inbox",
        "outbox": "https://akko.example/users/lanodan/outbox",
        "followers": "https://akko.example/users/lanodan/followers",
        "endpoints": {
            "oauthTokenEndpoint": "https://akko.example/oauth/token",
            "sharedInbox": "https://akko.example/inbox",
            "uploadMedia": "https://akko.example/api/ap/upload_media",
        },
        "icon": {"type": "Image", "url": "https://akko.example/media/avatar_HD.png"},
        "publicKey": {
            "id": "https://akko.example/users/lanodan#main-key",
            "owner": "https://akko.example/users/lanodan",
            "publicKeyPem": PEM,
        },
        "tag": [
            {
                "icon": {"type": "Image", "url": "https://akko.example/emoji/custom/bzh.png"},
                "id": "https://akko.example/emoji/custom/bzh.png",
                "name": ":bzh:",
                "type": "Emoji",
                "updated": "1970-01-01T00:00:00Z",
            },
            {"type": "Emoji", "name": ":bad:", "icon": {"url": "javascript:alert(1)"}},
            {"type": "Emoji", "name": "<img src=x>", "icon": {"url": "https://akko.example/x.png"}},
        ],
        "url": "https://akko.example/users/lanodan",
    }
    actor = parse_actor(doc)
    assert actor.name == "Haelwenn /элвэн/ :bzh:"
    assert actor.emojis == ((":bzh:", "https://akko.example/emoji/custom/bzh.png"),)
    assert actor.shared_inbox == "https://akko.example/inbox"
    assert actor.avatar == "https://akko.example/media/avatar_HD.png"


def test_actor_variants_icon_list_url_links_and_key_list() -> None:
    doc = mastodon_actor()
    doc["icon"] = [
        {"type": "Image", "url": {"type": "Link", "href": "https://cdn.example/avatar-small.png"}},
        {"type": "Image", "url": "https://cdn.example/avatar.png"},
    ]
    doc["url"] = [
        {"type": "Link", "href": "https://mastodon.social/users/alice.atom", "mediaType": "application/atom+xml"},
        {"type": "Link", "href": "https://mastodon.social/@alice", "mediaType": "text/html"},
    ]
    # Friendica/Misskey variants: several keys, the actor's own one is picked.
    doc["publicKey"] = [
        {"id": "https://other.example/k", "owner": "https://other.example/", "publicKeyPem": "x"},
        {"id": "https://mastodon.social/users/alice#main-key", "owner": doc["id"], "publicKeyPem": PEM},
    ]
    actor = parse_actor(doc)
    assert actor.avatar == "https://cdn.example/avatar-small.png"
    assert actor.url == "https://mastodon.social/@alice"
    assert actor.public_key_id == "https://mastodon.social/users/alice#main-key"
    assert actor.public_key_pem == PEM
    doc["publicKey"] = "https://mastodon.social/users/alice#main-key"
    actor = parse_actor(doc)
    assert (actor.public_key_id, actor.public_key_pem) == ("https://mastodon.social/users/alice#main-key", None)


def test_service_and_group_actors_are_accepted() -> None:
    for kind in ("Service", "Group", "Application", "Organization"):
        doc = mastodon_actor()
        doc["type"] = kind
        assert parse_actor(doc).type == kind


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": None}, "no usable 'id'"),
        ({"inbox": None}, "no usable 'inbox'"),
        ({"inbox": "javascript:alert(1)"}, "no usable 'inbox'"),
        ({"type": "Note"}, "not an actor type"),
        ({"preferredUsername": ""}, "no preferredUsername"),
    ],
)
def test_unusable_actors_say_why(change: dict[str, Any], reason: str) -> None:
    doc = mastodon_actor()
    doc.update(change)
    with pytest.raises(ValueError, match=reason):
        parse_actor(doc)


# -- helpers ----------------------------------------------------------------------------------------


def test_as_list_and_ref_id() -> None:
    assert as_list(None) == []
    assert as_list("a") == ["a"]
    assert as_list(["a", "b"]) == ["a", "b"]
    assert as_list({"id": "x"}) == [{"id": "x"}]
    assert ref_id("https://a.example/1") == "https://a.example/1"
    assert ref_id({"id": "https://a.example/1", "type": "Note"}) == "https://a.example/1"
    assert ref_id([None, {"type": "Note"}, "https://a.example/2"]) == "https://a.example/2"
    assert ref_id(None) is None and ref_id("") is None and ref_id({"type": "Note"}) is None


@pytest.mark.parametrize("public", [PUBLIC, "as:Public", "Public"])
def test_public_spellings(public: str) -> None:
    assert is_public({"to": public})
    assert is_public({"cc": [public]})
    assert visibility({"to": [public]}) == "public"
    assert visibility({"to": ["https://a.example/followers"], "cc": public}) == "unlisted"


def test_private_and_direct_are_private() -> None:
    followers_only = {"to": ["https://a.example/users/x/followers"], "cc": [BLOG_ACTOR]}
    direct = {"to": [BLOG_ACTOR]}
    assert not is_public(followers_only) and not is_public(direct)
    assert visibility(followers_only, "https://a.example/users/x/followers") == "private"
    assert visibility(direct, None) == "private"
    assert visibility({}, None) == "private"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-10-09T08:15:03Z", datetime(2024, 10, 9, 8, 15, 3, tzinfo=UTC)),
        ("2024-10-09T08:15:03.123Z", datetime(2024, 10, 9, 8, 15, 3, 123000, tzinfo=UTC)),
        ("2024-10-09T08:15:03.966208123Z", datetime(2024, 10, 9, 8, 15, 3, 966208, tzinfo=UTC)),
        ("2024-10-09T10:15:03+02:00", datetime(2024, 10, 9, 8, 15, 3, tzinfo=UTC)),
        ("2024-10-09T08:15:03", datetime(2024, 10, 9, 8, 15, 3, tzinfo=UTC)),
        (datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), datetime(2024, 1, 1, tzinfo=UTC)),
        ("yesterday", None),
        ("2024-13-45T99:00:00Z", None),
        ("", None),
        (None, None),
        (1728461703, None),
        ({"@value": "2024-10-09T08:15:03Z"}, None),
    ],
)
def test_parse_datetime(value: Any, expected: datetime | None) -> None:
    assert parse_datetime(value) == expected
