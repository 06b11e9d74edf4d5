"""The label workflows: ``driftgate calibrate``, ``audit``, ``plan`` and ``baseline`` (the
work is in :mod:`monitor.workflows`; here, the flags and what is printed)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..config import _args as types
from ..runtime._preflight import ServiceUnavailable
from ..store import KeyLayout
from ..store._calibrators import StateConflictError, read_calibrator
from ._common import UsageError, load_settings, print_outcome, redis_client

if TYPE_CHECKING:
    from ._parser import Commands

__all__ = ["add_commands", "cmd_audit", "cmd_baseline", "cmd_calibrate", "cmd_plan"]


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


def add_commands(commands: Commands) -> None:
    """``calibrate``, ``audit``, ``plan`` and ``baseline``: the label streams' slice's
    commands (``monitor.slices``)."""
    calibrate = commands.add(
        "calibrate",
        "fit f: S -> Y, report its out-of-fold quality, make it the stream's active calibrator",
        cmd_calibrate,
    )
    calibrate.add_argument(
        "file",
        type=types.readable_file,
        metavar="FILE",
        nargs="?",
        help="JSONL with s and y (optional with --pool)",
    )
    calibrate.add_argument("--stream", type=types.subject_name, required=True)
    calibrate.add_argument(
        "--pool",
        action="store_true",
        help="refit on the active version's pairs + the pooled probes (+ FILE); empties the pool",
    )
    calibrate.add_argument(
        "--covariates",
        type=types.name_list,
        default=(),
        metavar="A,B",
        help="covariates (each line's covariates.A, ...) for a two-stage calibrator",
    )
    calibrate.add_argument(
        "--mode",
        choices=("isotonic", "two_stage", "auto"),
        default="auto",
        help="isotonic in S, two-stage on S and --covariates, or auto (default): two-stage "
        "only when its out-of-fold error is lower by more than its standard error",
    )
    calibrate.add_argument(
        "--save",
        type=types.writable_file,
        metavar="F",
        help="also write the calibrator to F (JSON), for driftgate replay --calibrator F",
    )
    calibrate.add_argument("--json", action="store_true")
    commands.connection_flags(calibrate, kafka=False, redis_=True)

    audit = commands.add("audit", "transport audit of a probe slice", cmd_audit)
    audit.add_argument(
        "file",
        type=types.readable_file,
        metavar="FILE",
        help="JSONL with s, y and optionally cluster",
    )
    audit.add_argument("--stream", type=types.subject_name, required=True)
    audit.add_argument("--alpha", type=types.probability, default=0.05, help="in (0, 1)")
    audit.add_argument(
        "--margin", type=types.positive_number, help="equivalence mode: PASS inside +-margin"
    )
    audit.add_argument(
        "--family-size", type=types.positive_integer, default=1, help="Bonferroni over N audits"
    )
    audit.add_argument(
        "--pool",
        action="store_true",
        help="on PASS, add the probe's pairs to the stream's pool (calibrate --pool refits)",
    )
    audit.add_argument("--json", action="store_true")
    commands.connection_flags(audit, kafka=False, redis_=True)

    plan = commands.add(
        "plan",
        "label budget plan, or a pre-registered experiment's sample size (--experiment)",
        cmd_plan,
    )
    plan.add_argument("--budget", type=types.positive_number, help="required without --experiment")
    plan.add_argument("--surrogate-cost", type=types.positive_number, help="as --budget")
    plan.add_argument("--oracle-cost", type=types.positive_number, help="as --budget")
    plan.add_argument(
        "--experiment",
        type=types.subject_name,
        metavar="NAME",
        help="size the policy's pre-registered experiment NAME instead (two-proportion or "
        "mean formula, CUPED, the anytime-valid interval's)",
    )
    plan.add_argument(
        "--config", type=types.readable_file, metavar="FILE", help="overrides DRIFTGATE_CONFIG"
    )
    plan.add_argument("--pilot", type=types.readable_file, help="JSONL with s and y")
    plan.add_argument(
        "--r2",
        type=types.share_below_one,
        help="assumed share of Var(Y) the calibrator explains, in [0, 1)",
    )
    plan.add_argument("--target-mde", type=types.positive_number)
    plan.add_argument("--json", action="store_true")

    baseline = commands.add(
        "baseline",
        "set a stream's score drift baseline from a file of scores or its recent scores",
        cmd_baseline,
    )
    baseline.add_argument("--stream", type=types.subject_name, required=True)
    baseline.add_argument(
        "--from-file", type=types.readable_file, metavar="FILE", help="JSONL with s"
    )
    commands.connection_flags(baseline, kafka=False, redis_=True)
