"""The residual gate by subgroup: e-BH over the groups' e-processes, through the label
handler as the worker runs it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import orjson
import pytest

from estimators import GroupedMeans, e_benjamini_hochberg
from monitor.config import ConfigError, Policy, ResidualDriftPolicy, load_policy
from monitor.gates._subgroup_residuals import group_family_size, subgroup_residual_gates
from monitor.pipeline import RawMessage
from monitor.pipeline._judge import judge_subject
from monitor.pipeline._types import Judgement
from monitor.store import _keys as fields
from monitor.subjects._labels import LabelHandler

EMPTY = {fields.STATE: None, fields.CALIBRATOR: None, fields.CALIBRATOR_VERSION: None}
DOMAINS = np.array(
    ["legal", "code", "math", "chat", "support", "sales", "medical", "finance", "travel", "games"]
)
POLICY = ResidualDriftPolicy(group_by=("domain",))


def batch(offset: int, rng: np.random.Generator, n: int = 250) -> RawMessage:
    """Labeled events over 10 domains; the judge over-scores domain=legal by 0.15."""
    domain = rng.choice(DOMAINS, n)
    p = rng.uniform(0.05, 0.8, n)
    s = np.where(domain == "legal", p + 0.15, p)
    y = (rng.random(n) < p).astype(float)
    events = [
        {
            "event_id": f"e{offset + i}",
            "ts": 1.7e9,
            "stream": "judge",
            "s": float(s[i]),
            "y": float(y[i]),
            "covariates": {"domain": str(domain[i])},
        }
        for i in range(n)
    ]
    return RawMessage("labels", 0, offset, orjson.dumps(events))


def test_a_bias_in_legal_alone_fails_legal_and_the_stream_passes() -> None:
    rng = np.random.default_rng(11)
    handler = LabelHandler(Policy(residual_drift=POLICY))
    state = handler.model.load("judge", EMPTY)
    published: dict = {}
    decisions = []
    for offset in range(0, 3000, 250):
        for events in handler.decode([batch(offset, rng)]).subjects.values():
            handler.update("judge", state, events, 0.0)
        judged = judge_subject(handler.model, "judge", state, published, 0.0)
        published = judged.published
        decisions += judged.decisions
    assert [(d.gate, d.verdict, d.evidence["group"]) for d in decisions] == [
        ("residual_drift", "FAIL", {"covariate": "domain", "value": "legal"})
    ]
    stream, *groups = [v for v in judged.verdicts if v.gate == "residual_drift"]
    assert stream.part == "" and stream.verdict == "PASS"
    legal = next(v for v in groups if v.part == "domain=legal")
    assert legal.key == "residual_drift/domain=legal" and legal.verdict == "FAIL"
    assert legal.evidence["next_step"].startswith("relabel domain=legal")
    assert "--stream judge --covariates domain" in legal.evidence["next_step"]
    assert {v.verdict for v in groups if v is not legal} == {"PASS"}
    view = handler.model.view("judge", state, Judgement(judged.verdicts)).groups
    assert view["domain=legal"]["verdict"] == "FAIL" and len(view) == 10
    # What the runner reads back with the state: the group verdicts' record keys.
    stored = {**EMPTY, **handler.model.dump(state)}
    assert handler.model.gates_of(stored) == sorted(f"residual_drift/domain={d}" for d in DOMAINS)
    assert handler.model.load("judge", stored).subgroups == state.subgroups


def test_verdicts_are_e_bh_over_the_policy_s_family() -> None:
    rng = np.random.default_rng(12)
    grouped = GroupedMeans(10)
    shifts = {"a": 0.2, "b": 0.03, "c": 0.0, "d": 0.0}
    for name, shift in shifts.items():
        grouped.update([name] * 600, rng.uniform(-0.4, 0.4, 600) + shift)
    grouped.update(["e"] * 10, np.full(10, 0.5))  # too few labels: untested
    verdicts = subgroup_residual_gates("s", {"domain": grouped}, POLICY, 3)
    by_value = {v.evidence["group"]["value"]: v for v in verdicts}
    e = [p.e_value() for _, p in grouped.items()]
    reject, k = e_benjamini_hochberg(e, POLICY.group_fdr, group_family_size(POLICY))
    flagged = {name for (name, _), r in zip(grouped.items(), reject, strict=True) if r}
    assert flagged == {v for v, x in by_value.items() if x.verdict in ("WARN", "FAIL")}
    assert by_value["a"].verdict == "FAIL" and by_value["e"].verdict == "INCONCLUSIVE"
    for verdict in verdicts:
        evidence = verdict.evidence
        assert evidence["discoveries"] == k and evidence["groups"] == 11
        flagged_now = verdict.verdict in ("WARN", "FAIL")
        inside = evidence["ci_low"] <= 0 <= evidence["ci_high"]
        assert flagged_now != inside or verdict.verdict == "INCONCLUSIVE"


def test_groups_with_labels_outside_the_range_are_not_tested() -> None:
    handler = LabelHandler(Policy(residual_drift=POLICY))
    state = handler.model.load("judge", EMPTY)
    events = [
        {
            "event_id": f"e{i}",
            "ts": 1.7e9,
            "stream": "judge",
            "s": 0.5,
            "y": 3.0 if i else 0.0,
            "covariates": {"domain": "legal"},
        }
        for i in range(50)
    ]
    message = RawMessage("labels", 0, 0, orjson.dumps(events))
    for decoded in handler.decode([message]).subjects.values():
        handler.update("judge", state, decoded, 0.0)
    [legal] = [v for v in handler.model.evaluate("judge", state, 0.0).verdicts if v.part]
    assert (legal.verdict, legal.reason) == ("INCONCLUSIVE", "residual_out_of_range")


def test_fdr_under_the_null_with_ten_groups_is_at_most_q() -> None:
    """100 null paths of 10 groups read every 500 labels up to 5,000: the share of paths
    with any group ever flagged (the FDR, all flags being false) stays under q = 0.05
    (bench/subgroup_fdr.py runs 1,000 paths of 20,000)."""
    rng = np.random.default_rng(13)
    m, q = group_family_size(POLICY), POLICY.group_fdr
    flagged_paths = 0
    for _ in range(100):
        grouped = GroupedMeans(POLICY.max_groups)
        for _ in range(10):
            p = rng.uniform(0.05, 0.95, 500)
            grouped.update(rng.choice(DOMAINS, 500).tolist(), (rng.random(500) < p) - p)
            e = [process.e_value() for _, process in grouped.items()]
            if e_benjamini_hochberg(e, q, m)[1]:
                flagged_paths += 1
                break
    assert flagged_paths / 100 <= q


def test_group_by_and_its_settings_are_checked_by_name(tmp_path: Path) -> None:
    assert load_policy(None).residual_drift.group_by == ()
    for text, key in (
        ("group_by: [domain, domain]", "residual_drift.group_by"),
        ("group_fdr: 1.5", "residual_drift.group_fdr"),
        ("max_groups: 0", "residual_drift.max_groups"),
    ):
        path = tmp_path / "policy.yml"
        path.write_text(f"residual_drift:\n  {text}\n")
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_policy(str(path))


def test_status_lines_and_replay_show_the_group(tmp_path: Path) -> None:
    """``driftgate replay`` keeps the covariates a policy groups by (its events are read
    once for every policy), and ``driftgate status`` words the flagged group first."""
    from monitor.presentation._status import stream_lines
    from monitor.replay import Replay, read_events

    rng = np.random.default_rng(11)
    path = tmp_path / "labels.jsonl"
    path.write_bytes(
        b"\n".join(
            orjson.dumps(event)
            for offset in range(0, 3000, 250)
            for event in orjson.loads(batch(offset, rng).value)
        )
    )
    policy = Policy(residual_drift=POLICY)
    log = read_events([str(path)], policies=[policy])
    run = Replay(policy, log).run()
    assert [(d.verdict, d.evidence["group"]["value"]) for d in run.decisions] == [("FAIL", "legal")]
    lines = stream_lines("judge", run.status["streams"]["judge"])
    flagged = next(i for i, line in enumerate(lines) if line.startswith("  group domain=legal"))
    assert "FAIL (residual_bias)" in lines[flagged]
    assert lines[flagged + 1].startswith("    next step: relabel domain=legal")
    assert lines[-1].startswith("  groups PASS:  domain=chat (")
