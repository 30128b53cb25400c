"""Article files as static-site generators write them: front matter (YAML, TOML or JSON), then Markdown or HTML.

TOML is read with the standard library's tomllib rather than python-frontmatter, whose TOML handler
needs the unmaintained `toml` package (TOML 0.5); YAML and JSON need nothing new either.

Field names follow Hugo/Jekyll habits (``date``, ``lang``, ``description``); the result is the
same dict the admin API takes, so `articles.validate` checks both the same way.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import markdown
import yaml

from .errors import BadRequest

MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown", ".mkd"}
HTML_SUFFIXES = {".html", ".htm"}
# front matter name → article field; the first name found wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "title": ("title",),
    "slug": ("slug",),
    "published": ("date", "published", "pubdate"),
    "tags": ("tags", "categories"),
    "summary": ("summary", "description", "excerpt"),
    "language": ("lang", "language"),
    "image": ("image", "cover", "featured_image"),
    "image_alt": ("image_alt", "alt", "image-alt"),
    "url": ("url", "permalink", "link"),
    "sensitive": ("sensitive",),
    "content_warning": ("content_warning", "cw", "content-warning"),
}


def _yaml(head: str) -> Any:
    try:
        return yaml.safe_load(head) or {}
    except yaml.YAMLError as exc:
        raise BadRequest(f"front matter is not valid YAML: {exc}") from None


def _toml(head: str) -> Any:
    try:
        return tomllib.loads(head)
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"front matter is not valid TOML: {exc}") from None


def _fenced(lines: list[str], fence: str, ends: tuple[str, ...], parse: Callable[[str], Any]) -> tuple[Any, str]:
    for i in range(1, len(lines)):
        if lines[i].strip() in ends:
            return parse("".join(lines[1:i])), "".join(lines[i + 1:])
    raise BadRequest(f"front matter starts with {fence} but never ends (no closing {fence} line)")


def split(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body), the three ways Hugo writes it: YAML between ``---``, TOML between ``+++``, or a
    JSON object opening the file. A file with none of them has empty front matter."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    first = lines[0].strip() if lines else ""
    if first == "---":
        meta, body = _fenced(lines, "---", ("---", "..."), _yaml)
    elif first == "+++":
        meta, body = _fenced(lines, "+++", ("+++",), _toml)
    elif text.lstrip().startswith("{"):
        try:
            meta, end = json.JSONDecoder().raw_decode(text.lstrip())
        except json.JSONDecodeError as exc:
            raise BadRequest(f"front matter starts with {{ but is not valid JSON: {exc}") from None
        body = text.lstrip()[end:].lstrip("\r\n")
    else:
        return {}, text
    if not isinstance(meta, dict):
        raise BadRequest("front matter must be a mapping (key: value lines)")
    return meta, body


def render_markdown(body: str) -> str:
    """Markdown to HTML; no "smart quotes" extension, so « guillemets » and ’ stay as written."""
    return str(markdown.markdown(body, extensions=["extra", "sane_lists"], output_format="html"))


def _tags(value: Any) -> Any:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list):
        return [str(t) for t in value]
    return value


def _names(meta: dict[str, Any]) -> dict[str, str]:
    """Article field → the front matter name it came from (the user wrote ``date``, not ``published``)."""
    lowered = {str(k).lower(): k for k in meta}
    out: dict[str, str] = {}
    for field, names in ALIASES.items():
        for name in names:
            if name in lowered and meta[lowered[name]] is not None:
                out[field] = str(lowered[name])
                break
    return out


def to_article_dict(meta: dict[str, Any], body_html: str) -> dict[str, Any]:
    """Map front matter names to the admin API's field names; values are checked later."""
    out: dict[str, Any] = {"content": body_html}
    lowered = {str(k).lower(): v for k, v in meta.items()}
    for field, name in _names(meta).items():
        out[field] = lowered[name.lower()]
    if "tags" in out:
        out["tags"] = _tags(out["tags"])
    if isinstance(out.get("published"), datetime | date):
        out["published"] = out["published"].isoformat()
    if isinstance(out.get("slug"), int):
        out["slug"] = str(out["slug"])
    if isinstance(out.get("image"), dict):  # Hugo/Jekyll: image: {src|path: …, alt: …}
        img = out["image"]
        out["image"] = img.get("src") or img.get("path") or img.get("url")
        out.setdefault("image_alt", img.get("alt"))
    return out


@dataclass(frozen=True)
class ArticleFile:
    """An article file read: the admin API's dict, plus what is needed to word errors in the file's terms."""

    path: Path
    data: dict[str, Any]
    names: dict[str, str]
    has_front_matter: bool

    def explain(self, error: BadRequest) -> BadRequest:
        """Reword a validation error with the names the file uses, and say when front matter is missing."""
        message = str(error)
        if not self.has_front_matter:
            return BadRequest(f"{self.path}: no front matter found ({message}); start the file with a block "
                              "between --- lines (YAML), +++ lines (TOML) or a JSON object, giving at least "
                              "title and url")
        field = message.split(" ", 1)[0]
        name = self.names.get(field)
        if name and name != field:
            message = name + message[len(field):]
        return BadRequest(f"{self.path}: {message}")


def read(path: str | Path) -> ArticleFile:
    """Read one article file, keeping track of its front matter's own names."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadRequest(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadRequest(f"{file} is not UTF-8 text") from None
    meta, body = split(text)
    suffix = file.suffix.lower()
    if suffix in HTML_SUFFIXES:
        html = body
    elif suffix in MARKDOWN_SUFFIXES or not suffix:
        html = render_markdown(body)
    else:
        raise BadRequest(f"{file}: expected a Markdown (.md) or HTML (.html) file")
    return ArticleFile(file, to_article_dict(meta, html), _names(meta), bool(meta))


def load_file(path: str | Path) -> dict[str, Any]:
    """Read one article file into the admin API's article dict."""
    return read(path).data
