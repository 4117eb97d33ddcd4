"""Which search candidates become shipped variants (issue 22): the Pareto front over A, T, S, E, L, then up to K
spread over energy with the most accurate and the leanest always in."""

from __future__ import annotations

from hgen.compiler.search.context import Candidate
from hgen.compiler.search.objective import Measured
from hgen.compiler.variants import pareto_front, spread


def candidate(i: int, accuracy: float, energy: float, *, latency: float = 1.0, skipped: bool = False) -> Candidate:
    return Candidate(i, i, {"conv1": f"op{i}"}, 0.5, Measured(accuracy, latency, 0.1, energy, 0.05), 0.0, 0.0, (),
                     i, 0.0, skipped_on_paper=skipped)


def test_dominated_and_skipped_candidates_are_not_on_the_front() -> None:
    rows = [candidate(0, 0.90, 0.5), candidate(1, 0.85, 0.3), candidate(2, 0.80, 0.1),
            candidate(3, 0.84, 0.4),  # worse than 1 on accuracy and energy
            candidate(4, 0.95, 0.05, skipped=True)]  # over budget on paper: never measured for real
    assert [c.index for c in pareto_front(rows)] == [0, 1, 2]


def test_spread_keeps_the_extremes_and_at_most_k() -> None:
    front = [candidate(i, 0.80 + 0.01 * i, 0.1 + 0.05 * i) for i in range(9)]  # more accuracy costs more energy
    picked = spread(front, 4)
    assert len(picked) == 4
    energies = [c.measured.energy_mj for c in picked]
    assert max(energies) == max(c.measured.energy_mj for c in front)  # the most accurate
    assert min(energies) == min(c.measured.energy_mj for c in front)  # the leanest
    assert energies == sorted(energies, reverse=True)
    assert spread(front[:3], 4) == sorted(front[:3], key=lambda c: -c.measured.energy_mj)
