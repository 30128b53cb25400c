"""Log lines that strangers cannot forge and that never carry a secret.

Values in our log lines come from outside (note ids, actor ids, URLs, error messages quoting them): a note
id holding a newline wrote a whole fake log line. And URLs we log may hold secrets (Akismet's key is the
first label of its host, clones take ``?key=``; feed and webhook URLs may carry ``?token=``). Modules that
log such values take their logger from `logger()`: its filter escapes and redacts every argument, so no
call site can forget. Known secret values (admin token, spam-check key, webhook secret) are registered at
start-up and replaced wherever they appear.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

__all__ = ["escape", "logger", "redact", "register_secret"]

MAX_CHARS = 1000  # one logged value; longer ones are cut (a 1 MB "id" is not worth a 1 MB log line)

_UNSAFE = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\ud800-\\udfff\\\\]")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")
_AKISMET_KEY = re.compile(r"(?i)(://)[^./?#@\s]+(\.rest\.akismet\.com)")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:[a-z0-9_.-]*?(?:key|token|secret|password|passwd|auth|signature|sig)[a-z0-9_.-]*)=)[^&#\s]*"
)
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """A value that must never be logged (short values are skipped: they would blank ordinary words)."""
    if value and len(value) >= 8:
        _secrets.add(value)


def redact(text: str) -> str:
    """Text with registered secrets, URL passwords, Akismet keys and secret-looking query values as ***."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    text = _USERINFO.sub(r"\1***@", text)
    text = _AKISMET_KEY.sub(r"\1***\2", text)
    return _SECRET_PARAM.sub(r"\1***", text)


_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    c = match.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: object) -> str:
    """One line of redacted text: control characters, line separators and backslashes escaped, length capped."""
    text = redact(value if isinstance(value, str) else str(value))
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + "…"
    return _UNSAFE.sub(_escape_char, text)


class _SafeArgs(logging.Filter):
    """Escapes the arguments of every record of the logger it sits on; numbers stay numbers (%d, %.0f)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(a if isinstance(a, (int, float)) else escape(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: v if isinstance(v, (int, float)) else escape(v) for k, v in args.items()}
        return True


_FILTER = _SafeArgs()


def logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with the escaping filter on it (idempotent)."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log
