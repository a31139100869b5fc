"""The status page served by the daemon on `[ui] listen` (docs/status-page.md)."""
