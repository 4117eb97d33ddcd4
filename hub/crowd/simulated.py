"""Seeded simulated annotators.

Model of one person: they answer correctly with probability `accuracy` on an average sample; harder samples
(hardness in [0, 1], 0.5 = average) double or vanish the error: p_error = (1 - accuracy) * 2 * hardness, capped.
A wrong answer follows the row of `confusion` when given (people confuse shirts with T-shirts, not with boots),
else a uniformly chosen other class. Answer latency is log-normal with the given median (about 4 s by default),
operations per answer grow with hardness (1..3), and each operation costs `cost_per_operation`.

`behaviour` models the people a field team really gets besides honest ones, so tests and benchmarks can check what
one of them does to a label: `first_class` always presses the first button (class 0), `random` picks any class
uniformly, `adversarial` always picks a wrong class (the confusion row's, when given). They ignore `accuracy`.

People also decline and disappear. `cant_tell` is the chance of answering "can't tell" on the hardest sample (scaled
by hardness: half of it on an average one); `walk_away` the chance, per task taken, of leaving it and the crowd for
good (the hub's task timeout gives it to somebody else). Only the hub path acts on them
(hgen.hub.testing.crowd.CrowdDriver, through the annotator API as the web UI does); the offline `annotate`, which
the compiler's metrics use, has everyone answer every sample, so it refuses a crowd holding such people rather than
pretend they answered. Both draw nothing when 0, so an honest crowd's seeded answers are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hgen.hub.errors import CrowdConfigError

MAX_ERROR = 0.95
BEHAVIOURS = ("honest", "first_class", "random", "adversarial")
ACTIONS = ("answer", "cant_tell", "walk_away")  # what a simulated person does with a task


@dataclass(frozen=True)
class AnnotatorProfile:
    """One simulated person's skill, speed and price."""

    name: str
    accuracy: float
    latency_median_s: float = 4.0
    latency_sigma: float = 0.5
    cost_per_operation: float = 1.0
    confusion: tuple[tuple[float, ...], ...] | None = None
    behaviour: str = "honest"  # one of BEHAVIOURS (see the module docstring)
    cant_tell: float = 0.0  # chance of "can't tell" on the hardest sample (times hardness)
    walk_away: float = 0.0  # chance, per task taken, of leaving it and the crowd for good

    @property
    def declines(self) -> bool:
        """Whether this person may not answer a task they took (only the hub path simulates that)."""
        return self.cant_tell > 0 or self.walk_away > 0

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise CrowdConfigError(f"annotator {self.name!r}: behaviour must be one of {', '.join(BEHAVIOURS)}, "
                                   f"got {self.behaviour!r}")
        if not 0.0 <= self.accuracy <= 1.0:
            raise CrowdConfigError(f"annotator {self.name!r}: accuracy must be in [0, 1], got {self.accuracy}")
        for key in ("cant_tell", "walk_away"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise CrowdConfigError(f"annotator {self.name!r}: {key} must be in [0, 1], got {getattr(self, key)}")
        if self.latency_median_s <= 0 or self.latency_sigma < 0:
            raise CrowdConfigError(f"annotator {self.name!r}: latency median must be > 0 and sigma >= 0")
        if self.cost_per_operation < 0:
            raise CrowdConfigError(f"annotator {self.name!r}: cost per operation must be >= 0")


@dataclass(frozen=True)
class SimulatedAnswer:
    """One simulated person's answer to one sample."""

    label: int
    latency_s: float
    operations: int
    cost: float
    simulated: bool = True
    action: str = "answer"  # one of ACTIONS; `label` is meaningful only for "answer"


class SimulatedAnnotator:
    """A seeded person; the same seed and the same questions give the same answers."""

    def __init__(self, profile: AnnotatorProfile, num_classes: int, seed: int = 0) -> None:
        if num_classes < 2:
            raise CrowdConfigError(f"num_classes must be >= 2, got {num_classes}")
        self.profile = profile
        self.num_classes = num_classes
        self._confusion = _check_confusion(profile, num_classes)
        self._rng = np.random.default_rng(seed)

    @property
    def name(self) -> str:
        return self.profile.name

    def answer(self, truth: int, hardness: float = 0.5) -> SimulatedAnswer:
        if not 0 <= truth < self.num_classes:
            raise CrowdConfigError(f"true label {truth} outside 0..{self.num_classes - 1}")
        hardness = float(np.clip(hardness, 0.0, 1.0))
        label = self._label(int(truth), hardness)
        operations = 1 + int(self._rng.random() < hardness) + int(self._rng.random() < hardness**2)
        latency = float(self.profile.latency_median_s * np.exp(self.profile.latency_sigma * self._rng.standard_normal()))
        return SimulatedAnswer(label, latency, operations, operations * self.profile.cost_per_operation,
                               action=self._action(hardness))

    def _action(self, hardness: float) -> str:
        """Answer, "can't tell" or walk away; no draw for a person who always answers (seeded answers unchanged)."""
        if self.profile.walk_away > 0 and self._rng.random() < self.profile.walk_away:
            return "walk_away"
        if self.profile.cant_tell > 0 and self._rng.random() < self.profile.cant_tell * hardness:
            return "cant_tell"
        return "answer"

    def _label(self, truth: int, hardness: float) -> int:
        behaviour = self.profile.behaviour
        if behaviour == "first_class":
            return 0
        if behaviour == "random":
            return int(self._rng.integers(self.num_classes))
        if behaviour == "adversarial":
            return self._wrong_label(truth)
        p_error = min(MAX_ERROR, (1.0 - self.profile.accuracy) * 2.0 * hardness)
        return self._wrong_label(truth) if self._rng.random() < p_error else truth

    def _wrong_label(self, truth: int) -> int:
        if self._confusion is not None:
            row = self._confusion[truth].copy()
            row[truth] = 0.0
            if row.sum() > 0:
                return int(self._rng.choice(self.num_classes, p=row / row.sum()))
        other = int(self._rng.integers(self.num_classes - 1))
        return other if other < truth else other + 1


def _check_confusion(profile: AnnotatorProfile, num_classes: int) -> np.ndarray | None:
    if profile.confusion is None:
        return None
    matrix = np.asarray(profile.confusion, dtype=np.float64)
    if matrix.shape != (num_classes, num_classes) or np.any(matrix < 0):
        raise CrowdConfigError(
            f"annotator {profile.name!r}: confusion must be a non-negative {num_classes}x{num_classes} matrix, "
            f"got shape {matrix.shape}"
        )
    return matrix


@dataclass(frozen=True)
class CrowdAnswers:
    """Answers of m simulated people to n samples: labels, latency, operations and cost, all [n, m]."""

    labels: np.ndarray
    latency_s: np.ndarray
    operations: np.ndarray
    cost: np.ndarray
    annotators: tuple[tuple[str, ...], ...]
    simulated: bool = field(default=True)

    @property
    def sample_latency_s(self) -> np.ndarray:
        """A sample is answered when its slowest annotator is: people work in parallel."""
        return self.latency_s.max(axis=1) if self.latency_s.size else np.zeros(self.labels.shape[0])


class SimulatedCrowd:
    """A pool of simulated people; each sample goes to m of them, chosen at random without repetition."""

    def __init__(self, profiles: Sequence[AnnotatorProfile], num_classes: int, seed: int = 0) -> None:
        if not profiles:
            raise CrowdConfigError("a crowd needs at least one annotator")
        self.annotators = [SimulatedAnnotator(p, num_classes, seed + 1000 * i) for i, p in enumerate(profiles)]
        self.num_classes = num_classes
        self._rng = np.random.default_rng(seed)

    @classmethod
    def uniform(cls, m: int, accuracy: float, num_classes: int, seed: int = 0,
                latency_median_s: float = 4.0, cost_per_operation: float = 1.0) -> SimulatedCrowd:
        """m people of equal skill: the paper's default crowd."""
        if m < 1:
            raise CrowdConfigError(f"the number of annotators m must be >= 1, got {m}")
        profiles = [AnnotatorProfile(f"sim-{i}", accuracy, latency_median_s, cost_per_operation=cost_per_operation)
                    for i in range(m)]
        return cls(profiles, num_classes, seed)

    def annotate(self, truth: np.ndarray, m: int, hardness: np.ndarray | None = None) -> CrowdAnswers:
        """Ask m people about each sample whose true label is `truth[i]`."""
        if not 1 <= m <= len(self.annotators):
            raise CrowdConfigError(f"m must be in 1..{len(self.annotators)} (the crowd's size), got {m}")
        declining = [a.name for a in self.annotators if a.profile.declines]
        if declining:
            raise CrowdConfigError(f"annotators {', '.join(declining)} may say can't tell or walk away, which only "
                                   "the hub path simulates (hgen.hub.testing.crowd.CrowdDriver); offline, everyone "
                                   "answers every sample")
        truth = np.asarray(truth, dtype=np.int64).reshape(-1)
        hard = np.full(truth.shape, 0.5) if hardness is None else np.asarray(hardness, dtype=np.float64).reshape(-1)
        if hard.shape != truth.shape:
            raise CrowdConfigError(f"hardness has {hard.size} values for {truth.size} samples")
        n = truth.size
        labels = np.empty((n, m), np.int64)
        latency = np.empty((n, m))
        operations = np.empty((n, m), np.int64)
        cost = np.empty((n, m))
        names: list[tuple[str, ...]] = []
        for i in range(n):
            chosen = self._rng.choice(len(self.annotators), size=m, replace=False)
            answers = [self.annotators[j].answer(int(truth[i]), float(hard[i])) for j in chosen]
            labels[i] = [a.label for a in answers]
            latency[i] = [a.latency_s for a in answers]
            operations[i] = [a.operations for a in answers]
            cost[i] = [a.cost for a in answers]
            names.append(tuple(self.annotators[j].name for j in chosen))
        return CrowdAnswers(labels, latency, operations, cost, tuple(names))
