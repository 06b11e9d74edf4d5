"""The gate API server's bounds, in one place for the server and the connections' front
(tests lower them by setting these attributes)."""

from __future__ import annotations

from ._http import MAX_BODY

__all__ = [
    "ACCEPT_BACKOFF",
    "BACKLOG",
    "BODY_BUDGET",
    "CONNECTION_LIMIT",
    "LINGER",
    "READ_BUFFER",
    "REQUEST_TIMEOUT",
    "SHUTDOWN_TIMEOUT",
    "THREADS",
]

# The threads that answer what needs a read: one Redis read (HGETALL) and JSON, ~0.1 ms of
# CPU; they contend for the GIL with the loop and the worker; more do not answer faster.
THREADS = 4
# Connections queued by the kernel beyond those being served (bench/http_api.py: with
# wsgiref's 5, 50 parallel controllers waited a second for SYN retries, and some reset).
BACKLOG = 1024
# Connections open at once; the rest wait in the backlog. A connection costs the loop
# nothing while idle (it is not polled), so the limit is for memory and descriptors.
CONNECTION_LIMIT = 512
# Seconds for a request to arrive: its head from the connection or the previous answer
# (an idle keep-alive connection is closed then too), its body from its head. Argo and
# Flagger send a request whole at once; a slow sender is let go in this time.
REQUEST_TIMEOUT = 15.0
# Request bodies held in memory at once, over every connection (each kept up to the API's
# MAX_BODY of 1 MiB); past it a request is answered 503. Flagger's payloads are ~1 KB, so
# only a flood of large bodies reaches it.
BODY_BUDGET = 64 * MAX_BODY
# What aiohttp buffers of a connection before it stops reading it (its default 256 KiB,
# times 512 connections, would be 128 MiB of buffers).
READ_BUFFER = 64 * 1024
# After an answer given before its body was in (408, 413), how long the rest of the body is
# still read and dropped: closing on unread bytes resets the connection, and the sender
# would see the reset instead of the answer.
LINGER = 2.0
# How long close() waits for answers under way.
SHUTDOWN_TIMEOUT = 2.0
# After a failed accept for want of descriptors or memory, before the next.
ACCEPT_BACKOFF = 0.1
