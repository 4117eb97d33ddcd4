"""Tau refinement: the sweep measures every threshold as `evaluate_hdnn` does, and the choice is the most accurate
threshold within the labour budget (equal to a brute-force loop), falling back to the least labour when none fits."""

from types import SimpleNamespace

import numpy as np
import pytest

from hgen.compiler.data import Split
from hgen.compiler.metrics import ask_crowd, evaluate_hdnn, fit_difficulty
from hgen.compiler.metrics.hdnn import TauSweep, refine_tau, sweep_tau
from hgen.compiler.search.evaluator import Backbone, CandidateEvaluator, EvaluatorConfig, HeldOut
from hgen.hub.crowd import SimulatedCrowd
from hgen.runtime.calibration import softmax

CLASSES, M, TEMPERATURE, LAMBDA = 5, 3, 1.3, 0.1


def synthetic(n: int, seed: int = 0, difficulty=None):
    """Logits that are right about 70% of the time, with a spread of confidences, and the crowd's answers.

    `difficulty`: reuse a fitted estimator (as the search does for its search and test splits) instead of fitting one.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    logits = rng.normal(0, 1.0, (n, CLASSES))
    logits[np.arange(n), labels] += rng.uniform(0, 3.0, n)
    crowd = SimulatedCrowd.uniform(M, 0.85, CLASSES, seed)
    answers = ask_crowd(crowd, logits, labels, M, TEMPERATURE)
    difficulty = difficulty or fit_difficulty(crowd, logits, labels, M, TEMPERATURE)
    return logits, labels, answers, difficulty


def measure(data, tau: float):
    logits, labels, answers, difficulty = data
    return evaluate_hdnn(logits, labels, answers, tau=tau, temperature=TEMPERATURE, fusion_lambda=LAMBDA,
                         difficulty=difficulty)


def sweep(data, proposal: float) -> TauSweep:
    logits, labels, answers, difficulty = data
    return sweep_tau(logits, labels, answers, temperature=TEMPERATURE, fusion_lambda=LAMBDA, difficulty=difficulty,
                     extra_taus=(proposal,))


@pytest.fixture(scope="module")
def small():
    return synthetic(300)


def test_sweep_matches_evaluate_hdnn_at_every_threshold(small):
    result = sweep(small, 0.777)
    assert 0.777 in result.taus and result.taus[0] == 0.0 and result.taus[-1] == 1.0
    assert len(result.taus) >= 300  # every distinct confidence is a candidate
    for tau, accuracy, labour in zip(result.taus, result.accuracy, result.labour):
        truth = measure(small, float(tau))
        assert accuracy == truth.accuracy_fused
        assert labour == pytest.approx(truth.labour, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("budget", [0.0, 0.002, 0.01, 0.03, 0.06, 1.0])
@pytest.mark.parametrize("proposal", [0.1, 0.63, 0.95])
def test_refinement_equals_a_brute_force_loop(small, budget, proposal):
    """Brute force: every distinct confidence, the proposal, 0 and 1, each measured by evaluate_hdnn."""
    confidences = softmax(small[0], TEMPERATURE).max(axis=1)
    rows = [(float(t), measure(small, float(t))) for t in np.unique(np.r_[confidences, proposal, 0.0, 1.0])]
    within = [(t, r) for t, r in rows if r.labour <= budget]
    best = max(r.accuracy_fused for _, r in within)
    least = min(r.labour for _, r in within if r.accuracy_fused == best)
    expected = min((abs(t - proposal), t) for t, r in within if r.accuracy_fused == best and r.labour == least)[1]
    choice = refine_tau(sweep(small, proposal), proposal, budget)
    assert choice.meets_labour and choice.proposal == proposal
    assert choice.tau == pytest.approx(expected)
    assert choice.accuracy == best and choice.labour <= budget
    assert measure(small, choice.tau).accuracy_fused == choice.accuracy


def test_a_generous_budget_buys_accuracy(small):
    tight = refine_tau(sweep(small, 0.5), 0.5, 0.0)
    loose = refine_tau(sweep(small, 0.5), 0.5, 1.0)
    assert tight.labour == 0.0 and loose.accuracy > tight.accuracy
    assert loose.accuracy >= measure(small, 0.5).accuracy_fused


def test_no_threshold_within_budget_falls_back_to_least_labour_and_says_so():
    """Chosen fallback: the least-labour thresholds (most accurate of them), flagged `meets_labour=False`."""
    swept = TauSweep(np.array([0.2, 0.4, 0.6, 0.8]), np.array([5, 7, 6, 9]), np.array([0.02, 0.02, 0.05, 0.08]), 10)
    choice = refine_tau(swept, 0.9, 0.01)
    assert not choice.meets_labour
    assert (choice.tau, choice.accuracy, choice.labour) == (0.4, 0.7, 0.02)
    assert refine_tau(swept, 0.9, 0.05).tau == 0.4  # within budget the most accurate wins
    assert refine_tau(swept, 0.9, 0.08).tau == 0.8


def test_ties_prefer_less_labour_then_the_proposal():
    swept = TauSweep(np.array([0.1, 0.3, 0.5, 0.7]), np.array([8, 8, 8, 8]), np.array([0.0, 0.01, 0.01, 0.02]), 10)
    assert refine_tau(swept, 0.6, 1.0).tau == 0.1
    swept = TauSweep(np.array([0.1, 0.3, 0.5, 0.7]), np.array([7, 8, 8, 8]), np.array([0.0, 0.01, 0.01, 0.01]), 10)
    assert refine_tau(swept, 0.6, 1.0).tau == 0.5 and refine_tau(swept, 0.0, 1.0).tau == 0.3


def test_thousands_of_samples_refine_to_the_threshold_measure_agrees_with():
    data = synthetic(20_000, seed=1)
    choice = refine_tau(sweep(data, 0.5), 0.5, 0.03)
    truth = measure(data, choice.tau)
    assert truth.accuracy_fused == pytest.approx(choice.accuracy) and truth.labour <= 0.03 + 1e-12


def test_evaluator_refines_on_its_search_split_as_measure_measures(small):
    logits, labels, answers, difficulty = small
    fake = SimpleNamespace(search=HeldOut(Split(np.zeros((len(labels), 1)), labels), answers),
                           config=EvaluatorConfig(fusion_lambda=LAMBDA), difficulty=difficulty)
    fake.sweep = lambda backbone, proposal: CandidateEvaluator.sweep(fake, backbone, proposal)
    backbone = Backbone({}, None, TEMPERATURE, logits, 0, 0, 0.1, 0.1, 2.0, 0.0)
    choice = CandidateEvaluator.refine_tau(fake, backbone, 0.4, 0.02)
    measured = CandidateEvaluator.measure(fake, backbone, choice.tau)
    assert measured.accuracy == choice.accuracy and measured.labour == pytest.approx(choice.labour)
    assert measured.labour <= 0.02 and choice.proposal == 0.4


def test_labour_upper_bound_is_the_point_value_without_confidence_and_above_it_with():
    swept = sweep(synthetic(1000, seed=3), 0.5)
    assert np.array_equal(swept.labour_upper(0.0), swept.labour)
    upper = swept.labour_upper(0.9)
    assert np.all(upper >= swept.labour) and np.any(upper > swept.labour)
    assert upper[0] == swept.labour[0] == 0.0  # nobody asked: no labour, no doubt


def test_a_tau_chosen_on_the_labour_bound_keeps_new_data_within_the_budget():
    """Twenty searches, each judged on a fresh split from the same source with the search's difficulty estimator (as
    the compile's test split is): the point choice sits just under L_c and lands above it on new data about half the
    time; the 90% upper bound's choice rarely does (measured: 9 of 20 against 1 of 20)."""
    over = {0.0: 0, 0.9: 0}
    for seed in range(20):
        search = synthetic(1000, seed=seed)
        fresh = synthetic(1000, seed=1000 + seed, difficulty=search[3])
        for confidence in over:
            choice = refine_tau(sweep(search, 0.5), 0.5, 0.03, confidence)
            assert choice.meets_labour
            over[confidence] += measure(fresh, choice.tau).labour > 0.03
    assert over[0.0] >= 6 and over[0.9] <= 3


