"""``driftgate status``, ``log`` and ``report``: what the monitor holds, read from Redis."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..presentation._status import ignored_lines
from ..slices import REGISTRY, status_document
from ._common import UsageError, load_settings, open_read_model, print_json

__all__ = ["cmd_log", "cmd_report", "cmd_status"]


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    document = status_document(open_read_model(settings).snapshot(with_history=True))
    shown = document.to_builtins()
    if args.json:
        print_json(shown)
        return 0
    if not any(shown.values()):
        print("nothing monitored yet")
    for kind in REGISTRY:  # each kind's lines, in the order the kinds registered
        section = document.sections.get(kind.name)
        for line in kind.status_lines(section) if kind.status_lines and section is not None else ():
            print(line)
    for line in ignored_lines(document.ignored):
        print(line)
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    # (--hours is at most a century: further back than the epoch means everything.)
    since = None if args.hours is None else max(0, int((time.time() - args.hours * 3600) * 1000))
    entries = [
        record
        for record in open_read_model(settings).audit(since)
        if not args.action or record.get("action") == args.action
    ]
    if args.json:
        print_json(entries)
        return 0
    for record in entries:
        if record.get("kind") == "canary":  # a lifecycle step, from the canary topic
            percent = (
                "" if record["canary_percent"] is None else f" to {record['canary_percent']:g}%"
            )
            by = f" by {record['actor']}" if record.get("actor") else ""
            why = f": {record['rationale']}" if record.get("rationale") else ""
            note = f" ({record['note']})" if record.get("note") else ""
            print(
                f"{record['ts']} {'canary':<14} {record['subject']:<24} "
                f"{record['action']}{percent} bundle={record['bundle_id']}{by}{why}{note}"
            )
        elif record.get("kind") == "webhook":  # an attempt to deliver a decision
            print(
                f"{record['ts']} {'webhook':<14} {record['subject']:<24} "
                f"attempt {record['attempt']} {record['outcome']} to {record['url']} "
                f"action={record['action']} decision={record['decision_id']}"
            )
        elif "gate" not in record:  # an experiment's pre-registration, locked or deviated from
            print(f"{record['ts']} {record['kind']:<14} {record['subject']:<24} {record['note']}")
        else:
            print(
                f"{record['ts']} {record['gate']:<14} {record['subject']:<24} "
                f"{record['verdict']:<12} action={record['action']} reason={record['reason']}"
            )
    if not entries:
        print("no entries")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..presentation._report import ReportError, default_folder, write_report

    settings = load_settings(args)
    read_model = open_read_model(settings)
    snapshot = read_model.snapshot(with_history=True, residual_history_of=args.subject)
    folder = Path(args.out) if args.out is not None else default_folder(args.subject)
    try:
        written = write_report(snapshot, read_model.audit(), args.subject, folder, REGISTRY)
    except ReportError as exc:
        raise UsageError(str(exc)) from exc
    except ImportError as exc:  # matplotlib, for the plots, is in the report extra
        raise UsageError(
            f"the report's plots need matplotlib ({exc}): pip install 'driftgate[report]'"
        ) from exc
    for path in written:
        print(path)
    return 0
