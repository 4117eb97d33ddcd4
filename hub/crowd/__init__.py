"""The simulated crowd: seeded annotators with an accuracy, an answer-latency distribution and a cost.

Used by tests, benchmarks and the search. Everything it produces carries `simulated=True` so that no table can
pass simulated people off as real ones.
"""

from hgen.hub.crowd.simulated import (
    AnnotatorProfile,
    CrowdAnswers,
    SimulatedAnnotator,
    SimulatedAnswer,
    SimulatedCrowd,
)

__all__ = ["AnnotatorProfile", "CrowdAnswers", "SimulatedAnnotator", "SimulatedAnswer", "SimulatedCrowd"]
