"""The laws every stateful estimator keeps, checked once over a registry of them.

In the style of River's ``test_parallel.py``: each estimator is registered with a factory
and a way to draw two batches of its input, and one parametrized test per law runs over
the registry.

- **Merge law** (for the estimators that merge): update on A, update on B, merge equals
  update on A then B.
- **State round trip** (for all): ``from_state(JSON of to_state())`` equals the original,
  gives back the same state, and goes on exactly as the original would with the next batch.

A test below fails when a new ``StatefulEstimator`` is exported and not registered here.
Properties particular to one estimator (batching invariance across an alarm, legacy
states, refusals to merge different parameters) stay in that estimator's own test file.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

import estimators
from estimators import (
    BernoulliSequence,
    BinnedResiduals,
    BoundedMeanEProcess,
    CategoryCounts,
    CoMoments,
    CovariateEncoding,
    EmpiricalBernsteinSequence,
    EventRate,
    GroupedMeans,
    IdentityCalibrator,
    IsotonicCalibrator,
    MeanShiftDetector,
    Moments,
    NormalMixtureSequence,
    PairedDifferenceSequence,
    QuantileSketch,
    RestartingMeanSequence,
    SampleRatioSequence,
    SplitCounts,
    TwoStageCalibrator,
)
from estimators._base import StatefulEstimator

Batch = tuple[Any, ...]


@dataclass(frozen=True)
class Law:
    """One estimator under the laws: how to make it, feed it, and draw its input."""

    make: Callable[[], Any]
    draw: Callable[[np.random.Generator, int], Batch]
    """Arguments of one ``update`` call with ``size`` items."""
    merges: bool
    """Whether update(A) + update(B) equals update(A then B)."""
    feed: Callable[[Any, Batch], Any] = lambda estimator, batch: _update(estimator, batch)
    min_size: int = 0
    """The fewest items a state is made from (a fit needs some)."""


def _update(estimator: Any, batch: Batch) -> Any:
    estimator.update(*batch)  # SplitCounts.update returns what it counted, not itself
    return estimator


def _unit(rng: np.random.Generator, size: int) -> Batch:
    return (rng.uniform(size=size),)


def _normal(rng: np.random.Generator, size: int) -> Batch:
    return (rng.normal(0.3, 1.0, size),)


def _wide(rng: np.random.Generator, size: int) -> Batch:
    """Both signs, zeros and six orders of magnitude: every bucket range of a sketch."""
    values = rng.normal(size=size) * 10.0 ** rng.integers(-3, 4, size)
    values[rng.random(size) < 0.1] = 0.0
    return (values,)


def _fit(calibrator: Any, batch: Batch) -> Any:
    return calibrator.fit(*batch)


def _split_digests(rng: np.random.Generator, size: int) -> Batch:
    categories = rng.choice(["control", "canary"], size).tolist()
    return categories, rng.integers(1, 2**63, size, dtype=np.uint64)


def _categories(rng: np.random.Generator, size: int) -> Batch:
    """More categories than are named: the pooled ``other`` is exercised too."""
    return ([f"c{k}" for k in rng.zipf(1.5, size) % 12],)


def _two_stage_pairs(rng: np.random.Generator, size: int) -> Batch:
    s, difficulty = rng.uniform(size=size), rng.uniform(size=size)
    y = (rng.uniform(size=size) < np.clip(s - 0.3 * (difficulty - 0.5), 0, 1)).astype(float)
    return s, y, {"difficulty": difficulty.astype(object)}


def _grouped(rng: np.random.Generator, size: int) -> Batch:
    """Residuals of more categories than are named: ``other`` is exercised too."""
    return [f"c{k}" for k in rng.zipf(1.5, size) % 12], rng.uniform(-1, 1, size)


LAWS: dict[str, Law] = {
    "BoundedMeanEProcess": Law(
        BoundedMeanEProcess, lambda rng, n: (rng.uniform(-1, 1, n),), merges=True
    ),
    "GroupedMeans": Law(lambda: GroupedMeans(5), _grouped, merges=True),
    "CategoryCounts": Law(lambda: CategoryCounts(5), _categories, merges=True),
    "Moments": Law(Moments, _normal, merges=True),
    "CoMoments": Law(
        CoMoments, lambda rng, n: (rng.normal(size=n), rng.exponential(size=n)), merges=True
    ),
    "NormalMixtureSequence": Law(NormalMixtureSequence, _normal, merges=True),
    "BernoulliSequence": Law(BernoulliSequence, lambda rng, n: (rng.random(n) < 0.2,), merges=True),
    "QuantileSketch": Law(lambda: QuantileSketch(0.01), _wide, merges=True),
    "BinnedResiduals": Law(
        lambda: BinnedResiduals.deciles_of(None),
        lambda rng, n: (rng.uniform(size=n), rng.normal(0, 0.1, n)),
        merges=True,
    ),
    # Merging adds the betting capital of both halves (the interval of the merge is not
    # that of one pass): test_bounded_sequences checks what merging it does mean.
    "EmpiricalBernsteinSequence": Law(EmpiricalBernsteinSequence, _unit, merges=False),
    "MeanShiftDetector": Law(MeanShiftDetector, _normal, merges=False),
    "RestartingMeanSequence": Law(RestartingMeanSequence, _normal, merges=False),
    "EventRate": Law(
        lambda: EventRate(half_life=60.0),
        lambda rng, n: (np.sort(rng.uniform(0, 600, n)),),
        merges=False,
    ),
    "PairedDifferenceSequence": Law(
        lambda: PairedDifferenceSequence(0.2),
        lambda rng, n: (rng.uniform(size=n // 5), rng.uniform(size=n)),
        merges=False,
    ),
    "SampleRatioSequence": Law(
        lambda: SampleRatioSequence([0.2, 0.3, 0.5]),
        lambda rng, n: (rng.multinomial(n, [0.2, 0.3, 0.5]),),
        merges=False,
    ),
    "SplitCounts": Law(SplitCounts, _split_digests, merges=False),
    "IsotonicCalibrator": Law(
        IsotonicCalibrator,
        lambda rng, n: (s := rng.uniform(size=n), (rng.uniform(size=n) < s).astype(float)),
        merges=False,
        feed=_fit,
    ),
    "IdentityCalibrator": Law(IdentityCalibrator, _unit, merges=False, feed=lambda c, _: c),
    "TwoStageCalibrator": Law(
        TwoStageCalibrator, _two_stage_pairs, merges=False, feed=_fit, min_size=50
    ),
    # An encoding is fitted once, not updated: a fit on the next batch is a new encoding.
    "CovariateEncoding": Law(
        lambda: None,
        lambda rng, n: (rng.choice(["legal", "code", "math"], n).astype(object),),
        merges=False,
        feed=lambda _, batch: CovariateEncoding.fit("domain", batch[0]),
        min_size=1,
    ),
}

MERGING = [name for name, law in LAWS.items() if law.merges]


def _close(left: Any, right: Any, path: str = "state") -> None:
    """States agree: exactly for everything but floats, to 1e-9 for floats."""
    if isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys(), path
        for key in left:
            _close(left[key], right[key], f"{path}.{key}")
    elif isinstance(left, list | tuple):
        assert isinstance(right, list | tuple) and len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            _close(a, b, f"{path}[{i}]")
    elif isinstance(left, float) and not isinstance(right, bool):
        assert isinstance(right, float | int), path
        assert (math.isnan(left) and math.isnan(right)) or right == pytest.approx(
            left, rel=1e-9, abs=1e-12
        ), path
    else:
        assert left == right, path


def _fed(law: Law, *batches: Batch) -> Any:
    estimator = law.make()
    for batch in batches:
        estimator = law.feed(estimator, batch)
    return estimator


def test_every_stateful_estimator_is_registered() -> None:
    exported = {
        name
        for name in estimators.__all__
        if inspect.isclass(cls := getattr(estimators, name))
        and (issubclass(cls, StatefulEstimator) or hasattr(cls, "from_state"))
    }
    assert exported == set(LAWS)


@pytest.mark.parametrize("name", MERGING)
@pytest.mark.parametrize("sizes", [(0, 7), (1, 1), (40, 3), (500, 700)])
def test_merge_equals_one_pass_over_both(name: str, sizes: tuple[int, int]) -> None:
    law = LAWS[name]
    rng = np.random.default_rng(sum(sizes))
    a, b = law.draw(rng, sizes[0]), law.draw(rng, sizes[1])
    left, right = _fed(law, a), _fed(law, b)
    merged = left + right
    _close(merged.to_state(), _fed(law, a, b).to_state())
    # `+` copies: both operands are as they were.
    _close(left.to_state(), _fed(law, a).to_state())
    _close(right.to_state(), _fed(law, b).to_state())
    left += right
    _close(left.to_state(), merged.to_state())
    # Merging with a fresh estimator changes nothing, on either side.
    assert merged + law.make() == merged and law.make() + merged == merged


@pytest.mark.parametrize("name", list(LAWS))
@pytest.mark.parametrize("size", [0, 3, 2000])
def test_state_round_trip_is_exact_json_safe_and_goes_on_identically(name: str, size: int) -> None:
    law = LAWS[name]
    rng = np.random.default_rng(size)
    first, following = law.draw(rng, size), law.draw(rng, 300)
    if name == "IsotonicCalibrator" and size < 2:
        first = law.draw(rng, 2)  # a fit needs 2 points; an unfitted one is not stored
    if size < law.min_size:
        first = law.draw(rng, law.min_size)
    original = _fed(law, first)
    state = original.to_state()
    restored = type(original).from_state(orjson.loads(orjson.dumps(state)))
    assert type(restored) is type(original) and restored is not original
    assert restored.to_state() == state
    _close(law.feed(restored, following).to_state(), law.feed(original, following).to_state())
