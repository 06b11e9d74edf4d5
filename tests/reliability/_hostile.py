"""Hostile input for every input topic, with what each message must come to.

A message is either wholly hostile (bytes that are not JSON, JSON nested a hundred
thousand deep, ``NaN`` literals) and must reach the dead-letter topic whole, once; or an
envelope mixing good events with bad elements (wrong types, missing fields, numbers
beyond a double, oversized strings where a number goes, arrays of thousands of junk
elements), whose good events must count and whose bad elements must each reach the
dead-letter topic (all of them whole, once, past a thousand). Good events with huge
strings where strings go are good.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import orjson

# A message with more bad elements goes to the dead-letter topic whole (the runner's
# LETTERS_PER_MESSAGE).
LETTERS_PER_MESSAGE = 1_000
# Replaced by 1e400 in the JSON: a number literal beyond a double (decoded, it is inf).
BEYOND = "<beyond a double>"
# Required numbers (an optional one may be null, which is what orjson makes of inf).
NUMBER_FIELDS = {
    "labels": ("s", "ts"),
    "telemetry": ("ts", "primary_outcome"),
    "canary": ("ts", "canary_percent"),
}
TEXT_FIELDS = {
    "labels": ("event_id", "stream"),
    "telemetry": ("event_id", "experiment_id", "unit_id", "variant"),
    "canary": ("event_id", "agent", "bundle_id"),
}
# Finite, and small enough that no statistic of them overflows a double. (A finite number
# whose square overflows is accepted by the decoders and poisons its subject's state:
# see test_hostile_input.py.)
GOOD_NUMBERS = (0.0, -0.0, 5e-324, 1e-300, 1.0, 0.5, -3.25, 1e6, -1e6)


@dataclass(frozen=True)
class Hostile:
    """A message value and what it must come to."""

    value: bytes
    good: int
    """Good events in it (each a new event id)."""
    dead_letters: int
    """Dead letters it must make."""


class HostileInput:
    """Hostile messages for one topic, drawn from ``chance`` (seeded, or hypothesis')."""

    def __init__(self, topic: str, chance: random.Random, subjects: int = 3, run: str = "") -> None:
        """``run`` makes the event ids of several inputs of one topic distinct."""
        self.topic = topic
        self.run = run
        self.chance = chance
        self.subjects = [f"h{topic[0]}-{i}" for i in range(subjects)]
        self.counter = 0

    def message(self) -> Hostile:
        kinds = (self.not_json, self.deep, self.nan_literal, self.envelope, self.envelope)
        return self.chance.choice(kinds)()

    # --- wholly hostile ---------------------------------------------------------------------

    def not_json(self) -> Hostile:
        junk = self.chance.randbytes(self.chance.randint(0, 3000))
        return Hostile(b"\xff" + junk, 0, 1)  # 0xff starts no JSON value

    def deep(self) -> Hostile:
        depth = self.chance.choice([2, 100, 5_000, 100_000])
        return Hostile(b"[" * depth + b"]" * depth, 0, 1)

    def nan_literal(self) -> Hostile:
        literal = self.chance.choice([b"NaN", b"Infinity", b"-Infinity"])
        event = orjson.dumps(self.good_event()).replace(b'"ts":', b'"ts":' + literal + b',"x":')
        return Hostile(b"[" + event + b"]", 0, 1)  # not JSON: the whole message

    # --- envelopes ----------------------------------------------------------------------------

    def envelope(self) -> Hostile:
        chance = self.chance
        good = [self.good_event() for _ in range(chance.randint(0, 20))]
        bad = [self.bad_element() for _ in range(chance.randint(0, 5))]
        if chance.random() < 0.2:  # a huge array of junk, around the per-message limit
            bad += [chance.choice([1, None, "x", [], {}])] * chance.choice([10, 1_200, 3_000])
        elements = good + bad
        chance.shuffle(elements)
        if not elements:
            return Hostile(b"[]", 0, 0)
        letters = len(bad) if len(bad) <= LETTERS_PER_MESSAGE else 1
        value = orjson.dumps(elements).replace(b'"%s"' % BEYOND.encode(), b"1e400")
        return Hostile(value, len(good), letters)

    def good_event(self) -> dict[str, Any]:
        chance = self.chance
        self.counter += 1
        event_id = f"{self.topic}-{self.run}-{self.counter}"
        if chance.random() < 0.05:
            event_id += "i" * 100_000  # an oversized string where a string goes: good
        subject = chance.choice(self.subjects)
        ts = time.time() - chance.uniform(0, 3600)
        number = chance.choice(GOOD_NUMBERS)
        if self.topic == "labels":
            y = None if chance.random() < 0.2 else chance.choice(GOOD_NUMBERS)
            return {"event_id": event_id, "ts": ts, "stream": subject, "s": number, "y": y}
        if self.topic == "telemetry":
            return {
                "event_id": event_id,
                "ts": ts,
                "experiment_id": subject,
                "unit_id": "u",
                "variant": chance.choice(["control", "treatment"]),
                "primary_outcome": chance.choice([number, True, None]),
                "guardrails": {"latency_ms": abs(number), "toxicity": False},
            }
        return {
            "event_id": event_id,
            "ts": ts,
            "agent": subject,
            "bundle_id": "b",
            "action": chance.choice(["deploy", "promote"]),
            "canary_percent": chance.choice([0, 10, 50, 100]),
        }

    def bad_element(self) -> Any:
        """An element that is no valid event of the topic, whatever else it holds."""
        chance = self.chance
        event = self.good_event()
        field = chance.choice(["number", "text", "missing", "scalar"])
        if field == "number":  # a wrong type, an oversized string or beyond a double
            wrong = chance.choice(["1.5", "x" * 200_000, [1.0], {"v": 1}, BEYOND])
            event[chance.choice(NUMBER_FIELDS[self.topic])] = wrong
        elif field == "text":
            event[chance.choice(TEXT_FIELDS[self.topic])] = chance.choice([7, 0.5, ["a"], None])
        elif field == "missing":
            del event[chance.choice(TEXT_FIELDS[self.topic])]
        else:
            return chance.choice([1, "event", None, True, [event]])
        return event
