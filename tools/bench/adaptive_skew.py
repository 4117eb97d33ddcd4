"""Part (b) of the adaptive benchmark (issue 22, SMART): skewed FashionMNIST streams with and without the runtime
class prior, through the device's own code.

Each frame runs through what the agent runs: the signed bundle's LiteRT engine (`edge_agent.model.load_model`),
the agent's `ClassPrior` (adjust before the gate, trust confident answers and fused answers), the agent's `Gate`
at the bundle's tau, the runtime kind's fusion. Only the threads and the hub are left out: people are SIMULATED
(`hub.crowd.SimulatedCrowd`, m=3, accuracy 0.9, hardness from the model's view, as everywhere in hgen) and their
reply reaches the device `REPLY_LAG` frames later. Labour is what the simulated people spent (operations), as
Eq. 13's L over the stream. With and without the prior see the same frames and the same answers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from hgen.edge_agent.adapt.prior import ClassPrior
from hgen.edge_agent.config import GateConfig, PriorConfig
from hgen.edge_agent.gating import Decision, Gate
from hgen.edge_agent.model import Model
from hgen.edge_agent.telemetry import Telemetry
from hgen.runtime.labour import MAX_OPERATIONS, MAX_PARTICIPANTS

REPLY_LAG = 100  # frames between escalation and the reply (1 s at 100 frames/s; the demo's batches wait up to 2 s)
FRAMES = 4000
DOMINANT_SHARE = 0.8


@dataclass(frozen=True)
class Stream:
    name: str
    indices: np.ndarray  # into the pool
    switch_at: int | None  # frame where the mix switches (None: one mix)
    dominant: tuple[tuple[int, ...], ...]  # dominant classes per segment


def skewed_indices(labels: np.ndarray, dominant: tuple[int, ...], count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` pool indices: DOMINANT_SHARE of them from `dominant` classes (equally), the rest from the others."""
    classes = int(labels.max()) + 1
    weights = np.full(classes, (1 - DOMINANT_SHARE) / (classes - len(dominant)))
    weights[list(dominant)] = DOMINANT_SHARE / len(dominant)
    wanted = rng.choice(classes, size=count, p=weights)
    by_class = [np.flatnonzero(labels == c) for c in range(classes)]
    return np.array([rng.choice(by_class[c]) for c in wanted])


def make_streams(labels: np.ndarray, seed: int) -> list[Stream]:
    """uniform; 3 classes at 80 %; 2 classes at 80 %; 3 classes at 80 % switching to 3 others mid-stream."""
    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    order = rng.permutation(classes)
    a, b, two = tuple(int(c) for c in order[:3]), tuple(int(c) for c in order[3:6]), tuple(int(c) for c in order[6:8])
    half = FRAMES // 2
    return [
        Stream("uniform", rng.integers(0, len(labels), FRAMES), None, ()),
        Stream("skewed-3", skewed_indices(labels, a, FRAMES, rng), None, (a,)),
        Stream("skewed-2", skewed_indices(labels, two, FRAMES, rng), None, (two,)),
        Stream("switch-3", np.concatenate([skewed_indices(labels, a, half, rng), skewed_indices(labels, b, half, rng)]),
               half, (a, b)),
    ]


def replay(model: Model, logits: np.ndarray, truth: np.ndarray, answers: np.ndarray, operations: np.ndarray,
           prior: PriorConfig | None) -> dict[str, Any]:
    """One pass of a stream; logits/truth/answers/operations are per frame. Returns share, L, accuracies, changes."""
    gate = Gate(GateConfig(audit_share=0.0))
    tracker = ClassPrior(prior, Telemetry(), model) if prior is not None else None
    replies: deque[tuple[int, int]] = deque()  # (frame due, fused label)
    final = np.empty(len(truth), np.int64)
    model_only = np.empty(len(truth), np.int64)
    to_people = np.zeros(len(truth), bool)
    trusted_at: list[int] = []  # frame of each trusted label, to express change detection in frames
    for i in range(len(truth)):
        while replies and replies[0][0] <= i:
            if tracker is not None:
                tracker.trust(replies.popleft()[1])
                trusted_at.append(i)
            else:
                replies.popleft()
        z = logits[i:i + 1]
        if tracker is not None:
            z = tracker.adjust(model, z)
        decision = gate.decide(model.confidence(z), model.tau, float(i))
        model_only[i] = int(model.kind.predict(z, model.params)[0])
        if decision is Decision.ESCALATE:
            to_people[i] = True
            final[i] = int(model.kind.fuse(z, answers[i:i + 1], model.params)[0])
            replies.append((i + REPLY_LAG, int(final[i])))
        else:
            final[i] = model_only[i]
            if tracker is not None:
                tracker.trust(int(final[i]))
                trusted_at.append(i)
    labour = float(operations[to_people].sum()) / (len(truth) * MAX_PARTICIPANTS * MAX_OPERATIONS)
    changes = [] if tracker is None else [{"trusted_labels": c.observed, "frame": trusted_at[c.observed - 1],
                                           "l1": round(c.distance, 4)} for c in tracker.changes()]
    return {"share_to_people": float(to_people.mean()), "labour": labour,
            "fused": float((final == truth).mean()), "model_only": float((model_only == truth).mean()),
            "changes": changes, "trusted_at": trusted_at}


def run_stream(model: Model, pool_logits: np.ndarray, pool_labels: np.ndarray, answers: Any, stream: Stream,
               prior: PriorConfig) -> dict[str, Any]:
    """With and without the prior on the same frames and the same SIMULATED answers."""
    idx = stream.indices
    args = (pool_logits[idx], pool_labels[idx], answers.labels[idx], answers.operations[idx])
    without, with_prior = replay(model, *args, None), replay(model, *args, prior)
    row = {"stream": stream.name, "dominant": [list(d) for d in stream.dominant],
           "share_with_prior": with_prior["share_to_people"], "share_without": without["share_to_people"],
           "labour_with_prior": with_prior["labour"], "labour_without": without["labour"],
           "fused_with_prior": with_prior["fused"], "fused_without": without["fused"],
           "model_only_with_prior": with_prior["model_only"], "model_only_without": without["model_only"],
           "changes": with_prior["changes"]}
    if stream.switch_at is not None:
        before = sum(1 for frame in with_prior["trusted_at"] if frame < stream.switch_at)
        after = [c for c in with_prior["changes"] if c["frame"] >= stream.switch_at]
        row["switch_at_frame"] = stream.switch_at
        row["switch_detected_frame"] = after[0]["frame"] if after else None
        row["switch_detected_windows"] = (round((after[0]["trusted_labels"] - before) / prior.window, 3)
                                          if after else None)
    return row
