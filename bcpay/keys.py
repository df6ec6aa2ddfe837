"""Key rotation: re-encrypt every stored secret under a new ``app.secret_key``.

``bcpay rotate-key`` runs :func:`rotate_key` in one transaction: either every
access token, merchant secret (current and old) and webhook secret is sealed
under the new key, or nothing changes. Values already under the new key are
accepted, so a second run after an interrupted switch-over is harmless. After
it, the operator sets ``app.secret_key`` to the new key (the old key no longer
opens anything).
"""

from __future__ import annotations

from sqlalchemy import select, update

from bcpay.crypto import Vault, check_key
from bcpay.errors import InvalidInputError
from bcpay.storage.db import Database
from bcpay.storage.schema import stores

# The encrypted columns of ``stores`` and the name each is reported under.
SECRET_COLUMNS = {
    "access_token_enc": "access tokens",
    "celerypay_secret_enc": "merchant secrets",
    "celerypay_old_secret_enc": "old merchant secrets",
    "webhook_secret_enc": "webhook secrets",
}


async def rotate_key(db: Database, *, old_key: str, new_key: str) -> dict[str, int]:
    """Re-encrypt every stored secret from ``old_key`` to ``new_key``; counts per kind."""
    check_key(new_key, "new key")
    if new_key == old_key:
        raise InvalidInputError("the new key is the current key", code="same_key")
    opener = Vault(new_key, old_key)  # reads values under either key
    sealer = Vault(new_key)
    counts = dict.fromkeys(SECRET_COLUMNS.values(), 0)
    columns = [stores.c[name] for name in SECRET_COLUMNS]
    async with db.transaction() as conn:
        rows = (await conn.execute(select(stores.c.id, *columns).with_for_update())).mappings().all()
        for row in rows:
            changes: dict[str, str] = {}
            for name, label in SECRET_COLUMNS.items():
                if row[name]:
                    changes[name] = sealer.seal(opener.open(row[name]))
                    counts[label] += 1
            if changes:
                await conn.execute(update(stores).where(stores.c.id == row["id"]).values(**changes))
    return counts