def test_sweep_latency_matches_evaluate_hdnn_and_caps_the_threshold(small):
    """Eq. 10's latency grows with tau (people's time): the sweep's equals `evaluate_hdnn`'s at every threshold, and
    a latency demand the most accurate threshold would break moves the choice down to one that meets it."""
    logits, labels, answers, difficulty = small
    swept = sweep(small, 0.5)
    for tau, latency in list(zip(swept.taus, swept.latency_upper(2.0, 0.0)))[::25]:
        truth = evaluate_hdnn(logits, labels, answers, tau=float(tau), temperature=TEMPERATURE, fusion_lambda=LAMBDA,
                              difficulty=difficulty, t_infer_ms=2.0)
        assert latency == pytest.approx(truth.latency_ms)
    free = refine_tau(swept, 0.5, 1.0)
    free_ms = evaluate_hdnn(logits, labels, answers, tau=free.tau, temperature=TEMPERATURE, fusion_lambda=LAMBDA,
                            difficulty=difficulty, t_infer_ms=2.0).latency_ms
    budget = 2.0 + (free_ms - 2.0) / 2
    capped = refine_tau(swept, 0.5, 1.0, latency_budget_ms=budget, t_infer_ms=2.0)
    capped_ms = evaluate_hdnn(logits, labels, answers, tau=capped.tau, temperature=TEMPERATURE,
                              fusion_lambda=LAMBDA, difficulty=difficulty, t_infer_ms=2.0).latency_ms
    assert capped.tau < free.tau and capped_ms <= budget and capped.meets_labour
    slow = refine_tau(swept, 0.5, 1.0, latency_budget_ms=1.0, t_infer_ms=2.0)  # inference alone is over T_d
    assert slow.tau == free.tau  # no threshold can mend that: labour alone decides


