"""``driftgate report`` on a stream a real worker saw drift: the memo, its page and its plot."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from .conftest import Deployment, encode, label

pytestmark = pytest.mark.integration


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def labels(stream: str, s: np.ndarray, y: np.ndarray, start: int) -> bytes:
    return encode(
        [
            label(f"{stream}-{start + i}", stream, float(a), float(b))
            for i, (a, b) in enumerate(zip(s, y, strict=True))
        ]
    )


def test_report_of_a_drifting_stream(deployment: Deployment, tmp_path: Path) -> None:
    rng = np.random.default_rng(20261123)
    deployment.start_worker()
    s = rng.uniform(0, 1, 1200)
    y = s + rng.normal(0, 0.1, 1200)
    deployment.produce("labels", [labels("drift", s[:600], y[:600], 0)])
    deployment.wait_for_count("labels", "ok", 600)
    # Then biased labels: the residual's mean moves by +0.2.
    deployment.produce("labels", [labels("drift", s[600:], y[600:] + 0.2, 600)])
    deployment.wait_for_count("labels", "ok", 1200)
    deployment.wait_for(
        lambda: deployment.status_now()["streams"]["drift"]["verdict"] == "FAIL", 30, "FAIL"
    )

    out = tmp_path / "memo"
    result = deployment.cli("report", "drift", "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.splitlines()]
    assert [p.name for p in written] == [
        "report.md",
        "report.html",
        "residual_interval.png",
        "residuals_by_decile.png",
    ]
    assert all(p.parent == out for p in written)

    markdown = (out / "report.md").read_text()
    view = deployment.status()["streams"]["drift"]
    assert f"Verdict: FAIL ({view['reason']})" in markdown
    # The FAIL says to recalibrate, in the worker's view, in status and in the memo.
    step = view["next_step"]
    assert step.startswith("recalibrate: ") and step.endswith(
        "driftgate calibrate TARGET_LABELS.jsonl --stream drift"
    )
    assert f"Next step: {step}" in markdown
    status = deployment.cli("status")
    assert f"  next step:    {step}" in status.stdout.splitlines(), status.stdout
    assert (
        f"{view['residual_mean']:+.4f} [{view['ci_low']:+.4f}, {view['ci_high']:+.4f}]" in markdown
    )
    # The decision that announced the FAIL, in the history.
    assert re.search(
        r"\| residual_drift \| \w+ \| FAIL \| residual_bias \| [-+]0\.\d{4} ", markdown
    )
    page = _Page()
    page.feed((out / "report.html").read_text())
    assert page.images == ["residual_interval.png", "residuals_by_decile.png"]
    # Residuals by decile from the monitor's state: the +0.2 bias of the last 600 labels
    # shows in every decile (about +0.1 over all 1,200), each row as the state has it.
    for row in view["residuals_by_decile"]:
        assert row["n"] > 0 and 0.03 < row["mean_residual"] < 0.2, row
        assert (
            f"| {row['bin']} | " in markdown
            and f"| {row['n']} | {row['mean_residual']:+.4f} [" in markdown
        )
    value = view["value"]
    assert f"{value['estimate']:.4f} [{value['ci_low']:.4f}, {value['ci_high']:.4f}]" in markdown
    assert "Verdict: FAIL" in "".join(page.text)
    for plot in ("residual_interval.png", "residuals_by_decile.png"):
        png = (out / plot).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000, plot

    unknown = deployment.cli("report", "nope", "--out", str(tmp_path / "nope"))
    assert unknown.returncode == 2
    assert "'nope'" in unknown.stderr and "unknown subject" in unknown.stderr
    assert not (tmp_path / "nope").exists()


def test_the_residual_plot_has_a_point_per_minute_of_event_time(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Labels over six minutes of event time, in order (one partition): the report plots
    the stream's history, one point per minute, each the verdict's interval then."""
    from monitor.presentation._report import RESIDUAL_PLOT, build_memo
    from monitor.slices import REGISTRY
    from monitor.store import KeyLayout, ReadModel

    rng = np.random.default_rng(20261208)
    deployment.start_worker()
    start = 60.0 * (1_795_341_600 // 60)
    per_minute, minutes = 150, 6
    ts = start + np.concatenate(
        [m * 60 + np.sort(rng.uniform(0, 59, per_minute)) for m in range(minutes)]
    )
    s = rng.uniform(0, 1, ts.size)
    y = s + rng.normal(0, 0.1, ts.size)
    messages = [
        encode(
            [
                label(f"h-{i}", "hist", float(s[i]), float(y[i]), float(ts[i]))
                for i in range(m * per_minute, (m + 1) * per_minute)
            ]
        )
        for m in range(minutes)
    ]
    deployment.produce("labels", messages, [b"hist"] * minutes)
    deployment.wait_for_count("labels", "ok", ts.size)

    client = deployment.redis_server.client()
    try:
        read_model = ReadModel(client, KeyLayout())
        snapshot = read_model.snapshot(with_history=True, residual_history_of="hist")
        memo = build_memo(snapshot, list(read_model.audit()), "hist", REGISTRY)
    finally:
        client.close()
    series = memo.series[RESIDUAL_PLOT]
    assert series.source == "history"
    expected_minutes = sorted({int(t // 60) for t in ts})
    assert [p["ts"] for p in series.points] == [60.0 * m for m in expected_minutes]
    # Each minute's point is the interval once its labels were in: n grows by a minute's
    # labels (no change detected on unbiased labels: the all-time interval), and the
    # last is the interval the current verdict shows.
    assert [p["n"] for p in series.points] == [
        sum(1 for t in ts if t // 60 <= m) for m in expected_minutes
    ]
    view = deployment.status()["streams"]["hist"]
    last = series.points[-1]
    assert (last["n"], last["estimate"], last["ci_low"], last["ci_high"]) == (
        view["residual_n"],
        view["residual_mean"],
        view["ci_low"],
        view["ci_high"],
    )
    assert all(p["ci_low"] <= p["estimate"] <= p["ci_high"] for p in series.points[1:])

    out = tmp_path / "memo"
    result = deployment.cli("report", "hist", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Each point is a minute of event time" in (out / "report.md").read_text()
    assert (out / RESIDUAL_PLOT).read_bytes().startswith(b"\x89PNG")
