"""The import graph of `fedibridge`: no cycle, layers only import downwards, no hidden function-level imports.

Built with `ast` from the source (nothing is imported), so a broken layer shows here before it shows as an
ImportError at start-up. Every module must be in LAYERS: a new module forces a decision about where it sits.
Layers (DESIGN.md §2), lowest first; a module may import its own layer and the ones below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fedibridge"

RANK = {"base": 0, "protocol": 1, "infra": 2, "services": 3, "core": 4, "web": 5, "shell": 6}
LAYERS = {
    # base: the package root, errors, settings and small helpers every layer uses (no I/O of their own).
    "fedibridge": "base", "errors": "base", "config": "base", "hosts": "base", "logsafe": "base",
    "metrics": "base", "heap": "base", "health": "base", "models": "base", "jsontext": "base",
    # protocol: pure ActivityPub/HTTP-signature/feed code, plain values in and out.
    "signatures": "protocol", "cavage": "protocol", "rfc9421": "protocol", "vocab": "protocol",
    "objects": "protocol", "sanitize": "protocol", "feeds": "protocol", "feed_extensions": "protocol",
    "discovery": "protocol", "site": "protocol", "keys": "protocol", "remote_json": "protocol",
    "frontmatter": "protocol", "mediatypes": "protocol", "vocab_account": "protocol", "signing": "protocol",
    # infra: storage, the HTTP client and remote-document cache, wake-ups, the leased-row worker, the inbox writer.
    "store": "infra", "tables": "infra", "migrations": "infra", "migrations.env": "infra",
    "migrations.versions.0001_initial_schema": "infra", "migrations.versions.0002_image_length_last_attempt": "infra",
    "migrations.versions.0003_pins_quotes_actor_state": "infra",
    "migrations.versions.0004_inbox_locked_by": "infra", "migrations.versions.0005_pending_indexes": "infra",
    "migrations.versions.0006_comments_author_status": "infra",
    "actor_state": "infra",
    "http_client": "infra", "netguard": "infra", "remote_actors": "infra", "wakeup": "infra", "enqueue": "infra",
    "worker": "infra", "sqlite_writer": "infra", "inbox_sink": "infra", "intake": "infra", "doc_cache": "infra",
    "ratelimit": "infra", "bulk_insert": "infra",
    # services: the one object holding the rest (imports project modules for typing only).
    "services": "services",
    # core: what the bridge does; takes Services (or parts of it), never a web.Application.
    "articles": "core", "comments": "core", "comment_views": "core", "followers": "core", "reactions": "core",
    "moderation": "core", "dispatch": "core", "feedsource": "core", "enclosures": "core",
    "domain_health": "core", "delivery": "core", "delivery_rows": "core", "inbox_worker": "core", "inbox_batch": "core",
    "webhook": "core", "retention": "core", "installation": "core",
    "account_move": "core", "pins": "core", "quotes": "core",
    # web: routes and handlers (parse → call core → render).
    "web": "web", "web.common": "web", "web.routes": "web", "web.middleware": "web", "web.paging": "web",
    "web.inbox": "web", "web.publishing": "web", "web.comments_api": "web", "web.followers_api": "web",
    "web.discovery": "web", "web.ops": "web", "web.widget": "web", "web.account": "web",
    "web.documents": "web", "web.admin": "web", "web.admin.auth": "web", "web.admin.comments_page": "web",
    "web.admin.i18n": "web", "web.admin.pages": "web", "web.admin.queries": "web", "web.admin.render": "web",
    "web.admin.routes": "web",
    "web.admin.session": "web", "admin_passphrase": "protocol",
    # shell: argument parsing, start-up, building Services, starting aiohttp and the jobs.
    "app": "shell", "cli": "shell", "cli_articles": "shell", "cli_comments": "shell", "cli_delivery": "shell",
    "cli_account": "shell", "cli_admin": "shell", "doctor": "shell", "__main__": "shell",
}
# Function-level imports of project modules allowed, each for a stated reason (see the comment at the import).
LAZY_ALLOWED = {
    ("cli", "app"),  # start-up cost: only `serve` needs aiohttp and the app
    # start-up cost: they load the app
    ("cli", "cli_articles"), ("cli", "cli_comments"), ("cli", "cli_delivery"), ("cli", "cli_account"),
    ("cli", "cli_admin"),
}
# Modules that may import aiohttp (the web layer, the shell and the HTTP client module).
AIOHTTP_ALLOWED = {"http_client", "netguard"}  # netguard: the DNS resolver the HTTP client plugs into aiohttp


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or root.name


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Collects (target, lineno, at_function_level) for every runtime import; TYPE_CHECKING blocks are skipped.

    Targets are module names relative to the package ("web.inbox"); the package root is "fedibridge".
    """

    def __init__(self, package: list[str], known: set[str]) -> None:
        self.package = package  # the importing module's package, relative to the root
        self.known = known
        self.depth = 0
        self.found: list[tuple[str, int, bool]] = []
        self.external: list[tuple[str, int]] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, short: str, name: str | None, lineno: int) -> None:
        sub = (f"{short}.{name}" if short else name) if name else short
        target = sub if sub in self.known else short
        self.found.append((target or "fedibridge", lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "fedibridge" or alias.name.startswith("fedibridge."):
                self._add(alias.name.removeprefix("fedibridge").lstrip("."), None, node.lineno)
            else:
                self.external.append((alias.name, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package[: len(self.package) - (node.level - 1)]
            short = ".".join([*base, *(node.module.split(".") if node.module else [])])
        elif node.module and (node.module == "fedibridge" or node.module.startswith("fedibridge.")):
            short = node.module.removeprefix("fedibridge").lstrip(".")
        else:
            self.external.append((node.module or "", node.lineno))
            return
        for alias in node.names:  # `from . import comments` imports a module; `from . import __version__` a name
            self._add(short, alias.name, node.lineno)


def scan(root: Path) -> tuple[dict[str, list[tuple[str, int, bool]]], dict[str, list[tuple[str, int]]]]:
    """Module → its project imports (target, line, function-level), and module → its external imports."""
    graph: dict[str, list[tuple[str, int, bool]]] = {}
    external: dict[str, list[tuple[str, int]]] = {}
    paths = sorted(root.rglob("*.py"))
    known = {module_name(p, root) for p in paths}
    for path in paths:
        name = module_name(path, root)
        parts = [] if name == root.name else name.split(".")
        visitor = _Imports(parts if path.name == "__init__.py" else parts[:-1], known)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        graph[name] = visitor.found
        external[name] = visitor.external
    return graph, external


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def problems(root: Path) -> list[str]:
    """Everything wrong with the package's imports, one line each (empty when the layering holds)."""
    graph, external = scan(root)
    out = [f"{m}: not classified in tests/test_layers.py LAYERS (decide its layer)" for m in graph if m not in LAYERS]
    edges: dict[str, set[str]] = {}
    for module, imports in graph.items():
        for target, line, lazy in imports:
            if target == module:
                continue
            if lazy:
                if (module, target) not in LAZY_ALLOWED:
                    out.append(f"{module}:{line}: function-level import of {target} (import at the top, or "
                               "justify it in LAZY_ALLOWED)")
                continue  # a deliberate lazy import does not take part in import-time cycles
            edges.setdefault(module, set()).add(target)
            low, high = LAYERS.get(module), LAYERS.get(target)
            if low and high and RANK[high] > RANK[low]:
                out.append(f"{module}:{line}: {low} module imports {target} ({high}): layers import downwards only")
            if module == "services":
                out.append(f"services:{line}: imports {target} at run time (typing only: TYPE_CHECKING)")
        for name, line in external[module]:
            top = LAYERS.get(module)
            if name.split(".")[0] == "aiohttp" and top not in ("web", "shell") and module not in AIOHTTP_ALLOWED:
                out.append(f"{module}:{line}: imports aiohttp (only web/, the shell and the HTTP client may)")
    if cycle := find_cycle(edges):
        out.append("import cycle: " + " → ".join(cycle))
    return out


def test_package_layers_hold() -> None:
    assert problems(PACKAGE) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "fedibridge"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_every_module_is_classified() -> None:
    graph, _ = scan(PACKAGE)
    assert set(graph) <= set(LAYERS), sorted(set(graph) - set(LAYERS))
    assert {"dispatch", "web.inbox", "app", "services"} <= set(graph)  # the scan really found the package


@pytest.mark.parametrize(("files", "expected"), [
    ({"__init__.py": "", "store.py": "from .comments import x\n", "comments.py": "from .store import y\n"},
     ["store:1: infra module imports comments (core)", "import cycle: comments → store → comments"]),
    ({"__init__.py": "", "vocab.py": "from fedibridge import store\n", "store.py": ""},
     ["vocab:1: protocol module imports store (infra)"]),
    ({"__init__.py": "", "comments.py": "def f():\n    from .store import x\n", "store.py": ""},
     ["comments:2: function-level import of store"]),
    ({"__init__.py": "", "comments.py": "from aiohttp import web\n"},
     ["comments:1: imports aiohttp"]),
    ({"__init__.py": "", "services.py": "from .store import Store\n", "store.py": ""},
     ["services:1: imports store at run time"]),
    ({"__init__.py": "", "newthing.py": ""}, ["newthing: not classified"]),
    ({"__init__.py": "", "web/__init__.py": "", "web/inbox.py": "from ..app import SERVICES\n",
      "app.py": "from .web import inbox\n"},
     ["web.inbox:1: web module imports app (shell)", "import cycle: app → web.inbox → app"]),
])
def test_a_broken_import_is_caught(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    """The check itself: each deliberately broken package yields exactly the expected complaints."""
    found = problems(_write(tmp_path, files))
    assert len(found) == len(expected), found
    for line, start in zip(sorted(found), sorted(expected), strict=True):
        assert line.startswith(start), (line, start)


def test_a_clean_package_passes(tmp_path: Path) -> None:
    files = {"__init__.py": "", "store.py": "from .errors import E\n", "errors.py": "",
             "services.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .store import Store\n",
             "cli.py": "def serve():\n    from .app import create_app  # lazy-import: start-up cost\n",
             "app.py": "from aiohttp import web\nfrom .services import S\n"}
    assert problems(_write(tmp_path, files)) == []
