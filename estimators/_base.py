"""What every stateful estimator shares: equality by state, copies, and ``+`` from ``+=``."""

from __future__ import annotations

from typing import Any, Self


class StatefulEstimator:
    """Base of the estimators that round-trip through ``to_state()`` / ``from_state()``.

    Subclasses define ``to_state``, ``from_state`` and, when they merge, ``__iadd__``;
    equality, ``copy`` and ``a + b`` (a merged copy, the operands untouched) follow.
    """

    __slots__ = ()

    def to_state(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        raise NotImplementedError

    def copy(self) -> Self:
        return type(self).from_state(self.to_state())

    def __add__(self, other: Self) -> Self:
        merged = self.copy()
        merged += other
        return merged

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_state() == other.to_state()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable
