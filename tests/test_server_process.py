"""What a long-lived ``bcpay serve`` process does for itself at start-up and shutdown."""

from __future__ import annotations

import gc

from bcpay.server.app import create_app
from tests.world import world_settings


async def test_a_long_lived_server_freezes_its_start_up_heap_until_shutdown(
    sqlite_url: str, secret_key: str,
) -> None:
    """Start-up objects leave the collector's sight while serving (no long full collections), and come back."""
    gc.unfreeze()
    app = create_app(world_settings(sqlite_url, secret_key), long_lived=True)
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, tables and app, not a handful
        assert app.state.runtime is not None
    assert gc.get_freeze_count() == 0


async def test_a_server_built_for_tests_leaves_the_collector_alone(sqlite_url: str, secret_key: str) -> None:
    """Without ``long_lived`` nothing is frozen (many apps come and go in one test process)."""
    gc.unfreeze()
    app = create_app(world_settings(sqlite_url, secret_key))
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
