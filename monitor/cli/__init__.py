"""The ``driftgate`` command line.

Exit status: 0 done; 2 bad usage or bad input; 1 a runtime failure (a service
unreachable and so on). Each message is one line that names the problem, or the service
and where it was looked for; secrets never appear in one.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from ._exit import ReaderGone, run
from ._parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    from aiokafka.errors import KafkaError

    try:
        return run(build_parser().parse_args(argv), KafkaError)
    except ReaderGone:
        # `driftgate log | head`: the reader closed the pipe, it has what it wanted. Point
        # stdout at /dev/null so that the interpreter's last flush does not fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
