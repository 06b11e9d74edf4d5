"""False discoveries and power of the residual gate by subgroup, on simulated paths.

    python bench/subgroup_fdr.py [--paths 1000] [--labels 20000] [--every 100]
                                 [--stream-paths 200] [--seed 2026] [--out DIR]

The groups are judged as the gate judges them: the residuals of each of 10 domains in
``estimators.GroupedMeans`` (the policy's 10 named, ``other`` empty), each group's
e-value against 0 once it has ``min_labeled`` labels, e-BH at ``group_fdr`` over the
policy's family (``m = 11``). Residuals ``y - p`` with ``y ~ Bernoulli(p)``, ``p`` uniform
on [0.05, 0.95] (a calibrated judge); a biased group's judge scores ``p + bias``. The
verdicts are read after every ``--every`` labels up to ``--labels``, as the worker reads
them after each batch.

* ``null``: no group biased, domains of equal shares; ``null_unequal``: shares from 30% down
  to 1%. Every flag is false: the false discovery proportion of a path is 1 if any group
  was ever flagged, so the rate of such paths is the FDR (and the family-wise rate) over
  the whole path, every look included.
* ``two_biased``: 2 of 10 groups biased by 0.15 (the others null): FDR over the groups
  ever flagged and at the last look, and the share of biased groups flagged.
* ``legal``: the issue's case end to end in-process, through the label handler and the
  gates (``--stream-paths`` paths of ``--stream-labels`` labels in batches of 250): the
  judge over-scores ``domain=legal`` (10% of traffic) by 0.15; the labels until
  ``domain=legal`` FAILs, and the stream's own residual verdict then and at the end.

Rates carry 95% Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from estimators import GroupedMeans, IsotonicCalibrator, e_benjamini_hochberg
from monitor.config import Policy, ResidualDriftPolicy
from monitor.gates._subgroup_residuals import group_family_size
from monitor.pipeline import RawMessage
from monitor.pipeline._judge import judge_subject
from monitor.store import _keys as fields
from monitor.subjects._labels import ActiveCalibrator, LabelHandler

POLICY = ResidualDriftPolicy(group_by=("domain",))
DOMAINS = np.array(
    ["legal", "code", "math", "chat", "support", "sales", "medical", "finance", "travel", "games"]
)
EQUAL = np.full(10, 0.1)
UNEQUAL = np.array([0.30, 0.20, 0.15, 0.10, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def flagged(grouped: GroupedMeans) -> set[str]:
    """The groups e-BH flags now, as ``subgroup_residual_gates`` decides."""
    items = list(grouped.items())
    e = [p.e_value(0.0) for _, p in items]
    reject, _ = e_benjamini_hochberg(e, POLICY.group_fdr, group_family_size(POLICY))
    return {name for (name, _), r in zip(items, reject, strict=True) if r}


def grouped_path(
    rng: np.random.Generator, shares: np.ndarray, biased: dict[str, float], args: argparse.Namespace
) -> dict:
    grouped = GroupedMeans(POLICY.max_groups)
    ever: set[str] = set()
    first: dict[str, int] = {}
    for seen in range(args.every, args.labels + 1, args.every):
        domain = rng.choice(DOMAINS, args.every, p=shares)
        p = rng.uniform(0.05, 0.95, args.every)
        bias = np.array([biased.get(d, 0.0) for d in domain])
        y = (rng.random(args.every) < p).astype(float)
        grouped.update(domain.tolist(), y - np.clip(p + bias, 0.0, 1.0))
        now = flagged(grouped)
        for name in now - ever:
            first[name] = seen
        ever |= now
    return {"ever": ever, "last": now, "first": first}


def fdr_row(name: str, paths: list[dict], biased: set[str]) -> dict:
    def proportion(found: set[str]) -> float:
        return len(found - biased) / len(found) if found else 0.0

    n = len(paths)
    any_false = sum(bool(p["ever"] - biased) for p in paths)
    row = {
        "scenario": name,
        "paths": n,
        "fdr_ever": float(np.mean([proportion(p["ever"]) for p in paths])),
        "fdr_last": float(np.mean([proportion(p["last"]) for p in paths])),
        "paths_with_false_flag": any_false,
        "paths_with_false_flag_ci": wilson(any_false, n),
        "false_flags_per_path": float(np.mean([len(p["ever"] - biased) for p in paths])),
    }
    if biased:
        caught = [len(p["last"] & biased) / len(biased) for p in paths]
        times = [t for p in paths for g, t in p["first"].items() if g in biased]
        row["power_last"] = float(np.mean(caught))
        row["labels_to_flag_median"] = float(np.median(times)) if times else None
    return row


def legal_draws(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Domains, scores and labels: the judge over-scores domain=legal by 0.15."""
    domain = rng.choice(DOMAINS, n, p=EQUAL)
    p = rng.uniform(0.05, 0.8, n)
    s = np.where(domain == "legal", p + 0.15, p)
    return domain, s, (rng.random(n) < p).astype(float)


