"""``driftgate worker``: the Faust worker, with the metrics and HTTP API beside it."""

from __future__ import annotations

import argparse
import sys

from ..runtime._preflight import ServiceUnavailable, check_redis, ensure_topics
from ..store import KeyLayout, ReadModel, connect, redact
from ._common import load_settings, metrics_url, quiet_kafka_client, with_kafka

__all__ = ["cmd_worker"]


def cmd_worker(args: argparse.Namespace) -> int:
    import faust
    from prometheus_client import CollectorRegistry

    from ..runtime._app import MonitorApp
    from ..serve import GateAPI, StateCollector, serve

    settings = load_settings(args)
    settings.check_api_token()
    settings.policy  # noqa: B018 - validates DRIFTGATE_CONFIG before anything starts
    cluster = check_redis(settings.redis_url)
    with quiet_kafka_client():  # its own line would come before the one-line message
        created = with_kafka(settings, ensure_topics(settings), "creating the topics")
    if created:
        print(f"driftgate: created topics {', '.join(created)}", file=sys.stderr)
    registry = CollectorRegistry()
    monitor = MonitorApp(settings, cluster, registry)
    read_model = ReadModel(connect(settings.redis_url, cluster), KeyLayout(settings.redis_prefix))
    registry.register(StateCollector(read_model))
    api = GateAPI(read_model, registry, monitor.health, settings.policy, settings.api_token)
    try:
        serve(api, settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise ServiceUnavailable(
            f"metrics port {settings.metrics_host}:{settings.metrics_port} unavailable: {exc}"
            " (check DRIFTGATE_METRICS_HOST and DRIFTGATE_METRICS_PORT)"
        ) from exc
    print(
        f"driftgate worker: kafka {settings.kafka_bootstrap}, redis {redact(settings.redis_url)}"
        f"{' (cluster)' if cluster else ''}, metrics {metrics_url(settings)}",
        file=sys.stderr,
        flush=True,
    )
    worker = faust.Worker(
        monitor.app, loglevel=args.loglevel, redirect_stdouts=False, quiet=args.quiet
    )
    if not sys.stdout.isatty():
        # Faust's start-up spinner writes cursor escapes even to a file: a log stays text.
        worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        if monitor.fatal_error is not None:
            raise ServiceUnavailable(str(monitor.fatal_error)) from None
        return int(exit_.code or 0)
    return 0
