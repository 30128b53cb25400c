"""CLI for moderation: list comments, approve/reject/delete one, manage blocks.

    fedibridge comments [--status pending|approved|rejected|all] [--article SLUG]
    fedibridge comments approve|reject|delete ID
    fedibridge block DOMAIN_OR_ACTOR [--kind domain|actor]
    fedibridge unblock DOMAIN_OR_ACTOR [--kind domain|actor]
    fedibridge blocks
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from . import comment_views, config, doc_cache, installation, moderation
from . import comments as store_comments
from .errors import BadRequest, NotFound
from .models import Comment
from .sanitize import plain_text
from .store import Store, utcnow

AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
ACTIONS = ("list", "approve", "reject", "delete")


def add_commands(add: AddCommand) -> None:
    p = add("comments", cmd_comments, "list comments, or approve/reject/delete one by id")
    p.add_argument("action", nargs="?", choices=ACTIONS, default="list")
    p.add_argument("id", nargs="?", type=int, help="comment id (for approve, reject, delete)")
    p.add_argument("--status", choices=("pending", "approved", "rejected", "all"), default="all")
    p.add_argument("--article", help="only comments on this article slug")
    p.add_argument("--limit", type=int, default=100)
    for name, func, text in (("block", cmd_block, "block a domain or an actor (its comments are rejected)"),
                             ("unblock", cmd_unblock, "remove a block")):
        p = add(name, func, text)
        p.add_argument("value", help="a domain (spam.example) or an actor id URL")
        p.add_argument("--kind", choices=("domain", "actor"), help="default: actor for URLs, else domain")
    add("blocks", cmd_blocks, "list blocks (from the database and the configuration)")


def _run(args: argparse.Namespace, work: Callable[[Store, config.Settings], Awaitable[int]]) -> int:
    settings = installation.load_existing(getattr(args, "config", None))  # never creates a database

    async def main() -> int:
        store = await Store.open(settings.database_url)
        doc_cache.tell_servers_on_close(store)  # running servers' cached documents follow
        try:
            return await work(store, settings)
        finally:
            await store.close()

    return asyncio.run(main())


def _line(c: Comment) -> str:
    who = c.author.handle or c.author.id
    text = "(deleted)" if c.deleted else plain_text(c.content_html).replace("\n", " ")
    if len(text) > 70:
        text = text[:69] + "…"
    flags = "" if c.visibility == "public" else f" [{c.visibility}]"
    return f"{c.id:>6}  {c.status:<8}  {c.article:<24}  {who}{flags}: {text}"


def cmd_comments(args: argparse.Namespace) -> int:
    async def work(store: Store, settings: config.Settings) -> int:
        if args.action == "list":
            async with store.connect() as conn:
                found = await comment_views.list_comments(conn, status=args.status, slug=args.article,
                                                          limit=args.limit)
            for item in found:
                print(_line(item))
            if not found:
                print("no comments")
            return 0
        if args.id is None:
            raise BadRequest(f"comments {args.action} needs a comment id")
        async with store.begin() as conn:
            c: Comment | None
            if args.action == "delete":
                c = await comment_views.get_comment(conn, args.id)
                if c is not None:
                    c = await store_comments.erase(conn, settings, c, utcnow())
            else:
                status = "approved" if args.action == "approve" else "rejected"
                c = await store_comments.set_status(conn, settings, args.id, status)
        if c is None:
            raise NotFound(f"no comment with id {args.id}")
        print(_line(c))
        return 0

    return _run(args, work)


def cmd_block(args: argparse.Namespace) -> int:
    async def work(store: Store, settings: config.Settings) -> int:
        async with store.begin() as conn:
            kind, value, new = await moderation.add_block(conn, args.kind or moderation.guess_kind(args.value),
                                                          args.value, utcnow())
            rejected = await store_comments.reject_blocked(conn, settings)
        print(f"{'blocked' if new else 'already blocked'} {kind} {value}; {rejected} comment(s) rejected")
        return 0

    return _run(args, work)


def cmd_unblock(args: argparse.Namespace) -> int:
    async def work(store: Store, settings: config.Settings) -> int:
        kind = args.kind or moderation.guess_kind(args.value)
        async with store.begin() as conn:
            removed = await moderation.remove_block(conn, kind, args.value)
        if not removed:
            raise NotFound(f"no {kind} block for {args.value}")
        print(f"unblocked {kind} {args.value}")
        return 0

    return _run(args, work)


def cmd_blocks(args: argparse.Namespace) -> int:
    async def work(store: Store, settings: config.Settings) -> int:
        async with store.connect() as conn:
            stored: list[dict[str, Any]] = await moderation.list_blocks(conn)
        for b in stored:
            print(f"{b['kind']:<7} {b['value']}")
        for d in settings.blocked_domains:
            print(f"domain  {d}  (configuration)")
        for a in settings.blocked_actors:
            print(f"actor   {a}  (configuration)")
        if not (stored or settings.blocked_domains or settings.blocked_actors):
            print("no blocks")
        return 0

    return _run(args, work)