def legal_paths(args: argparse.Namespace, rng: np.random.Generator, calibrated: bool) -> dict:
    """The issue's case, through the label handler and every gate of the stream: with the
    identity (the stream's residual is biased by 0.015 overall), or with an isotonic
    calibrator fitted on 5,000 pairs of the same judge (it averages the legal bias away:
    the stream's residual is 0 overall, legal's about -0.135)."""
    handler = LabelHandler(Policy(residual_drift=POLICY))
    empty = {fields.STATE: None, fields.CALIBRATOR: None, fields.CALIBRATOR_VERSION: None}
    caught, stream_pass_at_flag, stream_pass_end, labels = 0, 0, 0, []
    others_flagged = 0
    for path in range(args.stream_paths):
        stored = dict(empty)
        if calibrated:
            _, s_fit, y_fit = legal_draws(rng, 5000)
            model = IsotonicCalibrator().fit(s_fit, y_fit)
            stored[fields.CALIBRATOR] = ActiveCalibrator(1, model).record()
            stored[fields.CALIBRATOR_VERSION] = b"1"
        state = handler.model.load("p", stored)
        published: dict = {}
        at = None
        stream_at_flag = None
        for offset in range(0, args.stream_labels, 250):
            domain, s, y = legal_draws(rng, 250)
            events = [
                {
                    "event_id": f"{path}-{offset + i}",
                    "ts": 1.7e9 + offset,
                    "stream": "p",
                    "s": float(s[i]),
                    "y": float(y[i]),
                    "covariates": {"domain": str(domain[i])},
                }
                for i in range(250)
            ]
            message = RawMessage("labels", 0, offset, orjson.dumps(events))
            for batch in handler.decode([message]).subjects.values():
                handler.update("p", state, batch, 0.0)
            judged = judge_subject(handler.model, "p", state, published, 0.0)
            published = judged.published
            legal = next(v for v in judged.verdicts if v.part == "domain=legal")
            if at is None and legal.verdict == "FAIL":
                at, stream_at_flag = offset + 250, judged.verdicts[0].verdict
        others = [v for v in judged.verdicts if v.part and v.part != "domain=legal"]
        others_flagged += sum(v.verdict in ("WARN", "FAIL") for v in others)
        if at is not None:
            caught += 1
            labels.append(at)
            stream_pass_at_flag += stream_at_flag == "PASS"
        stream_pass_end += judged.verdicts[0].verdict == "PASS"
    n = args.stream_paths
    return {
        "scenario": "legal, isotonic calibrator" if calibrated else "legal, identity",
        "paths": n,
        "legal_fail_by_end": caught,
        "legal_fail_ci": wilson(caught, n),
        "labels_to_fail_median": float(np.median(labels)) if labels else None,
        "labels_to_fail_p90": float(np.percentile(labels, 90)) if labels else None,
        "stream_pass_when_flagged": stream_pass_at_flag,
        "stream_pass_at_end": stream_pass_end,
        "stream_pass_at_end_ci": wilson(stream_pass_end, n),
        "other_groups_flagged_at_end": others_flagged,
    }


def _labels(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--labels", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--stream-paths", type=int, default=200)
    parser.add_argument("--stream-labels", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    rows = []
    for name, shares, biased in (
        ("null", EQUAL, {}),
        ("null_unequal", UNEQUAL, {}),
        ("two_biased", EQUAL, {"legal": 0.15, "medical": 0.15}),
    ):
        paths = [grouped_path(rng, shares, biased, args) for _ in range(args.paths)]
        rows.append(fdr_row(name, paths, set(biased)))
        print(rows[-1], flush=True)
    legals = [legal_paths(args, rng, calibrated) for calibrated in (True, False)]
    print(legals, flush=True)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = {"args": vars(args), "rows": rows, "legal": legals, "seconds": seconds}
    (out / "subgroup_fdr.json").write_text(json.dumps(document, indent=2))
    q = POLICY.group_fdr
    lines = [
        "# Residuals by subgroup: false discoveries and power",
        "",
        f"{args.paths} paths per scenario, 10 domains, {args.labels} labels read every "
        f"{args.every} (e-BH at q = {q}, m = {group_family_size(POLICY)}, min_labeled = "
        f"{POLICY.min_labeled}); seed {args.seed}; {seconds:.0f} s.",
        "",
        "| scenario | FDR, ever flagged | FDR, last look | paths with a false flag [95%] "
        "| false flags per path | power, last look | labels to flag (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low, high = row["paths_with_false_flag_ci"]
        power = row.get("power_last")
        median = row.get("labels_to_flag_median")
        lines.append(
            f"| {row['scenario']} | {row['fdr_ever']:.4f} | {row['fdr_last']:.4f} | "
            f"{row['paths_with_false_flag']}/{row['paths']} [{low:.4f}, {high:.4f}] | "
            f"{row['false_flags_per_path']:.4f} | "
            f"{'-' if power is None else f'{power:.3f}'} | {'-' if median is None else median:} |"
        )
    lines += [
        "",
        f"The issue's case, through the label handler and the gates ({args.stream_paths} "
        f"paths of {args.stream_labels:,} labels in batches of 250, the judge "
        "over-scoring domain=legal, 10% of traffic, by 0.15):",
        "",
        "| calibrator | domain=legal FAIL by the end [95%] | labels to FAIL (median, p90) "
        "| stream PASS when legal FAILed | stream PASS at the end [95%] "
        "| other groups flagged at the end |",
        "|---|---|---|---|---|---|",
    ]
    for legal in legals:
        low, high = legal["legal_fail_ci"]
        s_low, s_high = legal["stream_pass_at_end_ci"]
        lines.append(
            f"| {legal['scenario'].split(', ')[1]} | "
            f"{legal['legal_fail_by_end']}/{legal['paths']} [{low:.3f}, {high:.3f}] | "
            f"{_labels(legal['labels_to_fail_median'])}, {_labels(legal['labels_to_fail_p90'])} | "
            f"{legal['stream_pass_when_flagged']}/{legal['legal_fail_by_end']} | "
            f"{legal['stream_pass_at_end']}/{legal['paths']} [{s_low:.3f}, {s_high:.3f}] | "
            f"{legal['other_groups_flagged_at_end']} |"
        )
    lines.append("")
    (out / "subgroup_fdr.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
