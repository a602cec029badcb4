"""Alembic environment: runs on the connection the engine hands it
(``config.attributes["connection"]``), so migrations work with the async
drivers (aiosqlite, asyncpg) from inside the engine's event loop."""

from __future__ import annotations

from alembic import context

from adapters.db.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through adapters.db.migrate (python run_engine.py db upgrade)")
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
