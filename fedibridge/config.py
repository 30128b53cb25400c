"""Settings: read once from fedibridge.toml, overridden by FEDIBRIDGE_* env vars, validated, passed down.

Every setting has a default that works for a local trial, so `fedibridge serve` runs with no file at all.
Errors name the setting, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import os
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from . import __version__
from .errors import ConfigError
from .hosts import host_of

ENV_PREFIX = "FEDIBRIDGE_"
# FEDIBRIDGE_* variables that are not settings (read elsewhere); never reported as unknown.
NON_SETTING_ENV = {"CONFIG", "TEST_DATABASE_URL", "TEST_SQLITE_MAX_PAGES"}
# Closed choices: the types say so (mypy checks every use), validate() checks the values read.
ObjectType = Literal["Note", "Article"]
ContentMode = Literal["excerpt", "full"]
Scheme = Literal["cavage", "rfc9421"]  # HTTP signature schemes we sign with
ModerationMode = Literal["known", "open", "hold"]
MODERATION_MODES: tuple[ModerationMode, ...] = get_args(ModerationMode)
QuotePolicy = Literal["public", "followers", "nobody"]
QUOTE_POLICIES: tuple[QuotePolicy, ...] = get_args(QuotePolicy)


@dataclass(frozen=True)
class Settings:
    """All of fedibridge's knobs. Names are a public contract (DESIGN.md §3): FEDIBRIDGE_<UPPER_NAME>."""

    base_url: str = "http://localhost:8080"
    domain: str = ""  # handle host (like Mastodon's LOCAL_DOMAIN); defaults to base_url's host[:port]
    username: str = "blog"
    name: str = "My blog"
    summary: str = ""
    blog_url: str = ""  # the blog's home page; defaults to base_url
    icon_url: str = ""
    header_url: str = ""
    language: str = ""  # default language of articles, e.g. "fr"
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite:///data/fedibridge.db"
    keys_dir: str = "keys"
    admin_token: str = ""  # empty: generated into keys/admin-token on first start
    allow_private_addresses: bool = False
    user_agent: str = ""
    # publishing
    object_type: ObjectType = "Note"
    content_mode: ContentMode = "excerpt"
    tag_url_template: str = "{blog_url}/tag/{tag}/"
    feed_entries: int = 20
    source_feed: str = ""
    feed_poll_interval: int = 900
    max_article_bytes: int = 1_048_576
    # actor
    discoverable: bool = True
    indexable: bool = True
    also_known_as: list[str] = field(default_factory=list)  # former accounts' actor URLs (moving in)
    attribution_domains: list[str] = field(default_factory=list)  # default: the blog's domain
    quote_policy: QuotePolicy = "public"  # who may quote articles
    # inbox and delivery
    signature_window: int = 3600
    signature_scheme: Scheme = "cavage"  # tried first, the other as fallback
    max_inbox_bytes: int = 1_048_576
    delivery_concurrency: int = 64
    delivery_per_host: int = 4
    delivery_max_attempts: int = 16
    delivery_lease_seconds: int = 300  # a worker's claim on a delivery row; others take it over after this
    domain_unavailable_days: int = 7
    fetch_timeout: float = 10.0
    inbox_retention_days: int = 7  # handled inbox rows are deleted after this many days
    health_grace_seconds: int = 30  # a task failing this long (database away…) makes /healthz answer 503
    # per remote server and per actor token buckets at the inbox: a burst, then `rate` a second (0: no limit)
    inbox_host_burst: int = 300
    inbox_host_rate: float = 10.0
    inbox_actor_burst: int = 60
    inbox_actor_rate: float = 1.0
    # public documents (actor, objects, collections, feeds) served from memory
    document_cache_seconds: float = 5.0  # longest an unchanged-looking copy is served (other processes' writes)
    document_max_age: int = 60  # Cache-Control max-age of public documents, for remote caches
    # comments
    moderation: ModerationMode = "known"
    blocked_domains: list[str] = field(default_factory=list)
    blocked_actors: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)  # default: the blog's origin
    spam_check_url: str = ""  # Akismet-compatible comment-check endpoint
    spam_check_key: str = ""
    webhook_url: str = ""
    webhook_secret: str = ""
    log_level: str = "info"
    # privacy
    public_followers: bool = False  # list followers to everyone (Mastodon's "hide network" is the default)
    metrics_bind: str = ""  # host:port serving /metrics without a token; empty: /metrics on the main port, admin only

    # derived values -------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def handle_domain(self) -> str:
        return self.domain or urlsplit(self.base_url).netloc

    @property
    def blog(self) -> str:
        return (self.blog_url or self.base_url).rstrip("/")

    @property
    def blog_origin(self) -> str:
        parts = urlsplit(self.blog)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def attribution(self) -> list[str]:
        """attributionDomains of the actor: the setting, else the blog's own host."""
        return self.attribution_domains or [urlsplit(self.blog).hostname or self.handle_domain]

    @property
    def allowed_origins(self) -> list[str]:
        return self.cors_origins or [self.blog_origin]

    @property
    def keys_path(self) -> Path:
        return Path(self.keys_dir)

    @property
    def agent(self) -> str:
        return self.user_agent or f"fedibridge/{__version__} (+{self.base})"

    def replace(self, **changes: Any) -> Settings:
        return validate(dataclasses.replace(self, **changes))


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, value: Any, *, from_env: bool) -> Any:
    """Convert a raw TOML/env value to the field's type, or say which setting is wrong."""
    kind = _FIELDS[name].type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
                return True
            if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError("expected true or false")
        if kind == "int":
            if isinstance(value, bool) or isinstance(value, float):
                raise ValueError("expected a whole number")
            try:
                return int(value)
            except ValueError:
                raise ValueError("expected a whole number, e.g. 8080") from None
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError("expected a number")
            try:
                return float(value)
            except ValueError:
                raise ValueError("expected a number, e.g. 10 or 2.5") from None
        if kind == "list[str]":
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError("expected a list of strings")
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    except ValueError as exc:
        where = f"{ENV_PREFIX}{name.upper()}" if from_env else name
        raise ConfigError(f"invalid setting {where}={value!r}: {exc}") from None


