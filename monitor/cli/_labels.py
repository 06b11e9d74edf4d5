"""The label workflows: ``driftgate calibrate``, ``audit``, ``plan`` and ``baseline`` (the
work is in :mod:`monitor.workflows`; here, the flags and what is printed)."""

from __future__ import annotations

import argparse
import sys

from ..runtime._preflight import ServiceUnavailable
from ..store import KeyLayout
from ..store._calibrators import StateConflictError, read_calibrator
from ._common import UsageError, load_settings, print_outcome, redis_client

__all__ = ["cmd_audit", "cmd_baseline", "cmd_calibrate", "cmd_plan"]


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..workflows._calibration import RefitRefused, calibrate, check_mode, read_fit_file
    from ..workflows._pairs import Progress

    if args.file is None and not args.pool:
        raise UsageError(
            "give FILE (JSONL with s and y), or --pool to refit on the stored pairs and the "
            "pooled probes"
        )
    try:
        check_mode(args.mode, args.covariates, args.pool)
    except RefitRefused as exc:
        raise UsageError(str(exc)) from exc
    settings = load_settings(args)
    progress = Progress(sys.stderr)
    pairs = read_fit_file(args.file, args.pool, progress, args.covariates) if args.file else None
    client = redis_client(settings)
    try:
        outcome = calibrate(
            client,
            KeyLayout(settings.redis_prefix),
            settings,
            args.stream,
            args.file,
            pool=args.pool,
            progress=progress,
            pairs=pairs,
            covariates=args.covariates,
            mode=args.mode,
        )
    except RefitRefused as exc:
        raise UsageError(str(exc)) from exc
    except StateConflictError as exc:
        raise ServiceUnavailable(str(exc)) from exc
    if args.save:
        from ..replay import save_calibrator

        # What the stream's state now holds: the very calibrator the worker uses.
        record, version = read_calibrator(client, KeyLayout(settings.redis_prefix), args.stream)
        save_calibrator(args.save, args.stream, bytes(record or b"{}"), int(version or 0))
    print_outcome(outcome, args.json)
    if args.save and not args.json:
        print(f"saved to {args.save} (driftgate replay --calibrator {args.save})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from ..workflows._audit import AuditRefused, audit
    from ..workflows._pairs import Progress, read_pairs

    settings = load_settings(args)
    pairs = read_pairs(args.file, Progress(sys.stderr))
    client = redis_client(settings)
    try:
        outcome = audit(
            client,
            KeyLayout(settings.redis_prefix),
            args.stream,
            args.file,
            pairs,
            alpha=args.alpha,
            margin=args.margin,
            family_size=args.family_size,
            pool=args.pool,
        )
    except AuditRefused as exc:
        raise UsageError(str(exc)) from exc
    print_outcome(outcome, args.json)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from estimators import VarianceModel

    from ..workflows._plan import PlanRefused, check_budget, check_pilot, label_plan

    if args.experiment is not None:
        from ._experiments import cmd_plan_experiment

        return cmd_plan_experiment(args)
    missing = [
        flag for flag in ("budget", "surrogate_cost", "oracle_cost") if getattr(args, flag) is None
    ]
    if missing:
        flags = ", ".join(f"--{flag.replace('_', '-')}" for flag in missing)
        raise UsageError(f"the label budget plan needs {flags} (or --experiment NAME)")
    if (args.pilot is None) == (args.r2 is None):
        raise UsageError("give exactly one of --pilot FILE or --r2 R")
    try:
        check_budget(args.budget, args.surrogate_cost, args.oracle_cost)
        if args.pilot is not None:
            from ..workflows._pairs import Progress, read_pairs

            pairs = read_pairs(args.pilot, Progress(sys.stderr))
            check_pilot(args.pilot, pairs)
            model = VarianceModel.from_pilot(pairs.s, pairs.y)
        else:
            model = VarianceModel.from_r2(args.r2)
        plan = label_plan(
            model, args.budget, args.surrogate_cost, args.oracle_cost, args.target_mde
        )
    except PlanRefused as exc:
        raise UsageError(str(exc)) from exc
    print_outcome(plan, args.json)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from ..workflows._baseline import read_scores, set_score_baseline
    from ..workflows._pairs import InputError

    settings = load_settings(args)
    scores = None if args.from_file is None else read_scores(args.from_file)
    source = "recent scores" if args.from_file is None else args.from_file
    minimum = settings.policy.score_drift.min_n
    if scores is not None and scores.size < minimum:  # before any service is asked
        raise InputError(
            f"{args.from_file}: a baseline needs at least {minimum} scores "
            f"(score_drift.min_n), found {scores.size}"
        )
    done = set_score_baseline(
        redis_client(settings),
        KeyLayout(settings.redis_prefix),
        settings.policy,
        args.stream,
        scores,
        source,
    )
    print(
        f"stream {done.stream}: score drift baseline set from {done.source} "
        f"({done.n:,} scores, median {done.median:.3g}); it applies from the next batch"
    )
    return 0
