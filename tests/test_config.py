"""Settings: file + FEDIBRIDGE_* env, validation errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedibridge import config
from fedibridge.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fedibridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_work_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no fedibridge.toml here
    s = config.load(None, {})
    assert s.base_url == "http://localhost:8080"
    assert s.handle_domain == "localhost:8080"
    assert s.database_url == "sqlite:///data/fedibridge.db"
    assert s.moderation == "known"
    assert s.allow_private_addresses is False
    assert (s.public_followers, s.metrics_bind, s.inbox_retention_days) == (False, "", 7)


def test_privacy_and_retention_settings_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = config.load(None, {"FEDIBRIDGE_PUBLIC_FOLLOWERS": "true", "FEDIBRIDGE_METRICS_BIND": "[::1]:9100",
                           "FEDIBRIDGE_INBOX_RETENTION_DAYS": "30"})
    assert (s.public_followers, s.inbox_retention_days) == (True, 30)
    assert config.metrics_address(s.metrics_bind) == ("::1", 9100)
    assert config.metrics_address(":9100") == ("0.0.0.0", 9100)


def test_file_then_env_override(tmp_path: Path) -> None:
    path = write(tmp_path, 'base_url = "https://blog.example.org/fediverse"\ndomain = "example.org"\n'
                           'name = "Mon blog « à moi »"\nblocked_domains = ["spam.example"]\n')
    s = config.load(path, {"FEDIBRIDGE_NAME": "Autre nom", "FEDIBRIDGE_PORT": "9000",
                           "FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES": "true",
                           "FEDIBRIDGE_BLOCKED_ACTORS": "https://a.example/u/x, https://b.example/u/y"})
    assert s.base == "https://blog.example.org/fediverse"
    assert s.handle_domain == "example.org"
    assert s.name == "Autre nom"
    assert s.port == 9000
    assert s.allow_private_addresses is True
    assert s.blocked_domains == ["spam.example"]
    assert s.blocked_actors == ["https://a.example/u/x", "https://b.example/u/y"]
    assert config.load(path, {}).name == "Mon blog « à moi »"


def test_config_path_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, 'username = "carnet"\n')
    assert config.load(None, {"FEDIBRIDGE_CONFIG": str(path)}).username == "carnet"
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(None, {"FEDIBRIDGE_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ('colour = "blue"\n', {}, "unknown setting 'colour'"),
        ('base_url = "blog.example.org"\n', {}, "base_url"),
        ('base_url = "ftp://blog.example.org"\n', {}, "base_url"),
        ('base_url = "https://blog.example.org/?x=1"\n', {}, "base_url"),
        ("", {"FEDIBRIDGE_PORT": "eighty"}, "FEDIBRIDGE_PORT"),
        ("", {"FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES": "maybe"}, "FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES"),
        ("", {"FEDIBRIDGE_MODERATION": "lax"}, "moderation"),
        ("", {"FEDIBRIDGE_DATABASE_URL": "mysql://x/y"}, "database_url"),
        ("", {"FEDIBRIDGE_USERNAME": "bad name"}, "username"),
        ("port = 70000\n", {}, "port"),
        ("port = true\n", {}, "port"),
        ('webhook_url = "https://blog.example.org/hook"\n', {}, "webhook_secret"),
        ("base_url = [1, 2\n", {}, "cannot parse"),
        ("", {"FEDIBRIDGE_METRICS_BIND": "9100"}, "metrics_bind"),
        ("", {"FEDIBRIDGE_METRICS_BIND": "127.0.0.1:99999"}, "metrics_bind"),
        ("", {"FEDIBRIDGE_INBOX_RETENTION_DAYS": "0"}, "inbox_retention_days"),
        ("", {"FEDIBRIDGE_PUBLIC_FOLLOWERS": "perhaps"}, "FEDIBRIDGE_PUBLIC_FOLLOWERS"),
        ("", {"FEDIBRIDGE_PORT": "abc"}, "FEDIBRIDGE_PORT='abc': expected a whole number"),
        ("", {"FEDIBRIDGE_FETCH_TIMEOUT": "soon"}, "FEDIBRIDGE_FETCH_TIMEOUT='soon': expected a number"),
        ("", {"FEDIBRIDGE_LOG_LEVEL": "loud"}, "log_level='loud': expected one of debug, info"),
        ('tag_url_template = "{blog_url}/tag/{name}/"\n', {}, "unknown placeholder {name}"),
        ('tag_url_template = "{blog_url}/tag/{tag"\n', {}, "tag_url_template"),
        ('tag_url_template = "{blog_url}/tags/"\n', {}, "must contain {tag}"),
        ('tag_url_template = "/tag/{tag}/"\n', {}, "not an http(s) URL"),
        ('tag_url_template = "{blog_url}/tag/{tag!r}/"\n', {}, "without ! or :"),
        ('tag_url_template = "{blog_url}/tag/{0}/"\n', {}, "unknown placeholder {0}"),
        ("", {"FEDIBRIDGE_LANGUAGE": "fr_FR!"}, "language"),
        ("", {"FEDIBRIDGE_ADMIN_TOKEN": "two words"}, "admin_token"),
        ("", {"FEDIBRIDGE_BLOCKED_DOMAINS": "spam example"}, "blocked_domains"),
        ("", {"FEDIBRIDGE_CORS_ORIGINS": "example.org"}, "cors_origins"),
        ("fetch_timeout = 0\n", {}, "fetch_timeout"),
        # Closed choices (Literal settings): the value read is checked, with what is allowed.
        ('object_type = "Page"\n', {}, "object_type='Page': expected Note or Article"),
        ("", {"FEDIBRIDGE_CONTENT_MODE": "summary"}, "content_mode='summary': expected excerpt or full"),
        ("", {"FEDIBRIDGE_SIGNATURE_SCHEME": "hs2019"}, "signature_scheme='hs2019': expected cavage or rfc9421"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, text: str, env: dict[str, str], needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, env)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_sqlalchemy_url_mapping() -> None:
    assert config.sqlalchemy_url("sqlite:///data/x.db") == "sqlite+aiosqlite:///data/x.db"
    assert config.sqlalchemy_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert config.sqlalchemy_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"


def test_tag_url_templates_that_work_are_accepted(tmp_path: Path) -> None:
    for template in ("{blog_url}/tag/{tag}/", "https://example.org/?tag={tag}", "{blog_url}/t/{tag}.html",
                     "{blog_url}/{{literal}}/{tag}"):
        path = write(tmp_path, f'tag_url_template = "{template}"\nlog_level = "DEBUG"\n')
        assert config.load(path, {}).tag_url_template == template
