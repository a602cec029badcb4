"""Named locks one process at a time can hold on a database: one engine per
database, one post-trade process per database, one migration at a time.  A
process that dies loses its locks (the kernel drops a ``flock``, PostgreSQL
an advisory lock with its session), so a killed engine never leaves one
behind.  ``Database.exclusive`` and ``Database.try_exclusive`` are these."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import zlib
from collections.abc import AsyncIterator

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.config import sqlite_path

log = structlog.get_logger("engine.db")


@contextlib.asynccontextmanager
async def exclusive(engine: AsyncEngine, url: str, name: str) -> AsyncIterator[None]:
    """Hold a lock called ``name`` that one process at a time can hold on
    this database, waiting for it if another holds it; a process that dies
    loses it.  SQLite: ``flock`` on a file beside the database file;
    PostgreSQL: a session advisory lock on a connection kept for as long."""
    if url.startswith("sqlite"):
        db_file = sqlite_path(url)
        if db_file is None:
            yield                     # a private in-memory database: nobody else sees it
            return
        fd = os.open(f"{db_file}.{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("db_lock_waiting", lock=name, reason="another process holds it")
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)              # releases the lock
        return
    key = zlib.crc32(name.encode())
    async with engine.connect() as conn:
        if not (await conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({key})")).scalar():
            log.warning("db_lock_waiting", lock=name, reason="another process holds it")
            await conn.exec_driver_sql(f"SELECT pg_advisory_lock({key})")
        await conn.commit()
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")


@contextlib.asynccontextmanager
async def try_exclusive(engine: AsyncEngine, url: str, name: str) -> AsyncIterator[bool]:
    """``exclusive`` without waiting: yields whether this process holds it."""
    if url.startswith("sqlite"):
        db_file = sqlite_path(url)
        if db_file is None:
            yield True
            return
        fd = os.open(f"{db_file}.{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)
        return
    key = zlib.crc32(name.encode())
    async with engine.connect() as conn:
        held = bool((await conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({key})")).scalar())
        await conn.commit()
        try:
            yield held
        finally:
            if held:
                with contextlib.suppress(Exception):
                    await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
