import numpy as np
import pytest

from hgen.hub.crowd import AnnotatorProfile, SimulatedAnnotator, SimulatedCrowd
from hgen.hub.errors import CrowdConfigError
from hgen.runtime.errors import InvalidInputError
from hgen.runtime.labour import DifficultyEstimator, labour_per_sample, labour_ratio


def test_crowd_is_seeded_and_marked_simulated():
    truth = np.arange(500) % 10
    a = SimulatedCrowd.uniform(3, 0.8, 10, seed=4).annotate(truth, 3)
    b = SimulatedCrowd.uniform(3, 0.8, 10, seed=4).annotate(truth, 3)
    c = SimulatedCrowd.uniform(3, 0.8, 10, seed=5).annotate(truth, 3)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert a.simulated and a.labels.shape == (500, 3)


def test_accuracy_latency_and_hardness_behave_as_documented():
    crowd = SimulatedCrowd.uniform(4, 0.8, 10, seed=0, latency_median_s=4.0)
    truth = np.arange(4000) % 10
    average = crowd.annotate(truth, 4)
    assert np.mean(average.labels == truth[:, None]) == pytest.approx(0.8, abs=0.02)
    assert np.median(average.latency_s) == pytest.approx(4.0, rel=0.05)
    assert np.all(average.sample_latency_s == average.latency_s.max(axis=1))
    easy = crowd.annotate(truth, 4, hardness=np.zeros(4000))
    hard = crowd.annotate(truth, 4, hardness=np.ones(4000))
    assert np.mean(easy.labels == truth[:, None]) == 1.0
    assert np.mean(hard.labels == truth[:, None]) < 0.7
    assert hard.operations.mean() > easy.operations.mean()


def test_confusion_matrix_decides_the_wrong_answers():
    confusion = np.eye(3)
    confusion[0] = [0.0, 0.0, 1.0]  # class 0 is only ever mistaken for class 2
    person = SimulatedAnnotator(AnnotatorProfile("c", 0.0, confusion=tuple(map(tuple, confusion))), 3, seed=0)
    answers = {person.answer(0, hardness=1.0).label for _ in range(50)}
    assert answers <= {0, 2} and 2 in answers


@pytest.mark.parametrize("call", [
    lambda: SimulatedCrowd.uniform(0, 0.9, 10),
    lambda: AnnotatorProfile("x", 1.5),
    lambda: SimulatedCrowd.uniform(2, 0.9, 10).annotate(np.zeros(3, int), m=3),
    lambda: AnnotatorProfile("x", 0.9, confusion=((1.0,),)) and SimulatedAnnotator(
        AnnotatorProfile("x", 0.9, confusion=((1.0,),)), 10),
])
def test_bad_crowd_parameters_are_typed_errors(call):
    with pytest.raises(CrowdConfigError):
        call()


def test_labour_equations():
    assert labour_per_sample(2.0, 3) == 6.0
    assert labour_ratio(total_l0=120.0, num_samples=100) == pytest.approx(120.0 / (100 * 4 * 3))
    with pytest.raises(InvalidInputError):
        labour_per_sample(1.0, 0)


def test_difficulty_estimator_learns_that_uncertain_samples_are_harder():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(10, 0.4), size=3000)
    p_wrong = 0.4 * (1.0 - probs.max(axis=1))
    wrong = (rng.random((3000, 3)) < p_wrong[:, None]).astype(int)
    estimator = DifficultyEstimator.fit(probs, wrong)
    confident, unsure = np.eye(10)[[0]] * 0.98 + 0.002, np.full((1, 10), 0.1)
    assert estimator.difficulty(unsure)[0] > estimator.difficulty(confident)[0]
    assert 1.0 <= estimator.difficulty(probs).min() and estimator.difficulty(probs).max() <= 3.0
    assert DifficultyEstimator.from_dict(estimator.to_dict()) == estimator
