"""Fixtures of the HA tests: `cluster` (tests/ha/cluster.py)."""

from tests.ha.cluster import cluster

__all__ = ["cluster"]
