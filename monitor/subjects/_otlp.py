"""OpenTelemetry over Kafka: GenAI spans as telemetry, evaluation results as label events.

``driftgate.otlp.spans`` and ``driftgate.otlp.logs`` take what the OpenTelemetry
Collector's Kafka exporter writes (``otlp_proto`` or ``otlp_json``, one export request per
message; :mod:`._otlp_wire` reads them). Each handler turns a batch into the very batch
its topic's counterpart takes (telemetry events grouped by experiment, label columns
grouped by stream) and folds it with that handler's own ``update``: the same statistics,
gates and fenced write, and no statistics of its own.

A GenAI span (one with ``gen_ai.operation.name``, ``gen_ai.provider.name`` or
``gen_ai.system``) becomes one telemetry event: latency from its duration, unit cost from
``gen_ai.usage.input_tokens`` / ``output_tokens`` and the policy's price of its model,
``primary_outcome`` 1 unless its status is ERROR, experiment, variant, unit and environment
from the attributes the policy names (``otlp`` section). A ``gen_ai.evaluation.result``
log record becomes a judge score, an oracle label or both, by the policy's mapping of its
``gen_ai.evaluation.name``. Records that lack what driftgate needs are counted by reason
(:class:`~monitor.pipeline.Ignored`) and skipped; a message that is no export request at
all goes to the dead-letter topic whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..config import EvaluationMapping, OtlpPolicy, Policy
from ..events._structs import MAX_MAGNITUDE, Guardrails, LabelEvent, TelemetryEvent
from ..pipeline import DeadLetter, DecodedBatch, Ignored, RawMessage, SubjectEvents
from ._decode import split_by_subject
from ._experiments import ExperimentModel, ExperimentState, TelemetryHandler
from ._labels import LabelColumns, LabelHandler, LabelModel, LabelState
from ._late_labels import response_digests
from ._otlp_wire import OtlpDecodeError, ValueOf, WireRecord, WireSpan, finite, log_records, spans
from ._telemetry import TelemetryColumns

__all__ = [
    "EVALUATION_EVENT",
    "OtlpLogHandler",
    "OtlpSpanHandler",
    "evaluation_events",
    "telemetry_events",
]

EVALUATION_EVENT = "gen_ai.evaluation.result"
# Any of these marks a span as a GenAI operation (semantic conventions: operation name and
# provider are required; gen_ai.system is the provider's older name).
GENAI_MARKERS = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system")
MODEL_ATTRIBUTES = ("gen_ai.request.model", "gen_ai.response.model")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
PRODUCTION = (None, "", "prod", "production")  # any other environment is staging: never acts


def _first(names: tuple[str, ...], attributes: Any, resource: Any, value_of: ValueOf) -> Any:
    """The first of ``names`` present, in the record's attributes, then its resource's."""
    for where in (attributes, resource):
        for name in names:
            raw = where.get(name)
            if raw is not None:
                value = value_of(raw)
                if value is not None and value != "":
                    return value
    return None


class _Lookup:
    """:func:`_first` with each resource's answers kept: the spans of one resource (a
    message holds one or a few) look their resource up once, not once per span."""

    def __init__(self, value_of: ValueOf) -> None:
        self.value_of = value_of
        self._resources: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._held: list[Any] = []  # the resources whose ids key the answers, kept alive

    def __call__(self, names: tuple[str, ...], attributes: Any, resource: Any) -> Any:
        value_of = self.value_of
        for name in names:
            raw = attributes.get(name)
            if raw is not None:
                value = value_of(raw)
                if value is not None and value != "":
                    return value
        key = (id(resource), names)
        if key not in self._resources:
            self._held.append(resource)
            self._resources[key] = _first(names, _NOTHING, resource, value_of)
        return self._resources[key]


_NOTHING: dict[str, Any] = {}


def _tokens(names: tuple[str, ...], attributes: Any, value_of: ValueOf) -> int | None:
    for name in names:
        raw = attributes.get(name)
        if raw is not None:
            value = value_of(raw)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
            return None  # present but no count: no cost rather than a wrong one
    return None


# --- spans --------------------------------------------------------------------------------


def telemetry_events(
    wire: list[WireSpan], value_of: ValueOf, policy: OtlpPolicy, ignored: Counter[str]
) -> list[TelemetryEvent]:
    """The telemetry events of a message's GenAI spans; each skipped span counted in
    ``ignored`` by reason (``not_genai``, ``no_experiment``, ``no_variant``, ``no_span_id``,
    ``bad_time``)."""
    events: list[TelemetryEvent] = []
    prices = policy.prices
    first = _Lookup(value_of)
    operation, provider, system = GENAI_MARKERS
    for span in wire:
        attributes, resource = span.attributes, span.resource
        if not (operation in attributes or provider in attributes or system in attributes):
            ignored["not_genai"] += 1
            continue
        experiment = first(policy.experiment_attributes, attributes, resource)
        if experiment is None:
            ignored["no_experiment"] += 1
            continue
        variant = first(policy.variant_attributes, attributes, resource)
        if variant is None:
            ignored["no_variant"] += 1
            continue
        if not span.span_id:
            ignored["no_span_id"] += 1
            continue
        if span.end_ns <= 0 or span.end_ns < span.start_ns:
            ignored["bad_time"] += 1
            continue
        unit = first(policy.unit_attributes, attributes, resource) or span.trace_id
        environment = first(policy.environment_attributes, attributes, resource)
        cost = None
        if prices:
            model = first(MODEL_ATTRIBUTES, attributes, resource)
            price = prices.get(model) if isinstance(model, str) else None
            if price is not None:
                spent_in = _tokens(INPUT_TOKENS, attributes, value_of)
                spent_out = _tokens(OUTPUT_TOKENS, attributes, value_of)
                if spent_in is not None or spent_out is not None:
                    cost = (
                        (spent_in or 0) * price.input_per_million
                        + (spent_out or 0) * price.output_per_million
                    ) / 1e6
        events.append(
            TelemetryEvent(
                event_id=f"{span.trace_id}{span.span_id}",
                ts=span.end_ns / 1_000_000_000,  # int / int: correctly rounded
                experiment_id=str(experiment),
                unit_id=str(unit or span.span_id),
                variant=str(variant),
                primary_outcome=0.0 if span.error else 1.0,
                guardrails=Guardrails(
                    latency_ms=(span.end_ns - span.start_ns) / 1_000_000,
                    unit_cost=cost if cost is None or cost <= MAX_MAGNITUDE else None,
                ),
                environment="prod" if environment in PRODUCTION else "staging",
            )
        )
    return events


_Found = TypeVar("_Found")


def _decode_each(
    messages: Sequence[RawMessage], decode: Callable[[bytes, Counter[str]], list[_Found]]
) -> tuple[DecodedBatch, list[_Found], list[int]]:
    """The batch (its dead letters: the messages ``decode`` cannot decode; its tallies:
    the records it skips), what ``decode`` finds in each message and how many in each."""
    batch = DecodedBatch()
    found: list[_Found] = []
    counts: list[int] = []
    for message in messages:
        ignored: Counter[str] = Counter()
        try:
            decoded = decode(message.value or b"", ignored)
        except (OtlpDecodeError, UnicodeDecodeError) as exc:
            batch.dead_letters.append(_not_decodable(message, exc))
            decoded = []
        else:
            batch.ignored += _tallies(ignored, message)
        found += decoded
        counts.append(len(decoded))
    return batch, found, counts


def _tallies(ignored: Counter[str], message: RawMessage) -> list[Ignored]:
    return [
        Ignored(reason, count, message.partition, message.offset)
        for reason, count in sorted(ignored.items())
    ]


def _not_decodable(message: RawMessage, exc: Exception) -> DeadLetter:
    error = f"{type(exc).__name__}: {exc}"
    return DeadLetter(bytes(message.value or b""), error, message.partition, message.offset)


class OtlpSpanHandler:
    """``driftgate.otlp.spans``: GenAI spans folded as the telemetry handler folds events."""

    topic: str = "otlp.spans"

    def __init__(self, policy: Policy) -> None:
        self.telemetry = TelemetryHandler(policy)
        self.otlp = policy.otlp

    @property
    def model(self) -> ExperimentModel:
        return self.telemetry.model

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        batch, events, counts = _decode_each(
            messages, lambda value, ignored: telemetry_events(*spans(value), self.otlp, ignored)
        )
        if events:
            batch.subjects = split_by_subject(
                [event.experiment_id for event in events],
                [event.event_id for event in events],
                np.fromiter((event.ts for event in events), np.float64, len(events)),
                *_positions(messages, counts),
                TelemetryColumns.from_events(events),
            )
        return batch

    def update(
        self, subject: str, state: ExperimentState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        return self.telemetry.update(subject, state, events, now)


def _positions(messages: Sequence[RawMessage], counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each event's partition and offset: its message's."""
    partitions = np.repeat(np.fromiter((m.partition for m in messages), np.int64), counts)
    offsets = np.repeat(np.fromiter((m.offset for m in messages), np.int64), counts)
    return partitions, offsets


