"""The layers, checked on the import statements of every module (by AST, lazy imports in
functions included):

- ``estimators/`` imports nothing of ``monitor``: the numerical core stands alone;
- ``monitor/gates/`` imports no I/O: a gate is a pure function of state and policy;
- only ``monitor/store/`` imports ``redis``: one package owns Redis;
- ``monitor/config/`` imports nothing of ``monitor`` outside itself (``events`` allowed): it
  is the bottom layer, under events, store, gates and subjects, then slices, then runtime,
  serve, presentation and the CLI. What it needs of a layer above comes as a call-back
  (the subject kinds' policy sections and checks: ``config.add_policy_loader``);
- ``monitor/store/`` imports nothing of the layers that read it (slices, presentation,
  serve, workflows, runtime, the CLI): what is shown of its snapshot (the status document,
  an agent) is made above it, in ``monitor/slices/``, and what it shares with them (the
  verdicts' order, the contract's time) lives below it, in ``monitor/events/``;
- every import of ``monitor`` runs down ``LAYERS`` (or within one layer).

What breaks a rule today is listed in ``ALLOWED`` with the reason; an entry that no longer
breaks it fails the test too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IO_MODULES = frozenset(
    {"redis", "aiokafka", "faust", "aiohttp", "socket", "urllib", "http", "subprocess"}
)

# (module path, imported top-level package): known breaches of "only store/ imports
# redis", each to be moved behind monitor/store/ or kept for the reason given.
ALLOWED: dict[tuple[str, str], str] = {
    ("monitor/runtime/_preflight.py", "redis"): (
        "startup checks ping Redis with a short-timeout client and tell refusals apart "
        "(auth, ACL, unreachable) to name the setting to fix; to move into store/"
    ),
    ("monitor/runtime/_services.py", "redis"): (
        "driftgate up starts a redis-server and pings it until it answers; process "
        "supervision, beside the other local services"
    ),
    ("monitor/config/_args.py", "redis"): (
        "validates DRIFTGATE_REDIS_URL with redis-py's own parse_url, so the check agrees "
        "with the client (a lazy import of a third party's parser, no I/O); config sits "
        "below store and may not import it, so it stays here"
    ),
}


# What monitor/config/ may import of monitor beside itself.
CONFIG_MAY_IMPORT = frozenset({"monitor.config", "monitor.events"})

# (module path, imported monitor package): known breaches of "config imports nothing of
# monitor above it", each with the reason it stays. None today.
CONFIG_ALLOWED: dict[tuple[str, str], str] = {}


# What monitor/store/ may not import, at module level or in a function.
ABOVE_STORE = frozenset(
    {
        "monitor.slices",
        "monitor.presentation",
        "monitor.serve",
        "monitor.cli",
        "monitor.runtime",
        "monitor.workflows",
        "monitor.replay",
        "monitor",
    }
)


# monitor's packages, bottom to top; a package imports only from its own layer or below.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(f"monitor.{name}" for name in layer.split())
    for layer in (
        "config",
        "events",
        "store",
        "gates",
        "pipeline",
        "subjects",
        "slices",
        "presentation serve workflows replay",
        "runtime",
        "emit",
        "cli",
    )
)
LAYER_OF = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
TOP = len(LAYERS)  # monitor itself (its __init__ and __main__)

# (module path, imported monitor package): imports that run up the layers, each with the
# reason it stays. A subject kind's module is its slice's wiring: it names its status
# lines and report section (presentation) and its commands (the CLI), imported in the
# function that needs them, so that reading the registry stays light.
LAYERS_ALLOWED: dict[tuple[str, str], str] = {
    ("monitor/slices/_labels.py", "monitor.presentation"): (
        "the labels' kind names its status lines (module level: status reads them) and its "
        "report section (imported when a report is made)"
    ),
    ("monitor/slices/_labels.py", "monitor.cli"): (
        "the labels' kind adds its commands (label, calibrate...) to the CLI's parser, "
        "imported when the parser is built"
    ),
    ("monitor/slices/_experiments.py", "monitor.presentation"): (
        "the experiments' kind names its status lines and its report section, as the "
        "labels' kind does"
    ),
    ("monitor/slices/_experiments.py", "monitor.cli"): (
        "the experiments' kind adds its commands (rollback, promote, experiment...) to the "
        "CLI's parser, imported when the parser is built"
    ),
    ("monitor/slices/_registry.py", "monitor.presentation"): (
        "for type checking only: a kind's report section writes into presentation's Memo"
    ),
}


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Top-level packages imported, absolute (``monitor``, ``redis``) or relative (as the
    absolute package they resolve to)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.add(base[0] if base else (node.module or "").split(".")[0])
            elif node.module:
                found.add(node.module.split(".")[0])
    return found


def _monitor_packages(path: Path) -> set[str]:
    """The packages of ``monitor`` imported (``monitor.store``; ``monitor`` itself for
    ``import monitor`` or a name of its ``__init__``), absolute or relative, at module
    level or in a function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            # `from .. import store` imports the package monitor.store
            names = [[*module, alias.name] for alias in node.names] if not node.module else [module]
        else:
            continue
        for parts in names:
            if parts[0] == "monitor":
                subpackage = ".".join(parts[:2])
                known = len(parts) > 1 and (ROOT / "monitor" / parts[1]).exists()
                found.add(subpackage if known else "monitor")
    return found


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_walk_sees_the_packages() -> None:
    assert len(list(_modules("estimators"))) > 10
    assert {"redis"} <= _imports(ROOT / "monitor/store/_client.py")
    assert "monitor" in _imports(ROOT / "monitor/gates/_canary.py")  # relative: .._config
    assert "monitor.config" in _monitor_packages(ROOT / "monitor/gates/_canary.py")
    assert "monitor.config" in _monitor_packages(ROOT / "monitor/store/_client.py")
    assert "monitor.slices" in _monitor_packages(ROOT / "monitor/__init__.py")  # from . import


