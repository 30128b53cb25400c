"""Article files as static-site generators write them: YAML front matter, then Markdown or HTML.

Field names follow Hugo/Jekyll habits (``date``, ``lang``, ``description``); the result is the
same dict the admin API takes, so `articles.validate` checks both the same way.
"""

from __future__ import annotations

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


def split(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body). A file without a leading ``---`` block has empty front matter."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {}, text
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            head = "".join(lines[1:i])
            body = "".join(lines[i + 1:])
            try:
                meta = yaml.safe_load(head) or {}
            except yaml.YAMLError as exc:
                raise BadRequest(f"front matter is not valid YAML: {exc}") from None
            if not isinstance(meta, dict):
                raise BadRequest("front matter must be a YAML mapping (key: value lines)")
            return meta, body
    raise BadRequest("front matter starts with --- but never ends (no closing --- line)")


def render_markdown(body: str) -> str:
    """Markdown to HTML; no "smart quotes" extension, so « guillemets » and ’ stay as written."""
    return str(markdown.markdown(body, extensions=["extra", "sane_lists"], output_format="html"))


def _tags(value: Any) -> Any:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list):
        return [str(t) for t in value]
    return value


def to_article_dict(meta: dict[str, Any], body_html: str) -> dict[str, Any]:
    """Map front matter names to the admin API's field names; values are checked later."""
    out: dict[str, Any] = {"content": body_html}
    lowered = {str(k).lower(): v for k, v in meta.items()}
    for field, names in ALIASES.items():
        for name in names:
            if name in lowered and lowered[name] is not None:
                out[field] = lowered[name]
                break
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


def load_file(path: str | Path) -> dict[str, Any]:
    """Read one article file into the admin API's article dict."""
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
    return to_article_dict(meta, html)
