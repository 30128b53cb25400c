"""The CLI as a site owner runs it: real subprocesses, real files, real ports."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import free_port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIBRIDGE_")}
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedibridge", *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=60)


def start_serve(cwd: Path, port: int, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fedibridge", "serve", *args], cwd=cwd,
                            env=clean_env(FEDIBRIDGE_PORT=str(port), **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_http(url: str, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_serve_first_start_generates_and_second_start_reuses(tmp_path: Path) -> None:
    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        body = wait_http(f"http://127.0.0.1:{port}/.well-known/webfinger?resource=acct:blog@localhost:8080")
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert b'"subject":"acct:blog@localhost:8080"' in body
    assert "@blog@localhost:8080" in out
    assert "http://localhost:8080/users/blog" in out
    assert "generated an RSA-2048 key pair" in out
    assert "next steps" in out
    private = tmp_path / "keys" / "private.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys" / "admin-token").stat().st_mode) == 0o600
    assert (tmp_path / "data" / "fedibridge.db").exists()
    key_before = private.read_bytes()

    proc = start_serve(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "generated" not in out
    assert private.read_bytes() == key_before


def test_init_writes_config_and_keys_and_never_overwrites(tmp_path: Path) -> None:
    result = run(["init", "--base-url", "https://blog.example.org/fediverse", "--domain", "example.org",
                  "--username", "blog", "--name", "Mon blog « été »"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "@blog@example.org" in result.stdout
    text = (tmp_path / "fedibridge.toml").read_text(encoding="utf-8")
    assert 'base_url = "https://blog.example.org/fediverse"' in text
    assert 'domain = "example.org"' in text
    assert 'name = "Mon blog « été »"' in text
    assert "# moderation" in text  # commented defaults document the knobs
    assert stat.S_IMODE((tmp_path / "keys" / "private.pem").stat().st_mode) == 0o600
    key = (tmp_path / "keys" / "private.pem").read_bytes()
    again = run(["init", "--base-url", "https://other.example"], tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert (tmp_path / "keys" / "private.pem").read_bytes() == key
    doctor = run(["doctor"], tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "all good" in doctor.stdout
    assert "MiB free next to the database" in doctor.stdout  # a full disk stops the inbox: say how close
    # Author attribution (Mastodon's "More from …" under link previews) needs one line in the blog's template.
    assert '<meta name="fediverse:creator" content="@blog@example.org">' in doctor.stdout
    assert "attributionDomains: example.org" in doctor.stdout


@pytest.mark.parametrize(
    ("env", "files", "needle"),
    [
        ({"FEDIBRIDGE_BASE_URL": "blog.example.org"}, {}, "base_url"),
        ({}, {"fedibridge.toml": 'favourite_colour = "blue"\n'}, "favourite_colour"),
        ({"FEDIBRIDGE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, {}, "database_url"),
        ({}, {"keys/private.pem": "not a key"}, "keys_dir"),
        ({"FEDIBRIDGE_PORT": "99999"}, {}, "port"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str], files: dict[str, str],
                                                  needle: str) -> None:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    port = free_port()
    full_env = {"FEDIBRIDGE_PORT": str(port), **env}
    result = run(["serve"], tmp_path, **full_env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fedibridge: error:")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(["serve"], tmp_path, FEDIBRIDGE_PORT=str(port))
    assert result.returncode == 2
    assert "cannot listen" in result.stderr and "port" in result.stderr


def test_doctor_reports_loose_key_permissions(tmp_path: Path) -> None:
    assert run(["init", "--base-url", "https://blog.example.org"], tmp_path).returncode == 0
    (tmp_path / "keys" / "private.pem").chmod(0o644)
    result = run(["doctor"], tmp_path)
    assert result.returncode == 1
    assert "chmod 600" in result.stdout
    (tmp_path / "keys" / "private.pem").write_text("garbage")
    result = run(["doctor"], tmp_path)
    assert result.returncode == 1
    assert "not an unencrypted PEM private key" in result.stdout
