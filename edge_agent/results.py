"""Results: one per frame at once (the model's answer), and one update per escalated frame when people answer
(fused with the model output) or when patience runs out (the model's answer stands). A reply that comes after
patience gives one more update, `late`: it carries the people's answers but keeps the model's label, because the
`timeout` result already told consumers that label was final.

Classification results carry `label` (and `answers`, the people's class votes); detection results carry `boxes`
(pixel corners of the frame as captured) and, once people answered, `human_boxes` (their aggregated boxes). Fields
of the other kind stay empty, so JSON written before detection existed still loads."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field


class ResultStatus(enum.Enum):
    MODEL = "model"  # final: the model's answer, nobody asked
    PENDING = "pending"  # the model's answer for now; people were asked
    FUSED = "fused"  # final: people's answers fused into the model output
    TIMEOUT = "timeout"  # final: no reply within patience, the model's answer stands
    HUB_REFUSED = "hub_refused"  # final: the hub rejected or expired the sample; the model's answer stands
    LATE = "late"  # final: a reply after patience; people's answers attached, the model's answer still stands
    DECLINED = "declined"  # final: people looked but gave no label (can't tell / skip); the model's answer stands
    INVALID = "invalid"  # final: the frame could not be used (undecodable / wrong channels)


FINAL = frozenset({ResultStatus.MODEL, ResultStatus.FUSED, ResultStatus.TIMEOUT, ResultStatus.HUB_REFUSED,
                   ResultStatus.INVALID, ResultStatus.LATE, ResultStatus.DECLINED})


@dataclass(frozen=True)
class BoxResult:
    """One detected box in pixels of the frame; `score` is the model's score, or people's support once fused."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    class_id: int
    label_name: str
    score: float


def _boxes(items: object) -> tuple[BoxResult, ...]:
    return tuple(item if isinstance(item, BoxResult) else BoxResult(**item)  # type: ignore[arg-type]
                 for item in (items or ()))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Result:
    frame_index: int
    sample_id: str
    captured_at: float
    status: ResultStatus
    decision: str
    label: int | None = None
    label_name: str | None = None
    model_label: int | None = None
    confidence: float | None = None
    bundle_version: str = ""
    answers: tuple[int, ...] = field(default_factory=tuple)
    detail: str = ""
    cant_tell: int = 0  # annotators who said "can't tell" (counted by the hub's reply; never in `answers`)
    skipped: int = 0  # annotators who skipped the sample
    boxes: tuple[BoxResult, ...] = field(default_factory=tuple)  # detection: the answer (model's, or fused)
    model_boxes: tuple[BoxResult, ...] = field(default_factory=tuple)  # detection: what the model said
    human_boxes: tuple[BoxResult, ...] = field(default_factory=tuple)  # detection: people's aggregated boxes

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def declined(self) -> int:
        """Annotators who were shown the sample and gave no label."""
        return self.cant_tell + self.skipped

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["status"] = self.status.value
        data["final"] = self.final
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Result:
        fields = {k: v for k, v in data.items() if k != "final"}
        fields["status"] = ResultStatus(fields["status"])
        fields["answers"] = tuple(fields.get("answers") or ())  # type: ignore[arg-type]
        for name in ("boxes", "model_boxes", "human_boxes"):
            fields[name] = _boxes(fields.get(name))
        return cls(**fields)  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


def declined_detail(cant_tell: int, skipped: int) -> str:
    """Why no person's label was used, readable in a results log."""
    return f"nobody labelled it: {cant_tell} could not tell, {skipped} skipped; the model's answer stands"
