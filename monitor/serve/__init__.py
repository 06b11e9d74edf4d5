"""What driftgate serves: the Prometheus metrics (and, beside them, the HTTP gate API)."""

from ._metrics import StateCollector

__all__ = ["StateCollector"]