# --- evaluation results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation result as a label event, and the response it judged."""

    event: LabelEvent
    response_id: str


def _number(value: Any) -> float | None:
    number = finite(value)
    return number if number is not None and abs(number) <= MAX_MAGNITUDE else None


def _label(mapping: EvaluationMapping, value: Any, label: Any) -> float | None:
    """The oracle label: ``label`` through ``label_values`` (or as a number), else, for
    the ``label`` role, the score value."""
    if isinstance(label, str) and label:
        mapped = mapping.label_values.get(label)
        if mapped is not None:
            return _number(mapped)
        try:
            return _number(float(label))
        except ValueError:
            pass
    return _number(value) if mapping.role == "label" else None


def evaluation_events(
    wire: list[WireRecord], value_of: ValueOf, policy: OtlpPolicy, ignored: Counter[str]
) -> list[Evaluation]:
    """The label events of a message's evaluation results; each skipped record counted in
    ``ignored`` by reason (``not_evaluation``, ``evaluation_not_mapped``, ``no_stream``,
    ``no_response``, ``no_time``, ``no_score``, ``no_label``). An oracle label alone (the
    ``label`` role) is the late half of a pair: the label handler's join completes it with
    the score of the same response."""
    found: list[Evaluation] = []
    for record in wire:
        attributes, resource = record.attributes, record.resource
        name = record.event_name or value_of(attributes.get("event.name"))
        if name != EVALUATION_EVENT:
            ignored["not_evaluation"] += 1
            continue
        evaluation = value_of(attributes.get("gen_ai.evaluation.name"))
        mapping = policy.evaluations.get(evaluation) if isinstance(evaluation, str) else None
        if mapping is None:
            ignored["evaluation_not_mapped"] += 1
            continue
        stream = _first(policy.stream_attributes, attributes, resource, value_of) or mapping.stream
        if not stream:
            ignored["no_stream"] += 1
            continue
        response = value_of(attributes.get("gen_ai.response.id"))
        if not response and record.span_id and record.span_id.strip("0"):
            response = f"{record.trace_id}:{record.span_id}"
        if not response:
            ignored["no_response"] += 1
            continue
        if record.time_ns <= 0:
            ignored["no_time"] += 1
            continue
        value = value_of(attributes.get("gen_ai.evaluation.score.value"))
        label = value_of(attributes.get("gen_ai.evaluation.score.label"))
        s = None if mapping.role == "label" else _number(value)
        y = None if mapping.role == "score" else _label(mapping, value, label)
        if mapping.role != "label" and s is None:
            ignored["no_score"] += 1
            continue
        if mapping.role != "score" and y is None:
            ignored["no_label"] += 1
            continue
        found.append(
            Evaluation(
                LabelEvent(
                    event_id=f"{evaluation}:{response}",
                    ts=record.time_ns / 1_000_000_000,
                    stream=str(stream),
                    s=s,
                    y=y,
                    response_id=str(response),
                ),
                str(response),
            )
        )
    return found


class OtlpLogHandler:
    """``driftgate.otlp.logs``: evaluation results folded as the label handler folds
    label events."""

    topic: str = "otlp.logs"

    def __init__(self, policy: Policy) -> None:
        self.labels = LabelHandler(policy)
        self.otlp = policy.otlp

    @property
    def model(self) -> LabelModel:
        return self.labels.model

    def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        batch, found, counts = _decode_each(
            messages,
            lambda value, ignored: evaluation_events(*log_records(value), self.otlp, ignored),
        )
        if found:
            n = len(found)
            events = [evaluation.event for evaluation in found]
            batch.subjects = split_by_subject(
                [event.stream for event in events],
                [event.event_id for event in events],
                np.fromiter((event.ts for event in events), np.float64, n),  # type: ignore[misc]
                *_positions(messages, counts),
                LabelColumns(
                    np.fromiter((event.s for event in events), np.float64, n),  # None -> NaN
                    np.fromiter((event.y for event in events), np.float64, n),
                    response_digests([evaluation.response_id for evaluation in found]),
                ),
            )
        return batch

    def update(
        self, subject: str, state: LabelState, events: SubjectEvents, now: float
    ) -> list[dict[str, Any]]:
        return self.labels.update(subject, state, events, now)
