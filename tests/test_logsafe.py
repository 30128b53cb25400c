"""logsafe: log arguments escaped (no forged lines) and redacted (no secrets)."""

from __future__ import annotations

import logging

import pytest

from fedibridge.logsafe import escape, logger, redact, register_secret


def test_escape_keeps_one_line_and_readable_text() -> None:
    assert escape("https://x.example/1\nERROR forged") == "https://x.example/1\\nERROR forged"
    assert escape("a\rb\tc\x1b[31m\x85\u2028\\") == "a\\rb\\tc\\x1b[31m\\x85\\u2028\\\\"
    assert escape("Léa « café » 🎉") == "Léa « café » 🎉"
    assert len(escape("x" * 10_000)) < 1100


@pytest.mark.parametrize(("url", "shown"), [
    ("https://abc123def456.rest.akismet.com/1.1/comment-check", "https://***.rest.akismet.com/1.1/comment-check"),
    ("https://spam.example/check?blog=x&key=s3cr3t&lang=fr", "https://spam.example/check?blog=x&key=***&lang=fr"),
    ("https://spam.example/check?api_key=s3cr3t", "https://spam.example/check?api_key=***"),
    ("https://h.example/hook?access_token=abc", "https://h.example/hook?access_token=***"),
    ("https://user:pass@feeds.example/feed.xml", "https://***@feeds.example/feed.xml"),
    ("https://mastodon.example/users/alice?page=2", "https://mastodon.example/users/alice?page=2"),
])
def test_redact_urls(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_registered_secrets_never_reach_a_record(caplog: pytest.LogCaptureFixture) -> None:
    register_secret("admin-token-for-logsafe-test")
    register_secret("short")  # too short to be replaced safely: ignored
    log = logger("fedibridge.test_logsafe")
    with caplog.at_level(logging.INFO, logger="fedibridge.test_logsafe"):
        log.info("got %s (%d tries, %.1f s)", "Bearer admin-token-for-logsafe-test\nforged", 3, 1.5)
    assert caplog.records[0].getMessage() == "got Bearer ***\\nforged (3 tries, 1.5 s)"
    assert logger("fedibridge.test_logsafe").filters.count(log.filters[0]) == 1
