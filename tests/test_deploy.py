"""The deployment artefacts: Dockerfile, docker-compose.yml, reverse-proxy snippets in deploy/.

There is no Docker engine here, so we test what can be tested without one: the files parse, every
service's command is a real `fedibridge` invocation, every FEDIBRIDGE_* name is a real setting, the
compose environment yields valid settings, the image's health check works against a real server started
with the compose command line, the worker's command and check run for real, and the files `pip install /src`
sees build a package with its migrations.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from fedibridge import config
from fedibridge.cli import build_parser, cmd_doctor, cmd_serve

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
SETTING_NAMES = {"FEDIBRIDGE_" + f.name.upper() for f in fields(config.Settings)} | {
    "FEDIBRIDGE_" + n for n in config.NON_SETTING_ENV
}
WELL_KNOWN = ("/.well-known/webfinger", "/.well-known/host-meta", "/.well-known/nodeinfo")
# What an operator puts in .env before `docker compose up` (the `:?` variables must be there).
OPERATOR_ENV = {
    "POSTGRES_PASSWORD": "0123456789abcdef",
    "FEDIBRIDGE_BASE_URL": "https://fedi.example.org",
    "FEDIBRIDGE_DOMAIN": "example.org",
    "FEDIBRIDGE_NAME": "Le blog d’Éloïse « café » ☕",
}


# ------------------------------------------------------------------------------------------ helpers
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


_VAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose-spec interpolation (${V}, ${V:-default}, ${V-default}, ${V:?error}, ${V?error}, $$)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        present = name in env
        val = env.get(name, "")
        if op in (":-", ":?"):
            missing = not val
        else:
            missing = not present
        if op and op.endswith("?") and missing:
            raise KeyError(f"{name}: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return val

    return _VAR.sub(sub, value)


def service_env(service: str, env: dict[str, str]) -> dict[str, str]:
    raw = services()[service].get("environment") or {}
    assert isinstance(raw, dict), "environment must be a mapping (it is shared through a YAML anchor)"
    return {k: interpolate(str(v), env) for k, v in raw.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out = []
    for line in lines:
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile(instruction: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == instruction]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def image_healthcheck() -> list[str]:
    (check,) = dockerfile("HEALTHCHECK")
    _, _, cmd = check.partition("CMD ")
    return exec_form(cmd)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDIBRIDGE_", "POSTGRES_"))}
    env.update(extra)
    return env


def fedibridge_argv(args: list[str]) -> list[str]:
    """The image's `fedibridge` console script, run with this interpreter."""
    return [sys.executable, "-m", "fedibridge", *args]


def with_python(cmd: list[str]) -> list[str]:
    """A health check's command as the container would run it, with this venv's interpreter and script."""
    if cmd[0] == "python":
        return [sys.executable, *cmd[1:]]
    if cmd[0] == "fedibridge":
        return fedibridge_argv(cmd[1:])
    raise AssertionError(f"unexpected program in health check: {cmd}")


async def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode()


async def wait_http(url: str) -> str:
    deadline = asyncio.get_running_loop().time() + 30
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return await resp.text()
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{url} did not answer 200 within 30 s")
            await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is None:
        proc.terminate()
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode() if out else ""


