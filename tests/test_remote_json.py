"""remote_json: one parser for JSON from outside, nesting capped and control characters stripped."""

from __future__ import annotations

import pytest

from fedibridge.remote_json import MAX_DEPTH, JSONTooDeep, clean, loads


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
