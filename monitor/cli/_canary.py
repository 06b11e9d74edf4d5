"""``driftgate rollback``, ``promote``, ``pause`` and ``resume``: a canary event for the
agent's current bundle (the rules are in :mod:`monitor.subjects._canary_actions`)."""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..config import _args as types
from ..slices import agent_status
from ._common import UsageError, load_settings, open_read_model, with_kafka

if TYPE_CHECKING:
    from ..events._views import AgentStatus
    from ._parser import Commands

__all__ = ["add_commands", "cmd_pause", "cmd_promote", "cmd_resume", "cmd_rollback"]


def _current_agent(settings: Settings, name: str) -> AgentStatus:
    """The agent's row of ``driftgate status``: its current bundle and phase."""
    agent = agent_status(open_read_model(settings).subject("experiment", name), name)
    if agent is None:
        raise UsageError(f"unknown agent {name!r}: no canary of it was ever deployed")
    return agent


def _canary_action(
    args: argparse.Namespace, action: str, agent: AgentStatus | None = None, **fields: Any
) -> int:
    """Publish a canary event for the agent's current bundle: the same path (decision,
    audit log) as the events of any deployment controller. Read from Redis first: an
    action its phase refuses is not sent (exit 2), and a rollback of a rolled-back bundle
    is a no-op, said so."""
    from ..runtime._kafka import send_events
    from ..subjects._canary_actions import already_done, manual_event, refusal

    settings = load_settings(args)
    agent = agent or _current_agent(settings, args.agent)
    bundle, phase = agent.bundle_id, agent.phase
    if already_done(action, phase):
        print(f"bundle {bundle} of {args.agent} is already rolled back: nothing sent")
        return 0
    refused = refusal(action, phase)
    if refused is not None:
        raise UsageError(f"bundle {bundle} of {args.agent} is {phase}: {refused}")
    event = manual_event(args.agent, bundle, action, args.actor or getpass.getuser(), fields)
    topic = settings.topic("canary")
    with_kafka(
        settings, send_events(settings, topic, [event], key=args.agent), f"sending to {topic}"
    )
    print(f"{action} of {args.agent} (bundle {bundle}) sent to {topic}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    return _canary_action(args, "rollback", rationale=args.reason)


def cmd_promote(args: argparse.Namespace) -> int:
    from ..subjects._canary_actions import next_percent

    settings = load_settings(args)
    agent = _current_agent(settings, args.agent)
    percent = args.percent
    if percent is None:
        ladder = settings.policy.for_agent(args.agent).canary.ladder
        percent = next_percent(ladder, agent.canary_percent)
    return _canary_action(args, "promote", agent, canary_percent=percent, rationale=args.reason)


def cmd_pause(args: argparse.Namespace) -> int:
    return _canary_action(args, "pause", rationale=args.reason)


def cmd_resume(args: argparse.Namespace) -> int:
    return _canary_action(args, "resume", rationale=args.reason)


def add_commands(commands: Commands) -> None:
    """``rollback``, ``promote``, ``pause`` and ``resume``: the experiments' slice's
    commands (``monitor.slices``)."""
    rollback = commands.add(
        "rollback",
        "roll back an agent's canary by hand (a canary event)",
        cmd_rollback,
    )
    rollback.add_argument("agent", type=types.subject_name, metavar="AGENT")
    rollback.add_argument("--reason", type=types.one_line, help="kept in the audit log")
    rollback.add_argument("--actor", type=types.one_line, help="who (default: the user name)")
    commands.connection_flags(rollback, kafka=True, redis_=True)

    promote = commands.add(
        "promote",
        "promote an agent's canary by hand (a canary event)",
        cmd_promote,
    )
    promote.add_argument("agent", type=types.subject_name, metavar="AGENT")
    promote.add_argument(
        "--percent", type=types.percent, help="in (0, 100]; default: the ladder's next step"
    )
    promote.add_argument("--reason", type=types.one_line, help="kept in the audit log")
    promote.add_argument("--actor", type=types.one_line, help="who (default: the user name)")
    commands.connection_flags(promote, kafka=True, redis_=True)

    for name, what, handler in (
        ("pause", "hold an agent's canary by hand (a canary event)", cmd_pause),
        ("resume", "resume an agent's paused canary (a canary event)", cmd_resume),
    ):
        manual = commands.add(name, what, handler)
        manual.add_argument("agent", type=types.subject_name, metavar="AGENT")
        manual.add_argument("--reason", type=types.one_line, help="kept in the audit log")
        manual.add_argument("--actor", type=types.one_line, help="who (default: the user name)")
        commands.connection_flags(manual, kafka=True, redis_=True)
