"""The tests' view of a local agent fleet (see gitopsd.demo.local_fleet)."""

from gitopsd.demo.local_fleet import TOKEN, LocalFleet, running_fleet

Fleet = LocalFleet

__all__ = ["TOKEN", "Fleet", "running_fleet"]
