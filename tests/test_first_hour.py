"""A site owner's first hour (issue 13), done as they did it: the real `fedibridge` CLI in temp dirs, a real
`serve` on a random loopback port, real SQLite files and keys."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import free_port
from .test_cli import clean_env, run, start_serve, stop, wait_http

AP = {"Accept": "application/activity+json"}
POST = """---
title: "L’été à Paris « enfin »"
slug: ete-a-paris
date: 2024-07-14T10:30:00+02:00
tags: [voyage]
url: https://example.org/2024/07/ete-a-paris/
---
Il fait chaud 🌞.
"""


def get_json(url: str) -> dict[str, object]:
    req = urllib.request.Request(url, headers=AP)
    with urllib.request.urlopen(req, timeout=10) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, dict)
    return data


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedibridge: error:"), result.stderr
    return lines[0]


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def trial(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A local trial as the README starts it: `fedibridge serve` in an empty directory, running."""
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    proc = start_serve(site, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield site, port
    finally:
        code, _, err = stop(proc)
        assert code == 0, err


# ------------------------------------------------------------------- 1. no second identity elsewhere
def test_commands_run_elsewhere_create_nothing_and_say_where_they_looked(trial: tuple[Path, int],
                                                                        tmp_path: Path) -> None:
    site, port = trial
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "post.md").write_text(POST, encoding="utf-8")
    for args in (["publish", "post.md"], ["delete", "ete-a-paris"], ["followers"], ["deliveries"],
                 ["comments"], ["blocks"], ["doctor"]):
        line = one_error_line(run(args, elsewhere))
        assert "no fedibridge installation found" in line, args
        assert f"fedibridge.toml in {elsewhere}" in line and str(elsewhere / "keys" / "private.pem") in line
        assert "--config" in line and "FEDIBRIDGE_CONFIG" in line
    assert files_under(elsewhere) == ["post.md"], "no data/ and no keys/ made on the side"

    # Pointed at the installation, the same command reaches the database the running server reads.
    result = run(["publish", "post.md"], elsewhere, FEDIBRIDGE_DATABASE_URL=f"sqlite:///{site}/data/fedibridge.db",
                 FEDIBRIDGE_KEYS_DIR=str(site / "keys"))
    assert result.returncode == 0, result.stderr
    assert "ete-a-paris: created" in result.stdout
    note = get_json(f"http://127.0.0.1:{port}/articles/ete-a-paris")
    assert "« enfin »" in str(note["name"] if "name" in note else note["content"])
    assert files_under(elsewhere) == ["post.md"]


def test_a_config_file_without_database_or_keys_is_refused_not_filled(tmp_path: Path) -> None:
    (tmp_path / "fedibridge.toml").write_text('base_url = "https://fedi.example.org"\n', encoding="utf-8")
    (tmp_path / "post.md").write_text(POST, encoding="utf-8")
    line = one_error_line(run(["publish", "post.md"], tmp_path))
    assert f"no key pair at {tmp_path / 'keys' / 'private.pem'}" in line and "fedibridge serve" in line
    assert files_under(tmp_path) == ["fedibridge.toml", "post.md"]


def test_doctor_never_creates_the_database(tmp_path: Path) -> None:
    assert run(["init", "--base-url", "https://fedi.example.org", "--blog-url", "https://example.org/"],
               tmp_path).returncode == 0
    result = run(["doctor"], tmp_path)
    assert result.returncode == 0, result.stdout
    assert "does not exist yet: `fedibridge serve` creates it" in result.stdout and "all good" in result.stdout
    assert not (tmp_path / "data").exists()
    result = run(["doctor"], tmp_path, FEDIBRIDGE_DATABASE_URL="sqlite:////nonexistent-fb/dir/x.db")
    assert result.returncode == 1 and "cannot be created" in result.stdout and "all good" not in result.stdout
    assert not Path("/nonexistent-fb").exists()