def test_estimators_import_nothing_of_monitor() -> None:
    offenders = [_relative(path) for path in _modules("estimators") if "monitor" in _imports(path)]
    assert offenders == []


def test_gates_import_no_io() -> None:
    offenders = {
        _relative(path): sorted(_imports(path) & IO_MODULES)
        for path in _modules("monitor/gates")
        if _imports(path) & IO_MODULES
    }
    assert offenders == {}


def test_only_store_imports_redis() -> None:
    offenders = {
        (_relative(path), "redis")
        for path in _modules("monitor")
        if "redis" in _imports(path) and not _relative(path).startswith("monitor/store/")
    }
    unexplained = sorted(offenders - ALLOWED.keys())
    assert unexplained == [], "import redis only in monitor/store/ (or explain it in ALLOWED)"
    stale = sorted(ALLOWED.keys() - offenders)
    assert stale == [], "these no longer import redis: take them off ALLOWED"


@pytest.mark.parametrize("breach", sorted(ALLOWED))
def test_every_allowed_breach_says_why(breach: tuple[str, str]) -> None:
    assert (ROOT / breach[0]).exists() and len(ALLOWED[breach]) > 40


def test_config_imports_nothing_of_monitor_above_it() -> None:
    offenders = {
        (_relative(path), package)
        for path in _modules("monitor/config")
        for package in _monitor_packages(path) - CONFIG_MAY_IMPORT
    }
    unexplained = sorted(offenders - CONFIG_ALLOWED.keys())
    assert unexplained == [], "config is the bottom layer (or explain it in CONFIG_ALLOWED)"
    stale = sorted(CONFIG_ALLOWED.keys() - offenders)
    assert stale == [], "these no longer break the rule: take them off CONFIG_ALLOWED"
    assert all(len(why) > 40 for why in CONFIG_ALLOWED.values()), "say why each stays"


def test_store_imports_nothing_that_reads_it() -> None:
    offenders = sorted(
        (_relative(path), package)
        for path in _modules("monitor/store")
        for package in _monitor_packages(path) & ABOVE_STORE
    )
    assert offenders == [], "store is read by these layers: make what they show above it"


def test_the_walk_sees_imports_in_functions() -> None:
    # The labels' slice imports the CLI only in a function (its commands, on demand).
    assert "monitor.cli" in _monitor_packages(ROOT / "monitor/slices/_labels.py")


def _layer(package: str) -> int:
    return LAYER_OF.get(package, TOP)


def test_every_import_runs_down_the_layers() -> None:
    offenders = {
        (_relative(path), package)
        for path in _modules("monitor")
        for package in _monitor_packages(path)
        if _layer(package) > _layer(".".join(path.relative_to(ROOT).parts[:2]))
    }
    unexplained = sorted(offenders - LAYERS_ALLOWED.keys())
    assert unexplained == [], "an import runs up the layers (or explain it in LAYERS_ALLOWED)"
    stale = sorted(LAYERS_ALLOWED.keys() - offenders)
    assert stale == [], "these no longer run up: take them off LAYERS_ALLOWED"
    assert all(len(why) > 40 for why in LAYERS_ALLOWED.values()), "say why each stays"
    assert set(LAYER_OF) == {
        f"monitor.{path.name}" for path in (ROOT / "monitor").iterdir() if path.is_dir()
    } - {"monitor.__pycache__"}, "give every package of monitor a layer"
