"""The public API is deliberate: everything in __all__ exists and nothing private leaks."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["estimators", "monitor"])
def test_all_names_exist_and_are_public(package: str) -> None:
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert not name.startswith("_")
        assert getattr(module, name) is not None


def test_estimators_do_no_io() -> None:
    """estimators/ is the pure core: numpy and scipy, never Kafka, Redis or HTTP."""
    import pathlib

    modules = ("faust", "aiokafka", "redis", "prometheus_client", "socket", "matplotlib")
    root = pathlib.Path(importlib.import_module("estimators").__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        for module in modules:
            assert f"import {module}" not in text, (path, module)
            assert f"from {module}" not in text, (path, module)
        assert "open(" not in text, path
