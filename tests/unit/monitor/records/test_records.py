"""Typed records keep the JSON they replaced, byte for byte.

The ``golden_*.json`` files were written by the code before decisions, published records,
gate records and views became ``msgspec`` Structs (dictionaries then, dumped by
``orjson``): a replay of ``docs/examples/replay-demo.jsonl.gz`` (a residual drift and a
canary rolled back by its guardrail), a stream with declared covariates (categorical and
numeric drift), a calibrated stream with score drift, and the records ``calibrate``
writes when it activates a version. Each golden document goes through the Structs and
back to the same bytes, and today's code writes the same documents again.

Two differences are intended, and asserted as such: ``replay --calibrator`` now outputs
the decision that announces the calibrator (its docstring always said so; the verdict
was compared with nothing published and went unannounced), and on activation every
gate's record carries the published fields (``null`` when nothing was published), as the
worker's records always did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from estimators import IsotonicCalibrator, QuantileSketch
from monitor.config import Policy, load_policy
from monitor.events._decisions import Decision, GateRecord, Published, encode
from monitor.events._views import ExperimentView, StreamView
from monitor.pipeline import RawMessage
from monitor.pipeline._judge import gate_records, judge_subject
from monitor.replay import Replay, StoredCalibrator, read_events
from monitor.slices import HANDLERS
from monitor.subjects._labels import ActiveCalibrator, LabelModel
from monitor.workflows._calibration import fresh_records

HERE = Path(__file__).parent
DEMO = HERE.parents[3] / "docs" / "examples" / "replay-demo.jsonl.gz"
T0 = 1767225600.0
STREAM = "cov:judge"
VIEWS: dict[str, type[msgspec.Struct]] = {"stream": StreamView, "experiment": ExperimentView}


def golden(name: str) -> dict[str, Any]:
    return orjson.loads((HERE / f"golden_{name}.json").read_bytes())


def same_bytes(record: Any, document: Any) -> None:
    assert encode(record) == orjson.dumps(document)


# --- the inputs -----------------------------------------------------------------------


def covariate_lines() -> list[bytes]:
    """A stream whose domain mix, lengths and (for code) residuals shift half way."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(3000):
        drift = i > 1500
        domain = "code" if rng.random() < (0.7 if drift else 0.3) else "chat"
        s = float(rng.uniform())
        y = float(
            np.clip(s + (0.15 if drift and domain == "code" else 0) + rng.normal(0, 0.05), 0, 1)
        )
        rows.append(
            {
                "event_id": f"c{i}",
                "ts": T0 + i,
                "stream": STREAM,
                "s": s,
                "y": y if i % 2 == 0 else None,
                "covariates": {
                    "domain": domain,
                    "length": float(rng.normal(100 + (40 if drift else 0), 10)),
                },
            }
        )
    return [orjson.dumps(row) for row in rows]


def calibrator() -> tuple[IsotonicCalibrator, QuantileSketch, bytes]:
    rng = np.random.default_rng(3)
    s = rng.uniform(size=400)
    y = np.clip(s + rng.normal(0, 0.05, 400), 0, 1)
    fit = IsotonicCalibrator().fit(s, y)
    baseline = QuantileSketch(Policy().score_drift.relative_accuracy).update(s)
    return fit, baseline, ActiveCalibrator(0, fit, baseline, 0.0025).record()


# --- the documents, as today's code writes them ----------------------------------------


def replayed(replay: Replay) -> dict[str, Any]:
    result = replay.run()
    subjects = {
        f"{kind}:{name}": {
            "view": s.model.view(s.name, s.state, s.judgement),
            "gates": gate_records(s.judgement.verdicts, s.published, s.judged_at),
            "published": s.published,
        }
        for (kind, name), s in replay._subjects.items()
    }
    return {"decisions": result.decisions, "subjects": subjects, "status": result.status}


def demo() -> dict[str, Any]:
    return replayed(Replay(Policy(), read_events([str(DEMO)]), batch=500))


def covariates(tmp_path: Path) -> dict[str, Any]:
    # The replay reads events under the default policy (no covariates declared): these go
    # through the handler and judge_subject batch by batch, as the runner takes them.
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "covariate_drift: {covariates: [domain, length], baseline_n: 800, min_n: 100}\n"
    )
    handler = HANDLERS["labels"](load_policy(str(policy_file)))
    model = handler.model
    lines = covariate_lines()
    state = model.load(STREAM, dict.fromkeys(model.stored_fields))
    published: dict[str, Published] = {}
    decisions: list[Decision] = []
    for start in range(0, len(lines), 250):
        batch = [
            RawMessage("labels", 0, start + i, line)
            for i, line in enumerate(lines[start : start + 250])
        ]
        now = T0 + start + 250
        for name, events in handler.decode(batch).subjects.items():
            handler.update(name, state, events, now)
        judged = judge_subject(model, STREAM, state, published, now)
        published = judged.published
        decisions += judged.decisions
    subject = {
        "view": model.view(STREAM, state, judged.judgement),
        "gates": gate_records(judged.verdicts, published, now),
        "published": published,
    }
    return {"decisions": decisions, "subjects": {f"stream:{STREAM}": subject}}


