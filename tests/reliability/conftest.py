"""Fault injection against the real broker and Redis: the services and deployments of the
integration tests (``tests/integration/conftest.py``), shared, not copied."""

import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    deployment,
    kafka_bootstrap,
    kafka_broker,
    redis_server,
)

# The oracle's checks say what differed, as assertions in a test module do.
pytest.register_assert_rewrite("tests.reliability._oracle")
