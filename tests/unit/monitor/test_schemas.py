"""The event formats kept in the repository: docs/schemas/ equal to what the decoders'
Structs generate, valid draft 2020-12, and every example of docs/events.md accepted by both
the schema and the worker's decoder."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import orjson
import pytest

from monitor import Policy
from monitor.cli import main
from monitor.pipeline import RawMessage
from monitor.slices import HANDLERS
from monitor.slices._schemas import (
    DIALECT,
    columnar_schema,
    message_schema,
    schema_file,
    schema_text,
    topic_kind,
)

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "docs" / "schemas"
EVENTS = ROOT / "docs" / "events.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```json\n(.*?)\n```", re.DOTALL)
COLUMNAR = re.compile(r"<!-- columnar: (\w+) -->\n```json\n(.*?)\n```", re.DOTALL)
FORMS = [(kind, columnar) for kind in HANDLERS for columnar in (False, True)]


@pytest.mark.parametrize(("kind", "columnar"), FORMS)
def test_each_schema_file_is_what_its_struct_generates(kind: str, columnar: bool) -> None:
    path = SCHEMAS / schema_file(kind, columnar)
    flag = " --columnar" if columnar else ""
    assert path.read_text() == schema_text(kind, columnar), (
        f"{path} is stale: driftgate schema {kind}{flag} > docs/schemas/{path.name}"
    )


def test_there_is_a_schema_file_for_each_form_of_each_input_topic_and_no_other() -> None:
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(
        schema_file(kind, columnar) for kind, columnar in FORMS
    )


@pytest.mark.parametrize(("kind", "columnar"), FORMS)
def test_each_schema_is_valid_draft_2020_12(kind: str, columnar: bool) -> None:
    schema = columnar_schema(kind) if columnar else message_schema(kind)
    assert schema["$schema"] == DIALECT
    jsonschema.Draft202012Validator.check_schema(schema)


def columnar_examples() -> list[tuple[str, bytes]]:
    return [(kind, text.encode()) for kind, text in COLUMNAR.findall(EVENTS.read_text())]


@pytest.mark.parametrize(("kind", "value"), columnar_examples())
def test_every_columnar_example_is_accepted_by_its_schema_and_the_worker(
    kind: str, value: bytes
) -> None:
    jsonschema.Draft202012Validator(columnar_schema(kind)).validate(orjson.loads(value))
    decoded = HANDLERS[kind](Policy()).decode([RawMessage(kind, 0, 0, value)])
    assert decoded.dead_letters == [] and decoded.subjects


@pytest.mark.parametrize(
    ("kind", "document", "where"),
    [
        ("labels", {"stream": "a", "columns": {"ts": [1], "s": [0.5]}}, "event_id"),
        ("labels", {"columns": {"event_id": ["e"], "ts": [1], "s": [0.5]}}, "stream"),
        ("labels", {"stream": "a", "columns": {"event_id": ["e"], "ts": [1], "s": ["x"]}}, "s"),
        ("labels", {"stream": "a", "columns": {"event_id": [""], "ts": [1], "s": [1]}}, "event_id"),
        ("labels", {"stream": "a", "ts": 1, "columns": {"event_id": ["e"], "s": [1e101]}}, "s"),
        ("labels", {"stream": "a", "columns": {"event_id": ["e"], "ts": [1], "y": 1}}, "y"),
        (
            "telemetry",
            {
                "experiment_id": "x",
                "ts": 1,
                "columns": {
                    "event_id": ["e"],
                    "unit_id": ["u"],
                    "variant": ["a"],
                    "guardrails.latency_ms": [-1],
                },
            },
            "guardrails.latency_ms",
        ),
        (
            "telemetry",
            {
                "experiment_id": "x",
                "ts": 1,
                "sec_outcomes.clicks": "many",
                "columns": {"event_id": ["e"], "unit_id": ["u"], "variant": ["a"]},
            },
            "sec_outcomes.clicks",
        ),
        (
            "canary",
            {
                "agent": "a",
                "ts": 1,
                "columns": {"event_id": ["e"], "bundle_id": ["b"], "action": ["launch"]},
            },
            "action",
        ),
    ],
)
def test_the_columnar_schema_and_the_decoder_refuse_the_same_envelope(
    kind: str, document: dict[str, object], where: str
) -> None:
    validator = jsonschema.Draft202012Validator(columnar_schema(kind))
    assert list(validator.iter_errors(document)), f"the schema accepted a bad {where}"
    value = orjson.dumps(document)
    decoded = HANDLERS[kind](Policy()).decode([RawMessage(kind, 0, 0, value)])
    assert len(decoded.dead_letters) == 1 and where in decoded.dead_letters[0].error


def test_emitted_envelopes_are_accepted_by_the_columnar_schema() -> None:
    from monitor.emit._events import canary_event, envelope, label_event, late_label_event

    labels = [label_event("p", 0.4, response_id="r1"), late_label_event("p", "r1", 1.0)]
    canary = [canary_event("a", "b", "deploy", canary_percent=5), canary_event("a", "b", "pause")]
    for kind, events in (("labels", labels), ("canary", canary)):
        document = orjson.loads(orjson.dumps(envelope(events), default=str))
        jsonschema.Draft202012Validator(columnar_schema(kind)).validate(document)


def examples() -> list[tuple[str, bytes]]:
    found = [(kind, text.encode()) for kind, text in EXAMPLE.findall(EVENTS.read_text())]
    assert {kind for kind, _ in found} == set(HANDLERS), "an example for every input topic"
    return found


@pytest.mark.parametrize(("kind", "value"), examples())
def test_every_example_is_accepted_by_its_schema_and_the_worker(kind: str, value: bytes) -> None:
    jsonschema.Draft202012Validator(message_schema(kind)).validate(orjson.loads(value))
    decoded = HANDLERS[kind](Policy()).decode([RawMessage(kind, 0, 0, value)])
    assert decoded.dead_letters == [] and decoded.subjects


@pytest.mark.parametrize(
    ("event", "where"),
    [
        ({"event_id": "", "ts": 1, "stream": "a", "s": 0.5}, "event_id"),
        ({"event_id": "e", "ts": [1], "stream": "a", "s": 0.5}, "ts"),
        ({"event_id": "e", "ts": 1, "stream": "a", "s": 1e101}, "s"),
        ({"event_id": "e", "ts": 1, "stream": "a"}, "s"),
    ],
)
def test_the_schema_and_the_decoder_refuse_the_same_label_event(
    event: dict[str, object], where: str
) -> None:
    errors = list(jsonschema.Draft202012Validator(message_schema("labels")).iter_errors(event))
    assert errors, f"the schema accepted a bad {where}"
    decoded = HANDLERS["labels"](Policy()).decode([RawMessage("labels", 0, 0, orjson.dumps(event))])
    assert len(decoded.dead_letters) == 1 and where in decoded.dead_letters[0].error


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("canary", "canary"),
        ("driftgate.telemetry", "telemetry"),
        ("staging.labels", "labels"),
        ("decisions", None),
        ("driftgate.dlq", None),
        ("labels.extra", None),
    ],
)
def test_topic_kind(name: str, kind: str | None) -> None:
    assert topic_kind(name) == kind


def test_driftgate_schema_prints_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "driftgate.canary"]) == 0
    assert capsys.readouterr().out == (SCHEMAS / "canary.json").read_text()
    assert main(["schema", "labels", "--columnar"]) == 0
    assert capsys.readouterr().out == (SCHEMAS / "labels.columnar.json").read_text()


def test_driftgate_schema_of_an_unknown_topic_names_the_topics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema", "decisions"]) == 2
    error = capsys.readouterr().err
    assert "unknown topic 'decisions'" in error and "labels, telemetry, canary" in error


def test_produce_help_points_to_the_event_formats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["produce", "--help"])
    out = capsys.readouterr().out
    assert "docs/events.md" in out and "driftgate schema TOPIC" in out