def test_best_tau_by_reward_keeps_slack_the_most_accurate_choice_does_not(small):
    """Eq. 14-15 reward margins: with accuracy to spare, the reward's best threshold spends less labour and people's
    time than the most accurate one within the same budgets, and is the maximum of a brute-force reward loop."""
    from hgen.compiler.search.objective import Demands, Measured, coefficients, reward
    from hgen.compiler.search.tau import best_tau

    logits, labels, answers, difficulty = small
    swept = sweep(small, 0.5)
    accurate = refine_tau(swept, 0.5, 0.05)
    demands = Demands(accuracy=0.6, latency_ms=10_000.0, storage_mb=1.0, energy_mj=1.0, labour=0.05)
    coef = coefficients(demands, 3800)
    choice = best_tau(swept, 0.5, demands, coef, storage_mb=0.1, energy_mj=0.1, t_infer_ms=2.0, confidence=0.0)
    assert choice.meets_labour and choice.labour < accurate.labour and choice.tau < accurate.tau

    def score(tau: float) -> float:
        r = evaluate_hdnn(logits, labels, answers, tau=tau, temperature=TEMPERATURE, fusion_lambda=LAMBDA,
                          difficulty=difficulty, t_infer_ms=2.0)
        return sum(reward(Measured(r.accuracy_fused, r.latency_ms, 0.1, 0.1, r.labour), demands, coef))

    within = [float(t) for t, l in zip(swept.taus, swept.labour) if l <= 0.05]
    assert score(choice.tau) == pytest.approx(max(score(t) for t in within))


def _one_asked(samples: int, labour: float, extra_ms: float) -> TauSweep:
    """Two thresholds: nobody asked, then the least confident image asked (its labour share `labour`)."""
    mean = np.array([0.0, labour / samples])
    return TauSweep(taus=np.array([0.0, 0.5]), correct=np.array([50, 51]), labour=mean, samples=samples,
                    labour_square=np.array([0.0, labour ** 2 / samples]), extra_ms=np.array([0.0, extra_ms / samples]),
                    extra_ms_square=np.array([0.0, extra_ms ** 2 / samples]))


def test_a_compile_that_asks_nobody_says_whether_the_split_labour_or_latency_stopped_it() -> None:
    """L 0 on a small validation split came without a reason; the user could not tell what to change."""
    from hgen.compiler.search.objective import Demands
    from hgen.compiler.search.tau import why_nobody_is_asked

    enough = why_nobody_is_asked(_one_asked(100, 1.0, 0.0), Demands(labour=0.03, latency_ms=5000), 1.0, 0.9)
    assert enough.startswith("thresholds that ask people met L_c and T_d, but none scored a higher")  # bound 0.023
    tiny = why_nobody_is_asked(_one_asked(20, 1.0, 0.0), Demands(labour=0.03, latency_ms=5000), 1.0, 0.9)
    assert "the 20 validation images" in tiny and "over L_c 0.03" in tiny and "at 0.112, over L_c 0.03" in tiny and "about 75 would allow it" in tiny
    slow = why_nobody_is_asked(_one_asked(1000, 0.1, 60_000.0), Demands(labour=0.03, latency_ms=30), 1.0, 0.9)
    assert slow.startswith("people's time makes the mean latency of asking about even one of them")
    assert "over T_d 30.0 ms (raise --latency-ms)" in slow
