"""Resources as async context managers: whatever ends the block (its end, an
exception, a cancellation), what was opened is closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.db.repository import Database


async def test_a_database_used_with_async_with_is_closed_after_an_exception(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(RuntimeError, match="in the block"):
        async with Database(url) as db:
            await db.migrate()
            pool = db.engine.pool
            assert (await db.status())["executions"] == 0
            assert pool.checkedin() >= 1             # a connection kept by the pool
            raise RuntimeError("in the block")
    assert pool.checkedin() == 0 and db.engine.pool is not pool      # disposed: none kept


async def test_a_database_used_with_async_with_is_closed_when_the_task_is_cancelled(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    opened: asyncio.Future[Database] = asyncio.get_running_loop().create_future()

    async def user() -> None:
        async with Database(url) as db:
            await db.migrate()
            await db.status()
            opened.set_result(db)
            await asyncio.Event().wait()

    task = asyncio.create_task(user())
    db = await opened
    pool = db.engine.pool
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.checkedin() == 0 and db.engine.pool is not pool
