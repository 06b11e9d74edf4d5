"""driftgate replay without services: input checks, ordering, the demo's decisions."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from monitor.cli import main
from monitor.replay import read_events
from monitor.replay._input import infer_topic
from monitor.replay._summary import parse_known_good

ROOT = Path(__file__).resolve().parents[4]
DEMO = ROOT / "docs" / "examples" / "replay-demo.jsonl.gz"
LOOSER = ROOT / "docs" / "examples" / "replay-looser.yaml"


def _label(i: int, ts: float, y: float | None = 0.5) -> dict[str, object]:
    return {"event_id": f"e{i}", "ts": ts, "stream": "s", "s": 0.5, "y": y}


def _write(path: Path, messages: list[object]) -> str:
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    return str(path)


def test_topic_is_inferred_from_the_subject_field() -> None:
    assert infer_topic(b'{"stream": "a", "s": 1}') == "labels"
    assert infer_topic(b'[{"experiment_id": "x"}]') == "telemetry"
    assert infer_topic(b'{"agent": "a", "action": "deploy"}') == "canary"
    assert infer_topic(b'{"s": 1}') is None


def test_a_bad_line_names_file_and_line_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _label(1, 1.0)
    bad = {**_label(2, 2.0), "s": "high"}
    path = _write(tmp_path / "events.jsonl", [good, good, bad])
    assert main(["replay", path]) == 2
    captured = capsys.readouterr()
    assert f"{path}:3: EventValidationError" in captured.err
    assert "nothing was replayed" in captured.err
    assert captured.out == ""


def test_a_line_of_no_topic_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "events.jsonl", [_label(1, 1.0), {"s": 0.5, "y": 1}])
    assert main(["replay", path]) == 2
    assert f"{path}:2: no topic" in capsys.readouterr().err


def test_gzip_files_are_read_and_events_sorted_by_event_time(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    lines = [orjson.dumps(_label(i, float(10 - i))) for i in range(10)]
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    log = read_events([str(path)])
    assert log.unsorted == 9
    assert log.groups[0].events.ts.tolist() == sorted(float(10 - i) for i in range(10))
    kept = read_events([str(path)], sort=False)
    assert kept.groups[0].events.ts.tolist() == [float(10 - i) for i in range(10)]


def test_known_good_periods_parse_and_refuse_nonsense() -> None:
    period = parse_known_good("2026-01-01T00:00:00Z..1767225660")
    assert (period.start, period.end) == (1767225600.0, 1767225660.0)
    with pytest.raises(ValueError, match="START is after END"):
        parse_known_good("20..10")
    with pytest.raises(ValueError, match=r"START\.\.END"):
        parse_known_good("2026-01-01")


def _replay_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["replay", *argv, "--json"]) == 0
    return orjson.loads(capsys.readouterr().out)


def test_the_demo_fails_on_drift_and_rolls_back_later_under_a_looser_policy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = _replay_json(
        [str(DEMO), "--batch", "100", "--policy", "default", "--policy", str(LOOSER)], capsys
    )
    assert document["events"] == 5601
    runs = document["runs"]
    firsts = {}
    for run in runs:
        decisions = run["decisions"]
        fails = {(d["gate"], d["subject"]): d for d in decisions if d["verdict"] == "FAIL"}
        assert fails[("residual_drift", "demo:judge")]["action"] == "alert"
        rollback = fails[("guardrail", "demo-agent")]
        assert (rollback["action"], rollback["reason"]) == ("rollback", "toxicity_rate")
        assert run["status"]["agents"]["demo-agent"]["phase"] == "rolled_back"
        firsts[run["policy"]] = {
            (row["subject"], row["gate"]): row["first_fail"]["events"] for row in run["summary"]
        }
    default, looser = firsts["default"], firsts[str(LOOSER)]
    assert looser[("demo:judge", "residual_drift")] > default[("demo:judge", "residual_drift")]
    assert looser[("demo-agent", "guardrail")] > default[("demo-agent", "guardrail")]


def test_known_good_counts_a_fail_inside_as_a_false_alarm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = _replay_json(
        [str(DEMO), "--batch", "100", "--known-good", "2026-01-01T00:00:00Z..2026-01-01T00:01:00Z"],
        capsys,
    )
    (run,) = document["runs"]
    alarms = {row["gate"]: row["false_alarms"] for row in run["summary"]}
    assert alarms == {"residual_drift": 1, "guardrail": 1}


def test_every_event_and_batches_agree_on_the_final_estimates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    one = _replay_json([str(DEMO), "--every-event"], capsys)["runs"][0]["status"]
    many = _replay_json([str(DEMO), "--batch", "1000"], capsys)["runs"][0]["status"]
    a, b = one["streams"]["demo:judge"], many["streams"]["demo:judge"]
    assert a["labeled_n"] == b["labeled_n"] == 1600
    assert a["all_time"]["residual_mean"] == pytest.approx(b["all_time"]["residual_mean"], abs=1e-9)