# ------------------------------------------------------------------------------ 8. --config anywhere
def test_config_before_or_after_the_command(tmp_path: Path) -> None:
    home = tmp_path / "install"
    home.mkdir()
    assert run(["init", "--base-url", "https://fedi.example.org", "--blog-url", "https://example.org/"],
               home).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    config = str(home / "fedibridge.toml")
    env = {"FEDIBRIDGE_KEYS_DIR": str(home / "keys")}
    before = run(["--config", config, "doctor"], other, **env)
    after = run(["doctor", "--config", config], other, **env)
    for result in (before, after):
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"configuration valid ({config}" in result.stdout
    assert files_under(other) == []


# --------------------------------------------------------------------------------- 2. unwritable keys/
# Root ignores file modes, so as root (CI) the CLI runs as `nobody`: the interpreter loads fedibridge, then
# drops to uid 65534 and calls the console script's main(). (Not a preexec_fn setuid: the venv's python is
# often a link into root's 0700 home, which `nobody` cannot exec.) As any other user, the mode bites as is.
AS_NOBODY = """
import os, sys
import asyncio, encodings.ascii, aiohttp.web, fedibridge.app, fedibridge.doctor  # main()'s lazy imports, as root
from fedibridge.cli import build_parser, main
build_parser()
asyncio.new_event_loop().close()
if os.geteuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    assert os.geteuid() == 65534
sys.exit(main(sys.argv[1:]))
"""


