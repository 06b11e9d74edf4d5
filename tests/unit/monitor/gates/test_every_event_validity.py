"""False alarms of the covariate drift gate and of the subgroup residual gate with a look
after every event, on null paths (``bench/every_event_validity.py`` runs 1,000 paths of
20,000 events; these are its smaller twins). Each test also runs the same simulation on
a deliberately broken gate (a band or a test that holds at one look only) and checks that
the simulation sees it break its level: the assertion on the real gate can fail."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import stats

import monitor.gates._covariate_drift as covariate_gate
from estimators import BoundedMeanEProcess, time_uniform_dkw_radius
from estimators._categories import _bounds, tv_event_count
from estimators._drift import bounds_with_margin, ks_critical_distance
from monitor.config import CovariateDriftPolicy, ResidualDriftPolicy

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[4] / "bench" / "every_event_validity.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("every_event_validity", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def covariate_alarms(
    bench: ModuleType,
    kind: str,
    policy: CovariateDriftPolicy,
    paths: int,
    length: int,
    margin: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> int:
    """Null paths whose gate ever read a lower bound above 0 (every WARN and FAIL is one)."""
    rng = np.random.default_rng(2026)
    results = [
        bench.covariate_path(
            bench.COVARIATES[kind], policy, rng, length, margin=margin, until="significant"
        )
        for _ in range(paths)
    ]
    assert all(r.above_bound == 0 for r in results)  # the screen is sound
    return sum(r.first["significant"] is not None for r in results)


def test_the_numeric_covariate_gate_keeps_its_level_under_a_look_after_every_value(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = CovariateDriftPolicy(covariates=("x",), baseline_n=200, min_n=1)
    paths, length = 100, 500
    alarms = covariate_alarms(bench, "uniform", policy, paths, length)
    assert alarms <= policy.alpha * paths

    # The one-look two-sample band read after every value breaks the level.
    def one_look(live, baseline, alpha, low_from_edges=False):  # type: ignore[no-untyped-def]
        return bounds_with_margin(
            live, baseline, lambda n, m: ks_critical_distance(n, m, alpha), low_from_edges
        )

    monkeypatch.setattr(covariate_gate, "sequential_ks_bounds", one_look)
    c = np.sqrt(-np.log(policy.alpha / 2) / 2)
    broken = covariate_alarms(
        bench, "uniform", policy, paths, length, lambda m, n: c * np.sqrt((n + m) / (n * m))
    )
    assert broken > 2 * policy.alpha * paths


def test_the_categorical_covariate_gate_keeps_its_level_under_a_look_after_every_value(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 0/1 covariate, true one time in five, its two values the whole partition."""
    policy = CovariateDriftPolicy(covariates=("x",), baseline_n=200, min_n=1, max_categories=1)
    paths, length = 200, 5000
    alarms = covariate_alarms(bench, "binary_rare", policy, paths, length)
    assert alarms <= policy.alpha * paths

    # Without the baseline's own noise in the margin, the level breaks.
    level = policy.alpha / 2 / tv_event_count(policy.max_categories)

    def live_noise_only(live, baseline, alpha):  # type: ignore[no-untyped-def]
        return _bounds(live, baseline, float(time_uniform_dkw_radius(live.n, level)))

    monkeypatch.setattr(covariate_gate, "sequential_tv_bounds", live_noise_only)
    broken = covariate_alarms(
        bench, "binary_rare", policy, paths, length, lambda m, n: time_uniform_dkw_radius(n, level)
    )
    assert broken > 2 * policy.alpha * paths


def subgroup_flags(
    bench: ModuleType, family: str, outcome: str, paths: int, length: int, **screen: object
) -> int:
    """Null paths on which any group was ever flagged (WARN or FAIL)."""
    covariates = bench.FAMILIES_OF_GROUPS[family]
    policy = ResidualDriftPolicy(group_by=tuple(covariates))
    rng = np.random.default_rng(2026)
    results = [
        bench.subgroup_path(
            bench.Family(family, covariates, outcome), policy, rng, length, until="flag", **screen
        )
        for _ in range(paths)
    ]
    return sum(r.first["flag"] is not None for r in results)


def test_the_subgroup_gate_keeps_its_false_discovery_rate_under_a_look_after_every_label(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten groups of 30% down to 1% (a group of 1%: 20 labels in 2,000) and rare 0/1
    outcomes (about one in five): no group biased, so any flag is a false discovery."""
    q = ResidualDriftPolicy().group_fdr
    assert bench.screen_error(np.random.default_rng(1)) < 1e-6
    paths, length = 100, 2000
    for family in ("10 unequal (30%..1%)", "25 zipf (pooled past 10)"):
        assert subgroup_flags(bench, family, "rare", paths, length) <= q * paths

    # A fixed-sample z-test read after every label (its 1/p taken for an e-value, from the
    # group's min_labeled labels on) does not.
    least = ResidualDriftPolicy().min_labeled

    def z_test(self: BoundedMeanEProcess, mu: float = 0.0) -> float:
        if self.n < least:
            return 1.0
        mean = self.sum_x / self.n
        variance = max(self.sum_sq / self.n - mean * mean, 1e-12)
        z = abs(mean - mu) / np.sqrt(variance / self.n)
        return float(np.exp(min(709.0, -(np.log(2.0) + stats.norm.logsf(z)))))

    def z_prefixes(x: np.ndarray, bound: float) -> np.ndarray:
        n = np.arange(1, x.size + 1)
        mean = np.cumsum(x) / n
        variance = np.maximum(np.cumsum(x * x) / n - mean**2, 1e-12)
        log_e = -(np.log(2.0) + stats.norm.logsf(np.abs(mean) / np.sqrt(variance / n)))
        return np.where(n < least, 0.0, log_e)

    monkeypatch.setattr(BoundedMeanEProcess, "e_value", z_test)
    monkeypatch.setattr(bench, "SAFETY", 1e-9)  # z_prefixes is z_test's own formula
    few = 50
    broken = subgroup_flags(
        bench, "10 unequal (30%..1%)", "rare", few, length, log_e_prefixes=z_prefixes
    )
    assert broken > 2 * q * few