def _check_url(name: str, value: str, *, required: bool = True) -> None:
    if not value and not required:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"invalid setting {name}={value!r}: expected an http(s) URL like https://blog.example.org")
    if parts.query or parts.fragment:
        raise ConfigError(f"invalid setting {name}={value!r}: must not have a query or fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"invalid setting {name}={value!r}: bad port") from None


def validate(s: Settings) -> Settings:
    """Check values that types alone cannot; raise ConfigError naming the setting."""
    _check_url("base_url", s.base_url)
    _check_url("blog_url", s.blog_url, required=False)
    for name in ("icon_url", "header_url", "webhook_url", "spam_check_url"):
        _check_url(name, getattr(s, name), required=False)
    if s.source_feed and not Path(s.source_feed).exists():
        _check_url("source_feed", s.source_feed)
    if not s.username or not all(c.isalnum() or c in "_-." for c in s.username):
        raise ConfigError(f"invalid setting username={s.username!r}: use letters, digits, '_', '-' or '.'")
    if s.domain and ("/" in s.domain or " " in s.domain):
        raise ConfigError(f"invalid setting domain={s.domain!r}: expected a host name like example.org")
    scheme = s.database_url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(f"invalid setting database_url={s.database_url!r}: expected sqlite:///… or postgresql://…")
    if scheme == "sqlite" and (":memory:" in s.database_url or not s.database_url.split(":", 1)[1].strip("/")):
        raise ConfigError(f"invalid setting database_url={s.database_url!r}: an in-memory SQLite database loses "
                          "everything at exit; give a file, e.g. sqlite:///data/fedibridge.db")
    if s.moderation not in MODERATION_MODES:
        raise ConfigError(f"invalid setting moderation={s.moderation!r}: expected one of {', '.join(MODERATION_MODES)}")
    for name, kind in (("object_type", ObjectType), ("content_mode", ContentMode), ("signature_scheme", Scheme),
                       ("quote_policy", QuotePolicy)):
        choices = get_args(kind)
        if getattr(s, name) not in choices:
            raise ConfigError(f"invalid setting {name}={getattr(s, name)!r}: expected {' or '.join(choices)}")
    for actor in s.also_known_as:
        _check_url("also_known_as", actor)
    for domain in s.attribution_domains:
        if not domain.strip() or "/" in domain or " " in domain:
            raise ConfigError(f"invalid setting attribution_domains: {domain!r} is not a domain like example.org")
    if not 0 < s.port < 65536:
        raise ConfigError(f"invalid setting port={s.port}: expected 1-65535")
    for name in ("feed_entries", "feed_poll_interval", "delivery_concurrency", "delivery_per_host",
                 "signature_window", "max_inbox_bytes", "delivery_max_attempts", "max_article_bytes",
                 "delivery_lease_seconds", "inbox_retention_days",
                 "health_grace_seconds"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"invalid setting {name}={getattr(s, name)}: must be positive")
    if s.metrics_bind:
        metrics_address(s.metrics_bind)
    if s.webhook_url and not s.webhook_secret:
        raise ConfigError("invalid setting webhook_secret: required when webhook_url is set")
    _check_words(s)
    _check_tag_url_template(s)
    domains = _blocked_domains(s.blocked_domains)
    return s if domains == s.blocked_domains else dataclasses.replace(s, blocked_domains=domains)


def _blocked_domains(values: list[str]) -> list[str]:
    """Blocked domains spelled once (hosts.normalise_host): `EVIL.example.` and `evil.example` are one block."""
    out: list[str] = []
    for value in values:
        if not value.strip():
            continue
        host = host_of(value if "://" in value else "http://" + value.strip())
        if not host:
            raise ConfigError(f"invalid setting blocked_domains: {value!r} is not a domain")
        if host not in out:
            out.append(host)
    return out


def metrics_address(value: str) -> tuple[str, int]:
    """metrics_bind as (host, port): "127.0.0.1:9100", "[::1]:9100" or ":9100" (all interfaces)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"invalid setting metrics_bind={value!r}: expected host:port, e.g. 127.0.0.1:9100")
    return host or "0.0.0.0", int(port)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _check_words(s: Settings) -> None:
    """Settings that are single words, names or lists of them: caught at load, not when first used."""
    if s.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"invalid setting log_level={s.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    for name in ("fetch_timeout", "domain_unavailable_days"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"invalid setting {name}={getattr(s, name)}: must be positive")
    for name in ("inbox_host_burst", "inbox_actor_burst", "document_cache_seconds", "document_max_age"):
        if getattr(s, name) < 0:
            raise ConfigError(f"invalid setting {name}={getattr(s, name)}: must be 0 or more")
    for kind in ("host", "actor"):
        burst, rate = getattr(s, f"inbox_{kind}_burst"), getattr(s, f"inbox_{kind}_rate")
        if burst and rate <= 0:
            raise ConfigError(f"invalid setting inbox_{kind}_rate={rate}: must be positive (or set "
                              f"inbox_{kind}_burst = 0 for no limit)")
    if not s.host.strip() or any(c.isspace() for c in s.host):
        raise ConfigError(f"invalid setting host={s.host!r}: expected an address like 127.0.0.1 or 0.0.0.0")
    if not s.keys_dir.strip():
        raise ConfigError("invalid setting keys_dir='': expected a directory, e.g. keys")
    if s.language and not all(part.isalnum() and len(part) <= 8 for part in s.language.split("-")):
        raise ConfigError(f"invalid setting language={s.language!r}: expected a language tag like fr or pt-BR")
    for name in ("admin_token", "user_agent", "name", "summary", "webhook_secret", "spam_check_key"):
        if any(c in getattr(s, name) for c in "\r\n\0"):
            raise ConfigError(f"invalid setting {name}: must be a single line")
    if any(c.isspace() for c in s.admin_token):
        raise ConfigError("invalid setting admin_token: must not contain spaces (it goes in an HTTP header)")
    for actor in s.blocked_actors:
        _check_url("blocked_actors", actor)
    for origin in s.cors_origins:
        if origin != "*":
            _check_url("cors_origins", origin)


def _check_tag_url_template(s: Settings) -> None:
    """Render the template once now, so a typo stops the start instead of answering 500 on every tagged article."""
    name, template = "tag_url_template", s.tag_url_template
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        msg = f"invalid setting {name}={template!r}: {exc} (write {{{{ and }}}} for literal braces)"
        raise ConfigError(msg) from None
    fields_used = {f for f, _, _ in parsed}
    if any(spec or conv for _, spec, conv in parsed):
        raise ConfigError(f"invalid setting {name}={template!r}: write plain {{blog_url}} and {{tag}}, "
                          "without ! or : after the name")
    unknown = fields_used - {"blog_url", "tag"}
    if unknown:
        raise ConfigError(f"invalid setting {name}={template!r}: unknown placeholder {{{sorted(unknown)[0]}}}; "
                          "use {blog_url} and {tag}")
    if "tag" not in fields_used:
        raise ConfigError(f"invalid setting {name}={template!r}: must contain {{tag}}, e.g. {{blog_url}}/tag/{{tag}}/")
    example = template.format(blog_url=s.blog, tag="example")
    parts = urlsplit(example)
    if parts.scheme not in ("http", "https") or not parts.hostname:  # a query is fine: WordPress's ?tag=
        raise ConfigError(f"invalid setting {name}={template!r}: gives {example!r} for the tag 'example', "
                          "not an http(s) URL; start it with {blog_url} or https://")


def find_file(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The settings file in use: --config, else FEDIBRIDGE_CONFIG, else ./fedibridge.toml if it exists."""
    env = os.environ if env is None else env
    file = Path(path or env.get(ENV_PREFIX + "CONFIG") or "fedibridge.toml")
    return file if file.exists() else None


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), then env overrides; unknown keys in the file are errors."""
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(ENV_PREFIX + "CONFIG"))
    file = Path(path or env.get(ENV_PREFIX + "CONFIG") or "fedibridge.toml")
    values: dict[str, Any] = {}
    if find_file(path, env) is not None:
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot parse {file}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
        table = raw.get("fedibridge", raw) if isinstance(raw.get("fedibridge"), dict) else raw
        for key, value in table.items():
            if key not in _FIELDS:
                raise ConfigError(f"unknown setting {key!r} in {file}")
            values[key] = _coerce(key, value, from_env=False)
    elif explicit:
        raise ConfigError(f"config file {file} does not exist (run `fedibridge init` to create it)")
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name in _FIELDS:
            values[name] = _coerce(name, value, from_env=True)
    return validate(Settings(**values))


def sqlalchemy_url(database_url: str) -> str:
    """Map the user-facing URL to the async driver SQLAlchemy needs."""
    scheme, rest = database_url.split(":", 1)
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return "sqlite+aiosqlite:" + rest
    return "postgresql+asyncpg:" + rest
