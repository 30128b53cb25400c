"""The blog actor's RSA key pair and the admin token: created once, never overwritten, private files 0600."""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import ConfigError

PRIVATE = "private.pem"
PUBLIC = "public.pem"
TOKEN = "admin-token"


@dataclass(frozen=True)
class KeyPair:
    private_key: rsa.RSAPrivateKey
    public_pem: str


def _unwritable(keys_dir: Path, exc: OSError) -> ConfigError:
    """One line naming the directory and the uid that needs write access (Docker bind mounts, other owners)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    who = f"uid {uid}, the user fedibridge runs as" if uid is not None else "the user fedibridge runs as"
    owner = ""
    try:
        owner = f" (it belongs to uid {keys_dir.stat().st_uid})"
    except OSError:
        pass
    where = keys_dir.resolve()
    fix = f"chown {uid} {where}" if uid is not None else f"give it write access to {where}"
    return ConfigError(f"invalid setting keys_dir: cannot write to {where}{owner}: {exc.strerror}; "
                       f"{who} needs write access to create the key pair, e.g. `{fix}`")


def _write_private(path: Path, data: bytes) -> None:
    """Create with 0600 from the start, complete or not at all, never over an existing file.

    Written to a temporary name then hard-linked into place: a crash or a full disk leaves no empty
    private.pem that would block the next start, and a concurrent first start keeps the other's key.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        if not path.exists():
            raise
    except OSError as exc:
        raise _unwritable(path.parent, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _mkdir(keys_dir: Path) -> None:
    try:
        keys_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(keys_dir, exc) from None


def ensure_keypair(keys_dir: Path) -> tuple[KeyPair, bool]:
    """Load the pair, generating RSA-2048 first if there is none. Returns (pair, created)."""
    private = keys_dir / PRIVATE
    created = False
    if not private.exists():
        _mkdir(keys_dir)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(private, pem)
        created = True
    pair = load_keypair(keys_dir)
    public = keys_dir / PUBLIC
    if not public.exists():
        try:
            public.write_text(pair.public_pem, encoding="ascii")
        except OSError as exc:
            raise _unwritable(keys_dir, exc) from None
    return pair, created


def load_keypair(keys_dir: Path) -> KeyPair:
    """Read the private key; the public key is derived from it so the two can never disagree."""
    private = keys_dir / PRIVATE
    try:
        data = private.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"invalid setting keys_dir: {private} does not exist (run `fedibridge init`)") from None
    except OSError as exc:
        raise ConfigError(f"invalid setting keys_dir: cannot read {private}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        msg = f"invalid setting keys_dir: {private} is not an unencrypted PEM private key ({exc})"
        raise ConfigError(msg) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"invalid setting keys_dir: {private} is not an RSA key (the fediverse expects RSA)")
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    return KeyPair(key, public_pem)


def permission_problem(path: Path) -> str | None:
    """Say what is wrong with a secret file's mode, like ssh does, or None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    if mode & 0o077:
        return f"{path} has mode {mode:04o}; it should be readable by its owner only (chmod 600 {path})"
    return None


def ensure_admin_token(keys_dir: Path) -> tuple[str, bool]:
    """The admin token used when none is configured: generated once into keys/admin-token (0600)."""
    path = keys_dir / TOKEN
    if path.exists():
        try:
            return path.read_text(encoding="ascii").strip(), False
        except OSError as exc:
            raise ConfigError(f"invalid setting keys_dir: cannot read {path}: {exc.strerror}") from None
    _mkdir(keys_dir)
    token = secrets.token_urlsafe(32)
    _write_private(path, (token + "\n").encode("ascii"))
    return path.read_text(encoding="ascii").strip(), True
