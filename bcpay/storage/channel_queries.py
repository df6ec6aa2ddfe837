"""The ``channels`` table: a store's storefront channels and their sites (schema 0012).

Kept apart from :mod:`bcpay.storage.queries` because it is one table with its
own record; callers own the transaction as there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from bcpay.storage.db import Conn
from bcpay.storage.schema import channels, stores


@dataclass(frozen=True)
class ChannelRecord:
    """One storefront channel of a store, as bcpay last read it."""

    store_id: int
    channel_id: int
    name: str
    platform: str
    status: str
    site_url: str
    urls: tuple[tuple[str, str], ...]
    checkout_customized: bool | None
    settings: dict[str, Any] = field(default_factory=dict)
    script_uuid: str | None = None
    script_hash: str | None = None
    read_at: datetime | None = None

    def url_of(self, kind: str) -> str | None:
        """The first site URL of ``kind`` (primary, canonical, checkout)."""
        return next((u for t, u in self.urls if t == kind), None)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> ChannelRecord:
        """Build from a ``channels`` row."""
        urls = json.loads(row["urls_json"] or "[]")
        settings = json.loads(row["settings_json"] or "{}")
        return cls(
            store_id=row["store_id"],
            channel_id=row["channel_id"],
            name=row["name"],
            platform=row["platform"],
            status=row["status"],
            site_url=row["site_url"],
            urls=tuple((str(t), str(u)) for t, u in urls),
            checkout_customized=row["checkout_customized"],
            settings=settings if isinstance(settings, dict) else {},
            script_uuid=row["script_uuid"],
            script_hash=row["script_hash"],
            read_at=row["read_at"],
        )


async def list_channels(conn: Conn, store_id: int) -> list[ChannelRecord]:
    """Every channel bcpay knows of the store, by channel id."""
    query = select(channels).where(channels.c.store_id == store_id).order_by(channels.c.channel_id)
    return [ChannelRecord.from_row(r) for r in (await conn.execute(query)).mappings()]


async def installed_channels(conn: Conn) -> list[tuple[str, ChannelRecord]]:
    """(store hash, channel) of every installed store, for the CORS origins."""
    query = (
        select(stores.c.store_hash, channels)
        .join(stores, stores.c.id == channels.c.store_id)
        .where(stores.c.installed.is_(True))
        .order_by(channels.c.store_id, channels.c.channel_id)
    )
    return [(r["store_hash"], ChannelRecord.from_row(r)) for r in (await conn.execute(query)).mappings()]


def _values(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "urls" in out:
        out["urls_json"] = json.dumps([list(pair) for pair in out.pop("urls")])
    if "settings" in out:
        out["settings_json"] = json.dumps(out.pop("settings"), sort_keys=True)
    unknown = set(out) - set(channels.c.keys())
    if unknown:
        raise ValueError(f"not columns of channels: {sorted(unknown)}")
    return out


async def upsert_channel(conn: Conn, store_id: int, channel_id: int, now: datetime, **values: Any) -> None:
    """Create the channel's row or update the given columns (``urls`` and ``settings`` as Python values)."""
    given = _values(values)
    found = (await conn.execute(
        select(channels.c.id).where(channels.c.store_id == store_id, channels.c.channel_id == channel_id)
    )).first()
    if found is None:
        given.setdefault("status", "active")
        given.setdefault("read_at", now)
        await conn.execute(insert(channels).values(store_id=store_id, channel_id=channel_id, updated_at=now,
                                                   **given))
    else:
        await conn.execute(update(channels).where(channels.c.id == found[0]).values(updated_at=now, **given))


async def update_channel(conn: Conn, store_id: int, channel_id: int, now: datetime, **values: Any) -> None:
    """Update some columns of a known channel."""
    await conn.execute(
        update(channels)
        .where(channels.c.store_id == store_id, channels.c.channel_id == channel_id)
        .values(updated_at=now, **_values(values))
    )
