"""Alembic environment: runs on the connection that `storage.migrate` hands over."""

from __future__ import annotations

from alembic import context

from glowing_fiesta.storage.schema import metadata

connection = context.config.attributes["connection"]
if connection.dialect.name == "postgresql":
    # Fail fast instead of queueing behind a long transaction and blocking every writer.
    connection.exec_driver_sql("SET lock_timeout = '10s'")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
