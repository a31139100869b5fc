"""The request body each kind of receiver wants, built once when a notification is queued.

`webhook`: the JSON document of docs/operations.md ("Notifications"), schema
`gitopsd.notification/v1`. `slack`: Slack's incoming-webhook message (`text` as the
fallback shown in notifications, one mrkdwn `section` block), with `&`, `<` and `>`
escaped as Slack requires so that no text from a manifest or an agent can form a link or a
mention.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from gitopsd.notify.events import Notification

Kind = Literal["webhook", "slack"]
SCHEMA = "gitopsd.notification/v1"

_HEADLINES = {
    "rollout_started": "rollout started",
    "stage_passed": "stage passed",
    "waiting_for_approval": "waiting for approval",
    "rolled_back": "rolled back",
    "failed": "rollout failed",
    "completed": "rollout completed",
    "drift_found": "drift found",
}
_EMOJI = {
    "rolled_back": ":rewind:",
    "failed": ":x:",
    "completed": ":white_check_mark:",
    "drift_found": ":warning:",
    "waiting_for_approval": ":raised_hand:",
}


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def webhook_body(note: Notification, delivery: str) -> dict[str, Any]:
    """The documented JSON body; `id` is also sent as X-Gitopsd-Delivery (retries reuse it)."""
    doc = note.to_json()
    return {"schema": SCHEMA, "id": delivery, **doc, "at": iso(note.at)}


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(note: Notification) -> dict[str, Any]:
    """An incoming-webhook message: `text` plus one mrkdwn section."""
    headline = _HEADLINES[note.event]
    fn = slack_escape(f"{note.function} {note.version}".strip())
    text = f"gitopsd: {fn}: {headline}"
    lines = [f"{_EMOJI.get(note.event, ':information_source:')} *{fn}*: {headline}"]
    if note.step:
        lines.append(f"step: {slack_escape(note.step)}")
    if note.message:
        lines.append(slack_escape(note.message))
    context = [f"at {iso(note.at)}"]
    if note.commit:
        context.append(f"commit `{slack_escape(note.commit[:12])}`")
    if note.rollout:
        context.append(f"rollout `{slack_escape(note.rollout)}`")
    lines.append(" · ".join(context))
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}],
    }


def body_for(kind: Kind, note: Notification, delivery: str) -> dict[str, Any]:
    return webhook_body(note, delivery) if kind == "webhook" else slack_body(note)
