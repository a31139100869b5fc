"""The long-running service: triggers (poll, watch, webhook), the reconcile loop, systemd."""
