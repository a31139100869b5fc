"""Outcome reporters: git notes on the manifest commit (and, later, forge statuses)."""
