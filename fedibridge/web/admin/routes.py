"""The admin page's route table (kept out of the package's __init__, which its modules import)."""

from __future__ import annotations

from aiohttp import web

from . import auth, comments_page, pages, render


def setup(app: web.Application, prefix: str) -> None:
    base = prefix + "/admin"
    app[auth.STATE] = auth.AdminState(prefix=prefix)
    r = app.router
    r.add_get(base, auth.index)
    r.add_get(base + "/", auth.index)
    r.add_get(base + "/login", auth.login_form)
    r.add_post(base + "/login", auth.login)
    r.add_post(base + "/logout", auth.guarded(auth.logout))
    r.add_get(base + "/comments", comments_page.comments_page)
    r.add_post(base + "/comments/bulk", comments_page.bulk)
    r.add_post(base + r"/comments/{id:\d{1,9}}/{action:approve|reject|delete|block-author|block-server}",
               comments_page.act)
    r.add_get(base + "/articles", pages.articles_page)
    r.add_get(base + "/followers", pages.followers_page)
    r.add_get(base + "/blocks", pages.blocks_page)
    r.add_post(base + "/blocks", pages.add_block)
    r.add_post(base + "/blocks/remove", pages.remove_block)
    r.add_get(base + "/static/{name}", render.static)
