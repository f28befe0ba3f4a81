"""Putting the proxy's state back between matrix cells, so no cell inherits another's.

What carries over from one cell to the next otherwise:
- Redis: the router's usage counters and cached lookups (flushed).
- Postgres, where the proxy has a database: spend logs and daily spend rows grow with every
  request, end users are upserted for every `user` seen (so a "missing end user" becomes a
  present one after the first cell), and spend accumulates on keys and users until budgets
  trip. Those tables are emptied or their spend zeroed; end users the lab created for the run
  are kept, every other end user is removed.

Where the proxy has no database, the record says so instead of listing nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import psycopg
import redis

from proxylab.settings import LabSettings

logger = logging.getLogger(__name__)

# Tables that gain rows with requests. Not every LiteLLM release has every one of them;
# only those present are emptied, and the record lists which.
GROWING_TABLES = (
    "LiteLLM_SpendLogs", "LiteLLM_ErrorLogs", "LiteLLM_AuditLog",
    "LiteLLM_SpendLogToolIndex", "LiteLLM_SpendLogGuardrailIndex",
    "LiteLLM_DailyUserSpend", "LiteLLM_DailyTeamSpend", "LiteLLM_DailyTagSpend",
    "LiteLLM_DailyEndUserSpend", "LiteLLM_DailyOrganizationSpend", "LiteLLM_DailyAgentSpend",
    "LiteLLM_DailyToolSpend", "LiteLLM_DailyGatewayRequests",
)
# Tables whose rows stay but whose accumulated spend would carry over into budget checks.
SPEND_TABLES = ("LiteLLM_VerificationToken", "LiteLLM_UserTable", "LiteLLM_TeamTable",
                "LiteLLM_EndUserTable")
END_USER_TABLE = "LiteLLM_EndUserTable"


def reset_between_cells(settings: LabSettings, *, database_available: bool,
                        database_reason: str, kept_end_users: Iterable[str] = ()) -> dict:
    """Flush Redis and, where the proxy has a database, reset what requests wrote to it."""
    redis.Redis(host=settings.host, port=settings.redis_port, socket_timeout=5).flushall()
    record: dict = {"redis": "flushed"}
    if not database_available:
        record["database"] = f"no DB: {database_reason}"
        return record
    record["database"] = reset_proxy_tables(settings, kept_end_users)
    return record


def reset_proxy_tables(settings: LabSettings, kept_end_users: Iterable[str] = ()) -> dict:
    """Empty the growing tables, zero spend, keep only the lab's own end users.

    One transaction, so the proxy never sees a half-reset database.
    """
    kept = sorted(set(kept_end_users))
    with psycopg.connect(host=settings.host, port=settings.postgres_port,
                         user=settings.postgres_user, password=settings.postgres_password,
                         dbname=settings.postgres_db, connect_timeout=10) as connection:
        present = {name for (name,) in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        truncated = [name for name in GROWING_TABLES if name in present]
        if truncated:
            connection.execute("TRUNCATE " + ", ".join(f'"{name}"' for name in truncated))
        zeroed = []
        for name in SPEND_TABLES:
            if name in present and _has_column(connection, name, "spend"):
                connection.execute(f'UPDATE "{name}" SET spend = 0')
                zeroed.append(name)
        removed = 0
        if END_USER_TABLE in present:
            removed = connection.execute(
                f'DELETE FROM "{END_USER_TABLE}" WHERE NOT (user_id = ANY(%s))', (kept,)).rowcount
    logger.debug("database reset: %d tables emptied, spend zeroed in %d, %d end users removed",
                 len(truncated), len(zeroed), removed)
    return {"truncated": truncated, "spend_zeroed": zeroed, "end_users_removed": removed,
            "end_users_kept": len(kept)}


def _has_column(connection: psycopg.Connection, table: str, column: str) -> bool:
    return connection.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = %s AND column_name = %s", (table, column)).fetchone() is not None
