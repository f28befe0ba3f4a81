-- Runs once in the proxy's database after the cluster is created (native and Compose).
-- pg_stat_statements is preloaded by the server's command line; this makes it queryable.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
