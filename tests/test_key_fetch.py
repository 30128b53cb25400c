"""Key fetches before the 202: unsigned first, signed when a secure-mode server asks for it.

A signed GET costs an RSA signature while the sender waits for its answer, and key documents are public
by design: Mastodon serves every actor's key unsigned, even in secure mode (a restricted document).
GoToSocial and the secure modes of Misskey and Akkoma answer an unsigned GET with 401: they get a signed
second knock, and their later key fetches are signed at once. Real servers on loopback play each side.
"""

from __future__ import annotations

import pytest

from .conftest import Bridge, BridgeFactory
from .remote import RemoteAccount, RemoteInstance
from .test_comment_flows import deliver, public, publish


def gets_of(remote: RemoteInstance, acct: RemoteAccount) -> list[tuple[str, bool]]:
    """(path, signed?) of each GET of the account's actor or key document, in order."""
    paths = {acct.id.removeprefix(remote.base), acct.key_id.split("#")[0].removeprefix(remote.base)}
    return [(path, signed) for path, signed in remote.gets if path in paths]


async def reply(bridge: Bridge, remote: RemoteInstance, acct: RemoteAccount, article_id: str, text: str) -> None:
    await deliver(bridge, remote, acct, remote.create(acct, remote.note(acct, text, article_id)))


@pytest.mark.parametrize(("secure", "expected"), [
    # a public server: its key and its profile, in one unsigned GET
    (False, [("/users/alice", False)]),
    # Mastodon in secure mode: the unsigned GET got the restricted document, enough for the key, not for
    # showing who wrote; the author's whole document came from a signed GET
    (True, [("/users/alice", False), ("/users/alice", True)]),
], ids=["public", "mastodon-secure-mode"])
async def test_a_mastodon_actor_is_fetched_unsigned_first(
        make_bridge: BridgeFactory, secure: bool, expected: list[tuple[str, bool]]) -> None:
    async with RemoteInstance(authorized_fetch=secure) as masto:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        alice = masto.add_actor("alice", "mastodon", name="Alice Lefèvre")
        await reply(bridge, masto, alice, article_id, "<p>Très juste « merci » ☕</p>")

        assert gets_of(masto, alice) == expected
        [comment] = (await public(bridge))["comments"]
        assert comment["author"]["name"] == "Alice Lefèvre"
        assert comment["author"]["avatar"] == f"{masto.base}/avatars/alice.png"


async def test_a_server_refusing_unsigned_fetches_gets_signed_ones(make_bridge: BridgeFactory) -> None:
    async with RemoteInstance(authorized_fetch=True) as gts:
        bridge = await make_bridge(moderation="open")
        article_id = await publish(bridge)
        carol = gts.add_actor("carol", "gotosocial", name="Carole")
        dave = gts.add_actor("dave", "gotosocial", name="Dave")

        await reply(bridge, gts, carol, article_id, "<p>D’accord 👍</p>")
        carol_gets = gets_of(gts, carol)
        assert carol_gets[:2] == [("/users/carol/main-key", False), ("/users/carol/main-key", True)]
        assert all(signed for _, signed in carol_gets[1:])

        # That server said it wants signatures: the next new actor's key is fetched signed at once.
        await reply(bridge, gts, dave, article_id, "<p>Moi aussi</p>")
        dave_gets = gets_of(gts, dave)
        assert dave_gets and all(signed for _, signed in dave_gets)

        names = sorted(c["author"]["name"] for c in (await public(bridge))["comments"])
        assert names == ["Carole", "Dave"]