def test_unwritable_keys_dir_is_one_line_naming_dir_and_uid_and_init_can_be_retried() -> None:
    root = os.geteuid() == 0
    uid = "65534" if root else str(os.geteuid())
    work = Path(tempfile.mkdtemp(prefix="fb-keys-", dir="/tmp"))  # pytest's tmp is 0700: nobody cannot enter it
    try:
        work.chmod(0o777)
        keys = work / "keys"
        keys.mkdir()
        keys.chmod(0o755 if root else 0o555)  # root-owned, or read-only: the user cannot write it
        env = clean_env(FEDIBRIDGE_PORT=str(free_port()), HOME=str(work))

        def fb(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-c", AS_NOBODY, *args], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=60)

        init = ["init", "--base-url", "https://fedi.example.org", "--blog-url", "https://example.org/"]
        for args in (init, ["serve"]):
            result = fb(*args)
            line = one_error_line(result)
            assert "Traceback" not in result.stderr
            assert f"cannot write to {keys}" in line and f"uid {uid}" in line and "chown" in line, line
        assert not (work / "fedibridge.toml").exists(), "a failed init leaves nothing that blocks the next try"
        assert list(keys.iterdir()) == []

        if root:
            os.chown(keys, 65534, 65534)
        else:
            keys.chmod(0o755)
        result = fb(*init)
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE((keys / "private.pem").stat().st_mode) == 0o600
        assert (keys / "private.pem").stat().st_uid == int(uid)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_dockerfile_builds_for_any_uid_including_root() -> None:
    text = (Path(__file__).parent.parent / "Dockerfile").read_text(encoding="utf-8")
    run_line = text[text.index("RUN groupadd"):text.index("\n\n", text.index("RUN groupadd"))]
    # groupadd/useradd refuse an id that exists (gid 0 for UID=0 GID=0) unless told ids may repeat
    assert "groupadd --non-unique" in run_line and "useradd --non-unique" in run_line
    assert "chown" in text and "WRITES" in text


# ------------------------------------------------------------------------- 3. settings checked at load
@pytest.mark.parametrize(
    ("env", "needle", "not_in"),
    [
        ({"FEDIBRIDGE_TAG_URL_TEMPLATE": "{blog_url}/tag/{name}/"}, "unknown placeholder {name}", "KeyError"),
        ({"FEDIBRIDGE_TAG_URL_TEMPLATE": "{blog_url}/tag/{tag"}, "tag_url_template", "Traceback"),
        ({"FEDIBRIDGE_PORT": "abc"}, "FEDIBRIDGE_PORT='abc': expected a whole number", "invalid literal"),
        ({"FEDIBRIDGE_LOG_LEVEL": "loud"}, "log_level='loud'", "Traceback"),
    ],
)
def test_bad_settings_stop_every_command_at_load(tmp_path: Path, env: dict[str, str], needle: str,
                                                 not_in: str) -> None:
    (tmp_path / "post.md").write_text(POST, encoding="utf-8")
    for args in (["serve"], ["publish", "post.md"], ["doctor"]):
        result = run(args, tmp_path, **env)
        line = one_error_line(result)
        assert needle in line and not_in not in result.stderr, (args, line)
    assert files_under(tmp_path) == ["post.md"]


def test_port_in_use_is_not_called_an_invalid_setting(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(["serve"], tmp_path, FEDIBRIDGE_PORT=str(port))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]  # after the start-up log lines
    assert line.startswith("fedibridge: error:")
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line
    assert "invalid setting" not in line


# ------------------------------------------------------------------------- 4. blog_url from init
def test_init_with_a_base_path_derives_the_blog_url_and_the_actor_links_the_blog(tmp_path: Path) -> None:
    result = run(["init", "--base-url", "https://blog.example.org/fediverse", "--domain", "example.org"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "blog_url: using https://example.org/" in result.stdout and "--blog-url" in result.stdout
    assert 'blog_url = "https://example.org/"' in (tmp_path / "fedibridge.toml").read_text(encoding="utf-8")
    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        actor = get_json(f"http://127.0.0.1:{wait_port(port)}/fediverse/users/blog")
    finally:
        stop(proc)
    assert actor["url"] == "https://example.org"
    assert not str(actor["url"]).startswith("https://blog.example.org/fediverse")

    given = tmp_path / "given"
    given.mkdir()
    result = run(["init", "--base-url", "https://example.org/fediverse", "--blog-url", "https://example.org/blog/"],
                 given)
    assert result.returncode == 0 and "blog_url: using" not in result.stdout
    assert 'blog_url = "https://example.org/blog/"' in (given / "fedibridge.toml").read_text(encoding="utf-8")


def wait_port(port: int) -> int:
    wait_http(f"http://127.0.0.1:{port}/fediverse/healthz")
    return port


def test_doctor_fails_when_blog_url_points_into_fedibridge(tmp_path: Path) -> None:
    assert run(["init", "--base-url", "https://example.org/fediverse", "--blog-url", "https://example.org/"],
               tmp_path).returncode == 0
    result = run(["doctor"], tmp_path, FEDIBRIDGE_BLOG_URL="https://example.org/fediverse/")
    assert result.returncode == 1
    assert "is inside fedibridge's base_url" in result.stdout and "FEDIBRIDGE_BLOG_URL" in result.stdout


# ---------------------------------------------------------------------- 5. trial data stays in the trial
def test_trial_articles_are_not_taken_into_production(trial: tuple[Path, int], tmp_path: Path) -> None:
    site, port = trial
    (site / "post.md").write_text(POST, encoding="utf-8")
    assert run(["publish", "post.md"], site).returncode == 0  # published during the localhost:8080 trial
    database = site / "data" / "fedibridge.db"

    result = run(["doctor"], site, FEDIBRIDGE_BASE_URL="https://fedi.example.org",
                 FEDIBRIDGE_BLOG_URL="https://example.org/")
    assert result.returncode == 1
    assert "1 article(s) were published under http://localhost:8080, not https://fedi.example.org" in result.stdout

    init = ["init", "--base-url", "https://fedi.example.org", "--blog-url", "https://example.org/"]
    line = one_error_line(run(init, site))
    assert "holds 1 article(s) published during a trial at http://localhost:8080" in line and "--fresh" in line
    assert not (site / "fedibridge.toml").exists()
    assert database.exists()

    result = run([*init, "--fresh"], site)
    assert result.returncode == 0, result.stderr
    assert "moved the trial database aside" in result.stdout
    assert not database.exists()
    (moved,) = (site / "data").glob("fedibridge.db.trial-*[0-9]")
    with sqlite3.connect(moved) as conn:  # kept, not deleted: the article is still in it
        assert conn.execute("SELECT slug FROM articles").fetchall() == [("ete-a-paris",)]
    assert (site / "fedibridge.toml").exists()
    assert "kept existing RSA key pair" in result.stdout


# ------------------------------------------------------------------------------------- rough edges
def test_worker_banner_does_not_claim_a_listener(tmp_path: Path) -> None:
    port = free_port()
    proc = start_serve(tmp_path, port, "--role", "worker")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
    finally:
        stop(proc)
    assert "(worker)" in first and "no HTTP listener" in first and "http://" not in first


def test_first_start_says_a_public_https_url_is_needed_to_be_followed(tmp_path: Path) -> None:
    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "search for @blog@localhost:8080" not in out
    assert "needs a public HTTPS URL" in out and "fedibridge init --base-url https://" in out
    assert "reverse proxy" in out


def test_import_of_a_loopback_url_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    assert run(["init", "--base-url", "https://fedi.example.org", "--blog-url", "https://example.org/"],
               tmp_path).returncode == 0
    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        line = one_error_line(run(["import", f"http://127.0.0.1:{port}/feed.rss"], tmp_path))
    finally:
        stop(proc)
    assert "not a public address" in line and "FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES=true" in line


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (POST.replace("2024-07-14T10:30:00+02:00", "someday"), "post.md: date must be an ISO 8601 date"),
        ("# Titre\n\nPas d'en-tête.\n", "no front matter found"),
    ],
)
def test_publish_errors_speak_the_files_language(trial: tuple[Path, int], text: str, needle: str) -> None:
    site, _ = trial
    (site / "post.md").write_text(text, encoding="utf-8")
    line = one_error_line(run(["publish", "post.md"], site))
    assert needle in line, line
    assert "published must" not in line


HUGO_TOML = """+++
title = "L’été à Paris « enfin »"
date = 2024-07-14T10:30:00+02:00
tags = ["voyage", "été"]
slug = "ete-toml"
url = "https://example.org/2024/07/ete-toml/"
+++
Il fait chaud 🌞.
"""
HUGO_JSON = """{
  "title": "L’été à Paris « enfin »",
  "date": "2024-07-14T10:30:00+02:00",
  "tags": ["voyage", "été"],
  "slug": "ete-json",
  "url": "https://example.org/2024/07/ete-json/"
}
Il fait chaud 🌞.
"""


@pytest.mark.parametrize(("text", "slug"), [(HUGO_TOML, "ete-toml"), (HUGO_JSON, "ete-json")])
def test_hugo_toml_and_json_front_matter_publish(trial: tuple[Path, int], text: str, slug: str) -> None:
    site, port = trial
    (site / "post.md").write_text(text, encoding="utf-8")
    result = run(["publish", "post.md"], site)
    assert result.returncode == 0, result.stderr
    assert f"{slug}: created" in result.stdout
    note = get_json(f"http://127.0.0.1:{port}/articles/{slug}")
    assert note["published"] == "2024-07-14T08:30:00Z"
    assert "Il fait chaud 🌞." in str(note["content"])
    assert [t["name"] for t in note["tag"]] == ["#voyage", "#été"]  # type: ignore[attr-defined,index]


def test_init_asks_for_the_blog_url_on_a_terminal(tmp_path: Path) -> None:
    import pty

    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"https://example.org/carnet/\n")
        result = subprocess.run([sys.executable, "-m", "fedibridge", "init", "--base-url",
                                 "https://example.org/fediverse"], cwd=tmp_path, env=clean_env(), stdin=terminal,
                                capture_output=True, text=True, timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert result.returncode == 0, result.stderr
    assert "the blog's home page" in result.stdout and "[https://example.org/]" in result.stdout
    assert 'blog_url = "https://example.org/carnet/"' in (tmp_path / "fedibridge.toml").read_text(encoding="utf-8")
