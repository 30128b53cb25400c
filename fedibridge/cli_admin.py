"""`fedibridge admin-passphrase`: print the passphrase (and address) of the browser moderation page."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from . import config
from .admin_passphrase import passphrase
from .keys import ensure_admin_token


def add_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    add("admin-passphrase", cmd_passphrase, "print the sign-in passphrase of the moderation page (/admin)")


def cmd_passphrase(args: argparse.Namespace) -> int:
    settings = config.load(getattr(args, "config", None))  # needs no database: only the token
    token = settings.admin_token or ensure_admin_token(settings.keys_path)[0]  # the one serve uses (or will)
    print(f"moderation page: {settings.base}/admin")
    print(f"passphrase:      {passphrase(token)}  (or the admin token itself)")
    return 0