# ----------------------------------------------------------------------------------- compose: shape
def test_compose_has_the_documented_services() -> None:
    data = compose()
    assert "version" not in data, "Compose spec: the top-level `version` key is obsolete"
    svc = data["services"]
    assert set(svc) == {"postgres", "web", "worker", "caddy"}

    pg = svc["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert "pgdata:/var/lib/postgresql/data" in pg["volumes"]
    assert "pg_isready -U fedibridge" in " ".join(pg["healthcheck"]["test"])
    assert set(pg["environment"]) >= {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert ":?" in pg["environment"]["POSTGRES_PASSWORD"], "no default password: compose must refuse to start"

    for name in ("web", "worker"):
        s = svc[name]
        assert s["build"] == "." and s["image"] == svc["web"]["image"], f"{name}: one image for every role"
        assert s["pull_policy"] == "build", f"{name}: never pull someone else's image of that name"
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert s["healthcheck"]["test"], f"{name} has a health check"
        assert any(v.split(":")[1] == "/app/keys" for v in s["volumes"]), f"{name} mounts keys/ at /app/keys"
        assert s["restart"] == "unless-stopped"
    assert "127.0.0.1:8080:8080" in svc["web"]["ports"], "web is published on loopback only, for the proxy"
    assert "ports" not in svc["worker"], "workers serve no HTTP"
    assert "./keys:/app/keys:ro" in svc["worker"]["volumes"], "workers only read the key"
    assert svc["worker"]["depends_on"]["web"]["condition"] == "service_healthy", "web creates the key first"
    assert svc["worker"]["deploy"]["replicas"] >= 2

    assert svc["caddy"]["profiles"] == ["proxy"], "the bundled proxy is opt-in"
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in svc["caddy"]["volumes"]
    assert svc["caddy"]["environment"]["BRIDGE_UPSTREAM"] == "web:8080"

    named = {v.split(":")[0] for s in svc.values() for v in s.get("volumes", []) if not v.startswith((".", "/"))}
    assert named <= set(data["volumes"]), f"named volumes must be declared: {named - set(data['volumes'])}"


def test_caddy_gets_every_variable_the_caddyfile_reads() -> None:
    used = set(re.findall(r"\{\$(\w+)", (DEPLOY / "Caddyfile").read_text(encoding="utf-8")))
    assert used == {"BRIDGE_HOST", "BRIDGE_UPSTREAM"}
    assert used <= set(services()["caddy"]["environment"])


def test_compose_cli_validates_the_file(tmp_path: Path) -> None:
    """`docker compose config` needs no engine; the compose plugin may simply not be installed."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for prefix in candidates:
        if shutil.which(prefix[0]) is None:
            continue
        probe = subprocess.run([*prefix, "version"], capture_output=True, text=True)
        if probe.returncode != 0:
            continue
        env = clean_env(**OPERATOR_ENV)
        done = subprocess.run([*prefix, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                              cwd=tmp_path, env=env)
        assert done.returncode == 0, f"`{' '.join(prefix)} config -q` rejects docker-compose.yml: {done.stderr}"
        missing = subprocess.run([*prefix, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                                 cwd=tmp_path, env=clean_env(FEDIBRIDGE_BASE_URL="https://fedi.example.org"))
        assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
        return
    pytest.fail("neither `docker compose` nor `docker-compose` is installed: install Debian's docker-compose "
                "package (apt-get install -y docker-compose; .ci/run does) so Compose itself validates the file")


# ------------------------------------------------------------------------- commands are real CLI calls
@pytest.mark.parametrize("name,role", [("web", "web"), ("worker", "worker")])
def test_service_command_is_a_real_cli_invocation(name: str, role: str) -> None:
    command = services()[name]["command"]
    args = build_parser().parse_args(command)
    assert args.func is cmd_serve and args.role == role
    if role == "web":
        assert args.host == "0.0.0.0", "inside a container, listen on every interface"
        container_port = services()["web"]["ports"][0].rsplit(":", 1)[1]
        assert args.port == int(container_port), "the published container port is the one it listens on"


def test_worker_health_check_is_a_real_cli_invocation() -> None:
    test = services()["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "fedibridge"
    assert build_parser().parse_args(test[2:]).func is cmd_doctor


def test_dockerfile_entrypoint_and_cmd_are_a_real_cli_invocation() -> None:
    (entrypoint,) = dockerfile("ENTRYPOINT")
    (cmd,) = dockerfile("CMD")
    assert exec_form(entrypoint) == ["fedibridge"]
    args = build_parser().parse_args(exec_form(cmd))
    assert args.func is cmd_serve and args.host == "0.0.0.0" and args.role == "all"


def test_dockerfile_shape() -> None:
    assert dockerfile("FROM") == ["python:3.11-slim"]
    assert dockerfile("WORKDIR")[-1] == "/app"
    assert dockerfile("EXPOSE") == ["8080"]
    (volume,) = dockerfile("VOLUME")
    assert exec_form(volume) == ["/app/keys", "/app/data"]
    users = dockerfile("USER")
    assert users and users[-1] not in ("root", "0"), "the service must not run as root"
    assert any("pip install /src" in run for run in dockerfile("RUN"))
    # defaults the image relies on: keys/ and data/ relative to WORKDIR are the two volumes
    assert config.Settings.keys_dir == "keys" and config.Settings.database_url == "sqlite:///data/fedibridge.db"
    assert image_healthcheck()[0] == "python", "slim images have no curl"
    assert services()["web"]["healthcheck"]["test"] == ["CMD", *image_healthcheck()]


# --------------------------------------------------------------------------------- env names are real
def test_every_fedibridge_variable_is_a_setting() -> None:
    texts = {p.name: p.read_text(encoding="utf-8") for p in (COMPOSE, DOCKERFILE, ROOT / ".env.example")}
    found = {name: set(re.findall(r"FEDIBRIDGE_[A-Z0-9_]+", text)) for name, text in texts.items()}
    assert "FEDIBRIDGE_DATABASE_URL" in found["docker-compose.yml"]
    for name, names in found.items():
        unknown = names - SETTING_NAMES
        assert not unknown, f"{name} uses names that are not settings of fedibridge/config.py: {sorted(unknown)}"


def test_env_example_provides_every_required_variable() -> None:
    required = set(re.findall(r"\$\{(\w+):?\?", COMPOSE.read_text(encoding="utf-8")))
    assert required == {"POSTGRES_PASSWORD", "FEDIBRIDGE_BASE_URL"}
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))
    assert required <= listed


def test_compose_environment_gives_valid_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray fedibridge.toml
    web_env = service_env("web", OPERATOR_ENV)
    assert web_env == service_env("worker", OPERATOR_ENV), "web and workers must see the same settings"
    settings = config.load(env=web_env)
    assert settings.database_url == "postgresql://fedibridge:0123456789abcdef@postgres/fedibridge"
    assert settings.handle_domain == "example.org" and settings.base == "https://fedi.example.org"
    assert settings.name == OPERATOR_ENV["FEDIBRIDGE_NAME"], "UTF-8 survives the environment"
    assert settings.moderation == "known" and settings.admin_token == ""
    pg = service_env("postgres", OPERATOR_ENV)
    assert settings.database_url == (f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
                                     f"@postgres/{pg['POSTGRES_DB']}"), "the URL matches the database compose makes"
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        service_env("web", {"FEDIBRIDGE_BASE_URL": "https://fedi.example.org"})
    with pytest.raises(KeyError, match="FEDIBRIDGE_BASE_URL"):
        service_env("web", {"POSTGRES_PASSWORD": "x"})


# ------------------------------------------------------------------- the commands and checks, for real
async def test_compose_commands_and_health_checks_run_for_real(tmp_path: Path, database_url: str) -> None:
    """Start web then worker with their compose command lines on one database, as compose orders them."""
    port = free_port()
    env = clean_env(**{k: v for k, v in service_env("web", OPERATOR_ENV).items() if v})
    # as in the container, except: this machine's database, loopback, and a base path to prove the check uses it
    env.update(FEDIBRIDGE_DATABASE_URL=database_url, FEDIBRIDGE_PORT=str(port),
               FEDIBRIDGE_BASE_URL=f"http://127.0.0.1:{port}/fediverse", FEDIBRIDGE_DOMAIN="",
               FEDIBRIDGE_ALLOW_PRIVATE_ADDRESSES="true")
    web_cmd = list(services()["web"]["command"])
    web_cmd[web_cmd.index("--host") + 1] = "127.0.0.1"
    web_cmd[web_cmd.index("--port") + 1] = str(port)
    check = with_python(image_healthcheck())

    code, out = await run(check, tmp_path, env)
    assert code != 0, "the health check must fail while nothing listens"

    web = await asyncio.create_subprocess_exec(*fedibridge_argv(web_cmd), cwd=tmp_path, env=env,
                                               stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    worker = None
    try:
        body = await wait_http(f"http://127.0.0.1:{port}/fediverse/healthz")
        assert json.loads(body) == {"status": "ok"}
        code, out = await run(check, tmp_path, env)
        assert code == 0, f"image health check failed against a healthy web process: {out}"
        assert (tmp_path / "keys" / "private.pem").exists(), "web generates the key pair on first start"
        assert (tmp_path / "keys" / "private.pem").stat().st_mode & 0o777 == 0o600

        worker = await asyncio.create_subprocess_exec(
            *fedibridge_argv(services()["worker"]["command"]), cwd=tmp_path,
            env={**env, "FEDIBRIDGE_PORT": str(free_port())},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        await asyncio.sleep(3)
        assert worker.returncode is None, f"worker exited: {await stop(worker)}"
        worker_check = with_python(services()["worker"]["healthcheck"]["test"][1:])
        code, out = await run(worker_check, tmp_path, env)
        assert code == 0, f"worker health check (doctor) failed: {out}"
        assert "RSA key pair readable" in out and "database reachable" in out
    finally:
        if worker is not None:
            await stop(worker)
        web_out = await stop(web)
    assert "(web)" in web_out, web_out
    code, out = await run(check, tmp_path, env)
    assert code != 0, "the health check must fail once the server is gone"


# ------------------------------------------------------------------------------- what the image holds
def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rules, simply: `*` stays within one path segment, `**/` means any depth, and a
    pattern naming a directory excludes everything under it."""
    parts = rel.split("/")
    for pattern in patterns:
        if pattern.startswith("**/"):
            if fnmatch.fnmatch(parts[-1], pattern[3:]) or pattern[3:] in parts[:-1]:
                return True
            continue
        segs = pattern.split("/")
        if len(segs) <= len(parts) and all(fnmatch.fnmatch(part, seg) for part, seg in zip(parts, segs, strict=False)):
            return True
    return False


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_secrets_and_state_out_of_the_context() -> None:
    patterns = dockerignore()
    for rel in (".git/config", ".venv/bin/python", "keys/private.pem", "keys/admin-token", "old/private.pem",
                ".env", "fedibridge.toml", "data/fedibridge.db", "tests/test_deploy.py"):
        assert _dockerignored(rel, patterns), f"{rel} would be sent to the Docker build"
    for rel in ("pyproject.toml", "README.md", "fedibridge/cli.py", "fedibridge/migrations/env.py"):
        assert not _dockerignored(rel, patterns), f"{rel} is needed by the Dockerfile but ignored"


def test_the_copied_sources_build_a_complete_package(tmp_path: Path) -> None:
    """Exactly what the Dockerfile COPYs must build a wheel with the migrations and widget in it."""
    src = tmp_path / "src"
    src.mkdir()
    for copy in dockerfile("COPY"):
        *sources, dest = copy.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: missing from the repository"
            target = src / Path(dest).relative_to("/src") if dest.rstrip("/") != "/src" else src / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, target)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("fedibridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fedibridge/cli.py" in names
    assert any(n.startswith("fedibridge/migrations/versions/0001") for n in names), "migrations in the image"
    assert "fedibridge/migrations/script.py.mako" in names
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fedibridge").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert shipped <= names, f"files left out of the image (package-data): {sorted(shipped - names)}"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fedibridge = fedibridge.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


# ---------------------------------------------------------------------------------- reverse proxies
@pytest.mark.parametrize("snippet", ["Caddyfile", "nginx.conf", "apache-htaccess"])
def test_proxy_snippets_forward_the_well_known_paths(snippet: str) -> None:
    text = (DEPLOY / snippet).read_text(encoding="utf-8")
    for path in WELL_KNOWN:
        assert path in text, f"deploy/{snippet} does not mention {path}"


def test_nginx_passes_the_signed_host_header_and_uses_tls() -> None:
    text = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    active = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "proxy_set_header Host $host;" in active
    assert "listen 443 ssl" in active and "ssl_certificate " in active
    assert "proxy_pass http://fedibridge;" in active and "server 127.0.0.1:8080;" in active
    assert "client_max_body_size" in active
    assert "location /fediverse/" in text, "layout B forwards the bridge path"
    assert text.count("return 301 https://fedi.example.org$request_uri;") == 4, "layout C redirects the handle"


def test_apache_rules_redirect_each_well_known_path_keeping_its_name() -> None:
    text = (DEPLOY / "apache-htaccess").read_text(encoding="utf-8")
    rules = re.findall(r"^RewriteRule (\S+) (\S+) \[([^\]]+)\]", text, flags=re.MULTILINE)
    assert rules and all(flags == "R=301,L" for _, _, flags in rules)

    def redirect(path: str) -> str | None:
        for pattern, target, _ in rules:
            m = re.match(pattern, path.lstrip("/"))  # per-directory context: no leading slash
            if m:
                return m.expand(re.sub(r"\$(\d)", r"\\\1", target))  # Apache's $1 is Python's \1
        return None

    for path in (*WELL_KNOWN, "/.well-known/host-meta.json"):
        assert redirect(path) == "https://fedi.example.org" + path
    assert redirect("/.well-known/acme-challenge/token") is None, "certificate renewal on the blog keeps working"
    assert redirect("/2024/01/mon-article/") is None


# ------------------------------------------------------------------------------------------- README
def test_readme_describes_compose() -> None:
    """The README's production section describes exactly what docker-compose.yml runs."""
    readme = ROOT / "README.md"
    assert readme.exists(), "README.md is missing"
    text = readme.read_text(encoding="utf-8")
    m = re.search(r"^(#+) Running in production\s*$(.*?)(?=^\1 |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert m, 'README.md has no "Running in production" section'
    section = m.group(2)
    for name in services():
        assert f"`{name}`" in section, f'"Running in production" does not describe the compose service `{name}`'
    for words in ("docker compose up", "keys/", "/metrics", "/healthz", "deploy/"):
        assert words in section, f'"Running in production" does not mention {words}'
