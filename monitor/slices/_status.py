"""The read side's documents, as ``msgspec`` Structs: ``status --json`` and an agent as
``status`` and the HTTP API show it (:class:`~monitor.events._views.AgentStatus`), from a
snapshot of the read model.

Each subject kind adds its section to the status document (``streams``; ``experiments``
and ``agents``; a registered kind's own keys), in the order the kinds registered, and
``ignored`` follows once something was skipped. Their JSON is the one the contract has
always had: :meth:`StatusDocument.to_builtins` gives it as dicts and lists, which
``--json`` prints as before.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from ..events._views import AgentStatus, ExperimentRow, StreamStatus
from ..store import Snapshot
from ._registry import REGISTRY

__all__ = [
    "ExperimentsStatus",
    "StatusDocument",
    "StreamsStatus",
    "agent_status",
    "status_document",
]

Section = msgspec.Struct | Mapping[str, Any]
"""A kind's part of the status document: its keys, as a Struct's fields (a mapping's for
a kind that keeps its documents untyped)."""


class StreamsStatus(msgspec.Struct):
    """``streams``: each stream's view as the worker wrote it (a view of an older worker
    lacks the later figures), with its late-label join and its retired versions."""

    streams: dict[str, StreamStatus]


class ExperimentsStatus(msgspec.Struct):
    """``experiments`` (each one's guardrails and split, as its view has them) and
    ``agents`` (each canary)."""

    experiments: dict[str, ExperimentRow]
    agents: dict[str, AgentStatus]


class StatusDocument(msgspec.Struct):
    """The ``driftgate status --json`` object of the contract."""

    sections: dict[str, Section]
    """Kind's name -> its section, in the order the kinds registered."""
    ignored: dict[str, dict[str, int]]
    """Topic -> reason -> records counted and skipped (OpenTelemetry input that carries
    nothing driftgate reads); shown once something was skipped."""

    def section(self, kind: str) -> Any:
        return self.sections[kind]

    def to_builtins(self) -> dict[str, Any]:
        """The document as dicts and lists: the sections' keys, then ``ignored``."""
        document: dict[str, Any] = {}
        for section in self.sections.values():
            document.update(msgspec.to_builtins(section))
        if self.ignored:  # only once something was skipped: the contract's three keys otherwise
            document["ignored"] = self.ignored
        return document


def status_document(snapshot: Snapshot, now: float | None = None) -> StatusDocument:
    """Each subject kind's section of ``status --json``, from one snapshot."""
    ignored: dict[str, dict[str, int]] = {}
    for (topic, reason), count in sorted(snapshot.ignored.items()):
        ignored.setdefault(topic, {})[reason] = count
    sections = {kind.name: kind.status(snapshot, now) for kind in REGISTRY if kind.status}
    return StatusDocument(sections, ignored)


def agent_status(snapshot: Snapshot, name: str, now: float | None = None) -> AgentStatus | None:
    """An agent as the HTTP API and ``status`` show it: its lifecycle, the hours its
    bundle has run (now), and every gate of it; None for an unknown agent."""
    view = snapshot.section("experiment").get(name, {}).get("agent")
    if not view:
        return None
    now = time.time() if now is None else now
    hours = max(0.0, (now - view["deployed_at"]) / 3600)
    # Checked as the worker wrote it (a field a newer worker adds is left out).
    agent = msgspec.convert({**view, "hours_running": hours, "gates": []}, AgentStatus)
    return msgspec.structs.replace(agent, gates=[*snapshot.gates_of("experiment", name)])
