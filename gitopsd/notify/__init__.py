"""Notifications: `[[notify]]` receivers told about rollouts and drift.

`events` names what can be told and maps engine events onto it, `bodies` builds the request
each kind of receiver wants (a documented JSON body, or Slack's incoming-webhook message),
`outbox` is the persistent, bounded queue (its own SQLite file in the state dir) and
`dispatcher` delivers from it in one asyncio task per receiver, with retries. Publishing
never waits for a receiver: a failing one can never slow a rollout.
"""
