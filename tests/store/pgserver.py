"""A real PostgreSQL server for the tests: bench/pgserver.py, which the benchmark's
PostgreSQL rows start the same way (as an unprivileged user when root, on a free port)."""

from bench.pgserver import SUPERUSER, PgServer, pg_bin_dir, running_pg_server

__all__ = ["SUPERUSER", "PgServer", "pg_bin_dir", "running_pg_server"]
