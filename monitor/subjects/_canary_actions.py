"""The manual canary actions (``driftgate rollback``, ``promote``, ``pause``, ``resume``):
which phase of a bundle allows each, the promotion ladder's next step, and the canary
event that carries the action down the same path as a deployment controller's."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["ACTION_PHASES", "already_done", "manual_event", "next_percent", "refusal"]

# The phases of the agent's current bundle in which each manual action means something
# (the worker's lifecycle, `_step`): a rolled-back bundle is settled and never reopened.
ACTION_PHASES = {
    "promote": ("monitoring", "paused", "promoted"),
    "pause": ("monitoring",),
    "resume": ("paused",),
}


def already_done(action: str, phase: str) -> bool:
    """A rollback of a rolled-back bundle: a no-op, nothing to send.

    >>> already_done("rollback", "rolled_back"), already_done("rollback", "monitoring")
    (True, False)
    """
    return action == "rollback" and phase == "rolled_back"


def refusal(action: str, phase: str) -> str | None:
    """Why a bundle in ``phase`` refuses ``action`` (and what to do instead), or None.

    >>> refusal("resume", "monitoring")
    'cannot resume it (nothing to resume)'
    >>> refusal("promote", "rolled_back")
    'cannot promote it (deploy a new bundle)'
    >>> refusal("promote", "paused") is None
    True
    """
    if action in ACTION_PHASES and phase not in ACTION_PHASES[action]:
        cure = "deploy a new bundle" if phase == "rolled_back" else "nothing to " + action
        return f"cannot {action} it ({cure})"
    return None


def next_percent(ladder: Sequence[int], current: float) -> int:
    """The ladder's first step above ``current``; 100 past its top.

    >>> next_percent((10, 50, 100), 10), next_percent((10, 50, 100), 0), next_percent((10, 50), 50)
    (50, 10, 100)
    """
    return next((step for step in ladder if step > current), 100)


def manual_event(
    agent: str, bundle: str, action: str, actor: str, fields: dict[str, Any]
) -> dict[str, Any]:
    """The canary event of a manual action on ``agent``'s current bundle; ``fields`` that
    are None are left out."""
    return {
        "event_id": f"cli-{uuid.uuid4()}",
        "ts": time.time(),
        "agent": agent,
        "bundle_id": bundle,
        "action": action,
        "actor": actor,
        **{name: value for name, value in fields.items() if value is not None},
    }
