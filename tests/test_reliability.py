"""``scripts/reliability.py`` scaled down for the default suite: real ``bcpay serve`` processes,
duplicated and shuffled notifications, BigCommerce 503s and 429s, ``kill -9``; nothing lost,
nothing applied twice, no dead job, no 5xx."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from reliability_lib import PG_ADMIN_DSN, Result, Run, Scenario


def assert_exactly_once(result: Result, log: list[str]) -> None:
    """The run's figures say every paid order got one status PUT and nothing else went wrong."""
    context = "\n".join([*log, *result.notes])
    assert result.paid > 0 and result.events > 0, context
    assert result.lost == 0 and result.double_applied == 0 and result.unpaid_marked_paid == 0, context
    assert result.status_puts == result.paid, context
    assert result.dead_jobs == 0 and result.queued_left == 0, context
    assert result.five_xx == 0 and result.undelivered == 0 and result.anomalies == 0, context
    assert result.ok, context
    # The faults really happened, or the figures above would prove nothing.
    assert result.duplicates > 0 and result.faults_503 > 0, context


async def test_one_sqlite_server_killed_mid_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """40 orders, one server on SQLite, one kill -9 and restart: each paid order is PUT to 11 once."""
    scenario = Scenario(name="sqlite-small", orders=40, database="sqlite", servers=1, workers=1, kills=(1, 1),
                        seed=3, lease_seconds=5, drain_timeout=45)
    log: list[str] = []
    result = await Run(scenario, say=log.append, workdir=tmp_path).execute()
    assert result.kills == 1, log
    assert_exactly_once(result, log)


def _pg_reachable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return repr(exc)
    return None


@pytest.mark.postgres
def test_two_postgres_servers_each_killed_once_lose_and_double_nothing(tmp_path: Path) -> None:
    """40 orders, two servers (2 workers each) on one PostgreSQL database, each killed once."""
    problem = _pg_reachable()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI and unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    scenario = Scenario(name="pg-small", orders=40, kills=(1, 1), seed=5, lease_seconds=15, drain_timeout=45)
    log: list[str] = []
    result = asyncio.run(Run(scenario, say=log.append, workdir=tmp_path).execute())
    assert result.kills == 2, log
    assert_exactly_once(result, log)
