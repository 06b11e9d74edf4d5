"""The registry of subject kinds: one entry per kind, which every reader iterates.

prometheus/client_python's registry is the model: a kind's module builds its
:class:`SubjectKind` and registers it (``REGISTRY.register(KIND)``), and preflight, the
worker, ``status``, ``/metrics``, the HTTP API and ``report`` ask the registry instead of
naming kinds. Entries hold functions, not their modules' imports: reading the registry
costs what ``status`` costs, and a handler's (numpy, scipy) is imported when a worker
makes one.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from ..config import (
    ConfigError,
    PolicySection,
    add_policy_loader,
    register_policy_check,
    register_section,
    unregister_policy_check,
    unregister_section,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ..config import Policy
    from ..pipeline import Handler
    from ..presentation._report import ReportSection
    from ..store import Snapshot

__all__ = ["REGISTRY", "ApiRoute", "SubjectKind", "SubjectRegistry"]

HandlerFactory = Callable[["Policy"], "Handler"]
Document = msgspec.Struct | Mapping[str, Any]
"""What a kind shows: a Struct (the built-in kinds'), or a mapping."""

# Topics of the monitor itself, beside the kinds' input topics.
OUTPUT_TOPICS = ("decisions", "dlq")
# Paths of the HTTP API a kind's collection may not take.
RESERVED_COLLECTIONS = ("gates", "flagger")


@dataclass(frozen=True)
class ApiRoute:
    """``GET /v1/COLLECTION/NAME`` of the HTTP API: one subject of a kind, by name.

    ``answer`` gets a snapshot of that one subject (one read) and returns its document,
    or None for a name it does not know (404 ``unknown NOUN 'NAME'``); gates in a
    mapping's ``gates`` are shown as the contract's ``GATE`` (a Struct shows its own).
    ``unreadable``, when given, answers while the state cannot be read (else 503), with
    the count of such requests in a row about the subject: the agents' fail-safe.
    """

    kind: str
    noun: str
    answer: Callable[[Snapshot, str], Document | None]
    unreadable: Callable[[Policy, str, int, Exception], Document] | None = None


@dataclass(frozen=True)
class SubjectKind:
    """Everything of one kind of subject that the rest of driftgate reaches.

    Parameters
    ----------
    name
        The slice's name (``labels``, ``experiments``).
    kinds
        The model kinds its subjects are stored under (``stream``): what ``report``
        looks a subject up in.
    handlers
        Input topic (short name) -> handler factory; preflight creates the topics, the
        worker runs an agent per topic.
    events
        Whether the topics carry driftgate's own JSON events (a schema, ``produce`` and
        ``replay`` take them); OpenTelemetry's formats do not.
    policy
        Its sections of the policy file beside the built-in ones: a dataclass and its
        check each (read into ``Policy.sections``).
    check_policy
        Its checks of the whole policy (the built-in kinds' sections are fields of
        :class:`~monitor.config.Policy`, overridden per agent and experiment).
    gate_parts
        Gate -> the label that tells apart the several verdicts the gate gives one
        subject (``covariate_drift`` -> ``covariate``), for its gates judged in parts.
    status
        Its section of ``status --json``, from a snapshot and the time now: its keys of
        the document, as a Struct's fields (or a mapping's).
    status_lines
        Its lines of ``status``, from its section.
    metrics
        Its Prometheus families, from a snapshot (at scrape time).
    api
        Its collections of the HTTP API.
    report
        Writes its section of ``report SUBJECT`` into a memo for a subject of one of
        ``kinds``: ``(memo, snapshot, subject, audit entries, now)``.
    report_nouns
        What ``report`` calls a subject of this kind in its error message.
    commands
        Adds its commands to the CLI, given ``monitor.cli``'s ``Commands``.
    """

    name: str
    kinds: tuple[str, ...] = ()
    handlers: Mapping[str, HandlerFactory] = field(default_factory=dict)
    events: bool = True
    policy: tuple[PolicySection, ...] = ()
    check_policy: Callable[[Policy], None] | None = None
    gate_parts: Mapping[str, str] = field(default_factory=dict)
    status: Callable[[Snapshot, float | None], Document] | None = None
    status_lines: Callable[[Any], Iterable[str]] | None = None
    metrics: Callable[[Snapshot], Iterable[Metric]] | None = None
    api: Mapping[str, ApiRoute] = field(default_factory=dict)
    report: ReportSection | None = None
    report_nouns: tuple[str, ...] = ()
    commands: Callable[[Any], None] | None = None

    def holds(self, snapshot: Snapshot, subject: str) -> bool:
        """Whether ``subject`` is one of this kind's, in ``snapshot``."""
        return any(subject in snapshot.section(kind) for kind in self.kinds)


class SubjectRegistry:
    """The subject kinds, in the order registered (the order every reader shows them).

    The built-in kinds' modules are imported on first use; :meth:`load` imports more
    (``DRIFTGATE_SUBJECTS``), each registering its kind as it is imported.
    """

    def __init__(self, builtin: Sequence[str]) -> None:
        self._builtin = tuple(builtin)
        self._kinds: dict[str, SubjectKind] = {}
        self._builtin_names: set[str] = set()
        self._loading_builtin = False
        self._loaded = False
        # The metrics and HTTP threads read it too: none sees half the built-in kinds.
        self._lock = threading.RLock()

    def register(self, kind: SubjectKind) -> SubjectKind:
        """Add ``kind`` (again: nothing changes); returns it. A second kind of the same
        name, or one that claims another's topic or collection, is refused."""
        known = self._kinds.get(kind.name)
        if known is kind:
            return kind
        if known is not None:
            raise ValueError(f"a subject kind named {kind.name!r} is registered already")
        for other in self._kinds.values():
            for what, mine, theirs in (
                ("topic", kind.handlers, other.handlers),
                ("HTTP API collection", kind.api, other.api),
            ):
                taken = sorted(set(mine) & set(theirs))
                if taken:
                    raise ValueError(f"{what} {taken[0]!r} of {kind.name!r} is {other.name!r}'s")
        clash = sorted(
            (set(kind.handlers) & set(OUTPUT_TOPICS)) | (set(kind.api) & set(RESERVED_COLLECTIONS))
        )
        if clash:
            raise ValueError(f"{clash[0]!r} of {kind.name!r} is driftgate's own")
        done: list[PolicySection] = []
        try:
            for section in kind.policy:
                register_section(section)
                done.append(section)
            if kind.check_policy is not None:
                register_policy_check(kind.name, kind.check_policy)
        except ValueError:
            for section in done:  # all of the kind or nothing
                unregister_section(section)
            raise
        self._kinds[kind.name] = kind
        if self._loading_builtin:
            self._builtin_names.add(kind.name)
        return kind

    def unregister(self, kind: SubjectKind) -> None:
        if self._kinds.get(kind.name) is kind:
            del self._kinds[kind.name]
            for section in kind.policy:
                unregister_section(section)
            if kind.check_policy is not None:
                unregister_policy_check(kind.name, kind.check_policy)

    def load(self, modules: Iterable[str] = ()) -> None:
        """Import the built-in kinds' modules (once), then ``modules``; each registers
        its kind. A module that cannot be imported is a :class:`ConfigError`."""
        with self._lock:
            if not self._loaded:
                self._loaded, self._loading_builtin = True, True
                try:
                    for name in self._builtin:
                        importlib.import_module(name)
                finally:
                    self._loading_builtin = False
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ConfigError(
                    f"DRIFTGATE_SUBJECTS names {name!r}, which cannot be imported: {exc}"
                ) from exc

    def __iter__(self) -> Iterator[SubjectKind]:
        self.load()
        return iter(list(self._kinds.values()))

    def handlers(
        self, events: bool | None = None, builtin: bool = False
    ) -> dict[str, HandlerFactory]:
        """Input topic -> handler factory, of every kind (``events``: only the kinds
        whose topics carry driftgate's own events, or only the others; ``builtin``: only
        driftgate's own kinds)."""
        return {
            topic: make
            for kind in self
            if (events is None or kind.events == events)
            and (not builtin or kind.name in self._builtin_names)
            for topic, make in kind.handlers.items()
        }

    def topics(self) -> tuple[str, ...]:
        """Every topic a deployment needs (short names): the input topics, then the
        decisions and the dead letters."""
        return (*(topic for kind in self for topic in kind.handlers), *OUTPUT_TOPICS)

    def gate_parts(self) -> dict[str, str]:
        """Gate -> the label of its parts, for the gates judged in parts."""
        return {gate: part for kind in self for gate, part in kind.gate_parts.items()}

    def api(self) -> dict[str, ApiRoute]:
        return {name: route for kind in self for name, route in kind.api.items()}

    def report_sections(self, snapshot: Snapshot, subject: str) -> list[ReportSection]:
        """The report sections of the kinds that hold ``subject``, in the order registered."""
        return [k.report for k in self if k.report is not None and k.holds(snapshot, subject)]

    def report_nouns(self) -> str:
        """``stream, experiment or agent``: what ``report`` takes, in words."""
        nouns = [noun for kind in self for noun in kind.report_nouns]
        return " or ".join(filter(None, (", ".join(nouns[:-1]), nouns[-1]))) if nouns else ""


REGISTRY = SubjectRegistry(
    (
        "monitor.slices._labels",
        "monitor.slices._experiments",
        "monitor.slices._otlp",
    )
)
"""The subject kinds of this process: the built-in ones, and those of ``DRIFTGATE_SUBJECTS``."""

# Every policy file read sees the built-in kinds' sections and checks (config imports no
# slice: it calls this back).
add_policy_loader(REGISTRY.load)
