"""The registry of subject kinds: the built-in kinds as registered, a registered kind's
policy section read and checked with the file, and the claims a kind may not make."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.config import ConfigError, Policy, PolicySection, Settings, load_policy
from monitor.slices import HANDLERS, OTLP_HANDLERS, REGISTRY, ApiRoute, SubjectKind

ROOT = Path(__file__).resolve().parents[3]


def test_the_built_in_kinds_register_the_contract_s_topics_in_order() -> None:
    assert [kind.name for kind in REGISTRY] == ["labels", "experiments", "otlp"]
    assert REGISTRY.topics() == (
        "labels",
        "telemetry",
        "canary",
        "otlp.spans",
        "otlp.logs",
        "decisions",
        "dlq",
    )
    assert list(HANDLERS) == ["labels", "telemetry", "canary"]
    assert list(OTLP_HANDLERS) == ["otlp.spans", "otlp.logs"]
    for topic, make in REGISTRY.handlers().items():
        assert make(Policy()).topic == topic  # the entry names the handler's own topic
    assert REGISTRY.gate_parts() == {"covariate_drift": "covariate"}
    assert list(REGISTRY.api()) == ["agents"]
    assert REGISTRY.report_nouns() == "stream, experiment or agent"


def test_reading_the_registry_imports_no_handler() -> None:
    # status, the parser and the metrics read it: scipy (a second and a half) waits for a
    # worker to make a handler.
    code = (
        "import sys; from monitor.slices import REGISTRY; "
        "print([k.name for k in REGISTRY], 'scipy' in sys.modules, "
        "'monitor.subjects' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert shown.stdout.split("]")[1].split() == ["False", "False"], shown.stdout


@dataclass(frozen=True)
class DepthPolicy:
    depth_max: float = 100.0
    queues: tuple[str, ...] = ()


def check_depth(policy: DepthPolicy) -> None:
    if policy.depth_max <= 0:
        raise ConfigError(f"queues.depth_max must be positive, got {policy.depth_max}")


QUEUES = SubjectKind(
    name="queues",
    kinds=("queue",),
    handlers={"queues": HANDLERS["labels"]},  # (any factory: the registry does not call it)
    policy=(PolicySection("queues", DepthPolicy, check_depth),),
    api={"queues": ApiRoute("queue", "queue", lambda snapshot, name: None)},
    report_nouns=("queue",),
)


@pytest.fixture
def registered() -> Iterator[SubjectKind]:
    REGISTRY.register(QUEUES)
    yield QUEUES
    REGISTRY.unregister(QUEUES)


@pytest.mark.usefixtures("registered")
def test_a_registered_kind_s_section_is_read_and_checked_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("queues:\n  depth_max: 7\n  queues: [orders]\nscore_drift:\n  min_n: 5\n")
    policy = load_policy(str(path))
    assert policy.section("queues") == DepthPolicy(7.0, ("orders",))
    assert policy.score_drift.min_n == 5
    assert Policy().section("queues") == DepthPolicy()  # left out: the defaults

    path.write_text("queues:\n  depth_max: -1\n")
    with pytest.raises(ConfigError, match=r"policy.yaml: queues.depth_max must be positive"):
        load_policy(str(path))
    path.write_text("queues:\n  depth: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key queues.depth; known: depth_max, queues"):
        load_policy(str(path))
    path.write_text("queue:\n  depth_max: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key queue; known: .*, queues, "):
        load_policy(str(path))
    assert REGISTRY.report_nouns() == "stream, experiment, agent or queue"


@pytest.mark.usefixtures("registered")
def test_a_registered_kind_s_topics_come_after_the_built_in_ones() -> None:
    assert REGISTRY.topics()[-4:] == ("otlp.logs", "queues", "decisions", "dlq")
    assert list(REGISTRY.handlers(events=True)) == ["labels", "telemetry", "canary", "queues"]
    assert list(REGISTRY.handlers(events=True, builtin=True)) == list(HANDLERS)


def test_an_unregistered_kind_s_section_is_an_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("queues:\n  depth_max: 7\n")
    with pytest.raises(ConfigError, match="unknown key queues"):
        load_policy(str(path))
    path.write_text("sections:\n  queues: {}\n")  # the field that holds them is no key
    with pytest.raises(ConfigError, match="unknown key sections"):
        load_policy(str(path))


@pytest.mark.usefixtures("registered")
def test_a_kind_may_not_claim_another_s_name_topic_or_path() -> None:
    assert REGISTRY.register(QUEUES) is QUEUES  # again: nothing changes
    for clash, message in (
        (SubjectKind(name="queues"), "named 'queues' is registered already"),
        (SubjectKind(name="q", handlers={"labels": HANDLERS["labels"]}), "topic 'labels'"),
        (SubjectKind(name="q", handlers={"dlq": HANDLERS["labels"]}), "'dlq' of 'q'"),
        (
            SubjectKind(name="q", api={"agents": ApiRoute("queue", "q", lambda s, n: None)}),
            "HTTP API collection 'agents'",
        ),
        (
            SubjectKind(name="q", api={"gates": ApiRoute("queue", "q", lambda s, n: None)}),
            "'gates' of 'q' is driftgate's own",
        ),
        (
            SubjectKind(
                name="q",
                policy=(PolicySection("depths", DepthPolicy), PolicySection("canary", DepthPolicy)),
            ),
            "policy section 'canary' is a built-in one",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            REGISTRY.register(clash)
    assert [kind.name for kind in REGISTRY] == ["labels", "experiments", "otlp", "queues"]
    with pytest.raises(KeyError):  # all of a refused kind's sections went with it
        Policy().section("depths")


def test_driftgate_subjects_names_modules_that_must_import() -> None:
    settings = Settings.from_env({"DRIFTGATE_SUBJECTS": "tests.unit, a.b_c ,"})
    assert settings.subject_modules == ("tests.unit", "a.b_c")
    with pytest.raises(ConfigError, match="DRIFTGATE_SUBJECTS must name Python modules"):
        Settings.from_env({"DRIFTGATE_SUBJECTS": "not a/module"})
    with pytest.raises(ConfigError, match="DRIFTGATE_SUBJECTS names 'no_such_kind_module'"):
        REGISTRY.load(["no_such_kind_module"])