def calibrated(tmp_path: Path) -> dict[str, Any]:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(covariate_lines()) + b"\n")
    stored = StoredCalibrator(STREAM, calibrator()[2], 3)
    return replayed(Replay(Policy(), read_events([str(events)]), [stored], batch=300))


def activation() -> dict[str, Any]:
    fresh = fresh_records(
        LabelModel(Policy()), STREAM, calibrator()[2], 4, 3, 1767230000.25, "driftgate.decisions"
    )
    announcement = fresh.announcement
    return {
        "view": orjson.loads(fresh.view),
        "gates": orjson.loads(fresh.gates),
        "announcement": {
            "gate": announcement.gate,
            "action": announcement.action,
            "decision": orjson.loads(announcement.decision),
            "published": orjson.loads(announcement.published),
            "topic": announcement.topic,
            "audit_maxlen": announcement.audit_maxlen,
        },
    }


# --- through the Structs and back ---------------------------------------------------------


@pytest.mark.parametrize("name", ["demo", "covariates", "calibrated"])
def test_golden_records_go_through_the_structs_unchanged(name: str) -> None:
    document = golden(name)
    for decision in document["decisions"]:
        same_bytes(msgspec.convert(decision, Decision), decision)
    for key, subject in document["subjects"].items():
        view_type = VIEWS[key.split(":")[0]]
        same_bytes(msgspec.convert(subject["view"], view_type), subject["view"])
        gates = msgspec.convert(subject["gates"], dict[str, GateRecord])
        same_bytes(gates, subject["gates"])
        published = msgspec.convert(subject["published"], dict[str, Published])
        same_bytes(published, subject["published"])
    assert len(document["decisions"]) >= 2


def test_golden_records_decode_from_their_json_too() -> None:
    # What the runner reads back from Redis: the stored bytes, decoded straight into the
    # Struct, encode to the same bytes.
    subject = golden("demo")["subjects"]["experiment:demo-agent"]
    raw = orjson.dumps(subject["view"])
    assert encode(msgspec.json.decode(raw, type=ExperimentView)) == raw
    for record in subject["published"].values():
        raw = orjson.dumps(record)
        assert encode(msgspec.json.decode(raw, type=Published)) == raw


def test_a_decision_leaves_out_what_its_evidence_lacks() -> None:
    document = golden("demo")
    by_gate = {d["gate"]: d for d in document["decisions"]}
    residual, guardrail = by_gate["residual_drift"], by_gate["guardrail"]
    assert "bundle_id" not in encode(msgspec.convert(residual, Decision)).decode()
    canary = msgspec.convert(guardrail, Decision)
    assert (canary.bundle_id, canary.canary_percent) == ("demo-agent-history0", 10.0)


# --- today's code writes the golden documents ------------------------------------------


def test_the_replay_writes_the_golden_records() -> None:
    assert encode(demo()) == orjson.dumps(golden("demo"))


def test_a_stream_with_covariates_writes_the_golden_records(tmp_path: Path) -> None:
    written = covariates(tmp_path)
    gates = written["subjects"][f"stream:{STREAM}"]["gates"]
    assert {"covariate_drift/domain", "covariate_drift/length"} <= gates.keys()
    assert encode(written) == orjson.dumps(golden("covariates"))


def test_a_calibrated_replay_announces_its_calibrator_and_writes_the_golden_records(
    tmp_path: Path,
) -> None:
    written = orjson.loads(encode(calibrated(tmp_path)))
    before = golden("calibrated")
    announcement, first, *decisions = written["decisions"]
    assert (announcement["gate"], announcement["verdict"], announcement["reason"]) == (
        "residual_drift",
        "INCONCLUSIVE",
        "recalibrated",
    )
    assert announcement["evidence"]["previous_calibrator_version"] == 2
    # As after ``calibrate`` in the worker: the new interval's first verdict is a change
    # from the announcement's INCONCLUSIVE, so it is published too.
    assert (first["gate"], first["verdict"]) == ("residual_drift", "PASS")
    assert decisions == before["decisions"]
    assert orjson.dumps({**written, "decisions": decisions}) == orjson.dumps(before)


def test_activation_writes_the_golden_records() -> None:
    written = activation()
    before = golden("activation")
    assert orjson.dumps(written["view"]) == orjson.dumps(before["view"])
    assert orjson.dumps(written["announcement"]) == orjson.dumps(before["announcement"])
    # The gate that announced nothing: its record now says so with nulls.
    unpublished = dict.fromkeys(
        ("decision_id", "published_verdict", "published_action", "published_reason", "published_at")
    )
    assert written["gates"]["residual_drift"] == before["gates"]["residual_drift"]
    assert written["gates"]["score_drift"] == {**before["gates"]["score_drift"], **unpublished}
