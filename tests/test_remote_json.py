"""remote_json: one parser for JSON from outside, nesting capped and control characters stripped."""

from __future__ import annotations

import json
import random

import pytest

from fedibridge.remote_json import MAX_DEPTH, JSONTooDeep, clean, cleaned, loads, maybe_controls


def test_ordinary_documents_are_unchanged() -> None:
    doc = {"type": "Note", "content": "<p>Très « bien »\u00a0! 🎉\tok\nsuite\r</p>", "tag": [{"name": "#café"}]}
    assert loads(b'{"type":"Note","content":"<p>Tr\\u00e8s \xc2\xab bien \xc2\xbb\xc2\xa0! \xf0\x9f\x8e\x89\\tok'
                 b'\\nsuite\\r</p>","tag":[{"name":"#caf\xc3\xa9"}]}') == doc
    assert clean(doc) == doc


def test_control_characters_and_lone_surrogates_are_removed_everywhere() -> None:
    raw = b'{"na\\u0007me":"A\\u000bB\\u0085C\\ud800D","list":["\\u0000x\\uffff"],"n":1,"ok":true}'
    assert loads(raw) == {"name": "ABCD", "list": ["x"], "n": 1, "ok": True}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 1020, 5000])
def test_deep_nesting_is_a_value_error(depth: int) -> None:
    with pytest.raises(ValueError, match="nested deeper|malformed"):
        loads(b"[" * depth + b"]" * depth)
    with pytest.raises(ValueError):
        loads(b'{"actor":' + b'{"id":' * depth + b'"x"' + b"}" * depth + b"}")


def test_depth_at_the_limit_is_accepted() -> None:
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(JSONTooDeep):
        clean([[[["x"]]]], max_depth=3)


@pytest.mark.parametrize("bad", [b"", b"{", b"\xff\xfe", b'{"a":NaN}x', b'"\\ud800'])
def test_malformed_is_a_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        loads(bad)


def _reference(data: bytes) -> object:
    """The full path: parse, then walk and clean every string (what loads did for every document)."""
    return clean(json.loads(data))


CORPUS = [
    # Mastodon-shaped actor: « guillemets », accents, emoji, a no-break space (C2 A0: not a control)
    json.dumps({"@context": ["https://www.w3.org/ns/activitystreams", {"toot": "http://joinmastodon.org/ns#"}],
                "id": "https://m.example/users/zoe", "type": "Person", "name": "Zoé « la vraie » 🌻\u00a0!",
                "summary": "<p>Photographe à Montréal</p>", "tag": [{"type": "Emoji", "name": ":blob:"}],
                "publicKey": {"id": "https://m.example/users/zoe#main-key", "publicKeyPem": "-----BEGIN…\n"}},
               ensure_ascii=False).encode(),
    b'{"content":"caf\\u00e9 \\u00ab ok \\u00bb"}',  # escapes of ordinary characters: the full path, same result
    b'{"a":"x\\by\\fz"}', b'{"a":"x\\\\by"}', b'{"a":"x\\\\\\by"}',  # \b, \f, an escaped backslash before b
    b'{"a":"del\x7fete"}', b'{"a":"c1\xc2\x85nel"}', b'{"a":"nonchar\xef\xbf\xbe\xef\xbf\xbf"}',
    b'{"k\\u0000ey":"\\u0007bell"}', b'{"a":"\\ud83c\\udf3b flower"}',  # a control in a key; a surrogate *pair*
    b'{"text":"[[[[{{{{ brackets in a string }}}}]]]]"}',
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
    b'{"a":' + b"[" * (MAX_DEPTH - 1) + b'"\\u0001"' + b"]" * (MAX_DEPTH - 1) + b"}",
    b'{"n":1.5,"t":true,"f":false,"z":null,"e":[],"o":{}}',
]


@pytest.mark.parametrize("data", CORPUS)
def test_documents_that_need_no_cleaning_are_returned_as_parsed_and_the_others_cleaned(data: bytes) -> None:
    assert loads(data) == _reference(data)


@pytest.mark.parametrize("data", CORPUS)
def test_an_already_parsed_document_is_cleaned_like_the_full_clean(data: bytes) -> None:
    """cleaned() on what json.loads (not our loads) parsed: a stored payload from before remote_json."""
    assert cleaned(json.loads(data)) == _reference(data)


def test_cleaned_returns_the_value_itself_only_when_nothing_needs_cleaning() -> None:
    note = {"id": "https://m.example/s/1", "content": "<p>Très « bien » 🎉\tok\n</p>", "tag": [{"n": 1.5}]}
    assert cleaned(note) is note
    dirty = {"content": "a\x07b", "tag": [{"name": "x\x85y"}]}
    assert cleaned(dirty) == {"content": "ab", "tag": [{"name": "xy"}]} and dirty["content"] == "a\x07b"
    assert cleaned({1: "a\x00"}) == {"1": "a"}  # what orjson cannot serialise takes the full clean
    assert cleaned({"s": "\ud800x"}) == {"s": "x"}
    with pytest.raises(JSONTooDeep):
        cleaned([[[["x"]]]], max_depth=3)
    assert cleaned([[["x"]]], max_depth=3) == [[["x"]]]


def test_random_documents_agree_with_the_full_clean() -> None:
    """Strings drawn from controls, escapes-to-be, C1, noncharacters, accents and emoji, nested at random:
    whatever path loads takes, it returns what the full clean returns."""
    rng = random.Random(20261203)
    alphabet = ["a", "é", "«", "»", "\u00a0", "🌻", "\\", "b", "f", "u", "[", "{", "\x00", "\x07", "\b", "\f",
                "\t", "\n", "\x7f", "\x85", "\x9f", "\ufffe", "\uffff", '"']

    def value(depth: int) -> object:
        kind = rng.random()
        if depth < 6 and kind < 0.25:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        if depth < 6 and kind < 0.5:
            return {"".join(rng.choices(alphabet, k=rng.randint(0, 4))): value(depth + 1)
                    for _ in range(rng.randint(0, 3))}
        return "".join(rng.choices(alphabet, k=rng.randint(0, 12)))

    plain = 0
    for _ in range(3000):
        data = json.dumps({"v": value(0)}, ensure_ascii=rng.random() < 0.3).encode()
        assert loads(data) == _reference(data), data
        assert cleaned(json.loads(data)) == _reference(data), data
        plain += not maybe_controls(data)
    assert 300 < plain < 2700  # both kinds of document were drawn often
