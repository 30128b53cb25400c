"""`fedibridge move --to @new@example.social`, `fedibridge pin SLUG`, `fedibridge unpin SLUG`.

Like the article commands, they write to the server's database: the running worker delivers what they queue.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from . import account_move, pins
from .cli_articles import _open
from .http_client import GuardedClient, Signer
from .keys import load_keypair


def add_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("move", cmd_move, "move the blog's followers to another account (its alsoKnownAs must list this one)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--to", metavar="ACCOUNT", help="the new account: @user@host or its actor URL")
    group.add_argument("--cancel", action="store_true",
                       help="forget the move: the actor loses movedTo and publishing works again")
    p = add("pin", cmd_pin, "pin an article to the top of the blog's fediverse profile (sends an Add)")
    p.add_argument("slug")
    p = add("unpin", cmd_unpin, "unpin an article (sends a Remove)")
    p.add_argument("slug")


def cmd_move(args: argparse.Namespace) -> int:
    async def go() -> int:
        settings, store, site = await _open(args)
        try:
            if args.cancel:
                target = await account_move.cancel(store)
                print(f"move to {target} cancelled: publishing works again (followers who moved stay there)"
                      if target else "the blog had not moved: nothing to cancel")
                return 0
            keys = load_keypair(settings.keys_path)
            signer = Signer(keys.private_key, site.key_id, settings.signature_scheme)
            async with GuardedClient(user_agent=settings.agent, signer=signer,
                                     allow_private=settings.allow_private_addresses,
                                     timeout=settings.fetch_timeout) as client:
                result = await account_move.move(store, site, client, args.to,
                                                 allow_http=settings.allow_private_addresses,
                                                 delay=settings.document_cache_seconds + 1)
        finally:
            await store.close()
        print(f"moved to {result.target}: the actor now shows movedTo, publishing is stopped")
        print(f"  {result.activity} queued for {result.queued} inbox(es); Mastodon moves each follower "
              "to the new account when it arrives")
        return 0

    return asyncio.run(go())


def _pin(args: argparse.Namespace, pinned: bool) -> int:
    async def go() -> int:
        _, store, site = await _open(args)
        try:
            result = await pins.set_pinned(store, site, args.slug, pinned)
        finally:
            await store.close()
        state = "pinned" if pinned else "unpinned"
        if not result.changed:
            print(f"{args.slug}: already {state}")
        else:
            print(f"{args.slug}: {state} — {result.activity} queued for {result.queued} inbox(es)")
        return 0

    return asyncio.run(go())


def cmd_pin(args: argparse.Namespace) -> int:
    return _pin(args, True)


def cmd_unpin(args: argparse.Namespace) -> int:
    return _pin(args, False)

