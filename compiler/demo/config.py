"""The demo's settings (`DemoConfig`), its error, and the per-dataset preset that fills what the user left unset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator

from hgen.compiler.demo.presets import preset_for
from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.search.objective import Demands
from hgen.runtime.config import StrictModel, parse_config
from hgen.runtime.familiarity import UNFAMILIAR_SHARE

Log = Callable[[str], None]
DEVICE_ID = "demo-device"


class DemoError(CompilerError):
    """A demo stage failed; the message names the stage and why."""


class DemoConfig(StrictModel):
    """The demo's knobs; defaults finish in a few minutes on 2 cores. Unset demands and epochs come from the
    dataset's preset (`presets.py`)."""

    dataset: str = Field("auto:lowres", title="Dataset spec (auto: FashionMNIST when installed, else digits)")
    device: str = Field("rpi4", title="Device profile to compile for")
    model: str = Field("lenet5", title="Zoo model name or a Keras file to compile")
    out: str = Field("build/demo", title="Where the bundles, logs, report and summary go")
    demands: Demands | None = Field(None, title="Demands and budgets (default: the dataset's preset)")
    episodes: int = Field(12, ge=1, title="Search episode budget")
    budget_minutes: float = Field(4.0, gt=0, title="Search wall-time budget")
    base_epochs: int | None = Field(None, ge=1, title="Backbone training epochs (default: the dataset's preset)")
    final_epochs: int | None = Field(None, ge=1, title="Winner's fine-tune epochs (default: the dataset's preset)")
    finetune_samples: int = Field(4000, ge=100, title="Training samples per candidate fine-tune")
    engines: tuple[str, ...] = Field(("litert", "tvm"), title="Engines in the compiled bundle")
    limit: int | None = Field(None, ge=50, title="Cap on each split (quick runs and tests)")
    transport: str = Field("auto", title="A device transport's name (`hgen.edge_agent.transports`), or auto: MQTT "
                                         "when mosquitto is installed, else gRPC")
    retrain_threshold: int = Field(150, ge=5, title="Human labels that trigger a retrain (lowered for the demo)")
    retrain_min_holdout: int = Field(10, ge=1, title="Held-out human labels the retrain's acceptance check needs")
    retrain_tolerance: float = Field(0.005, ge=0, le=0.1, title="Acceptance tolerance of the demo hub (about the "
                                                                "standard error of a test-split accuracy)")
    tau_override: float | None = Field(None, ge=0, le=1, title="Deployment override of the bundle's tau (agent gate)")
    fps: float = Field(100.0, gt=0, title="Frame rate of the generated video stream")
    loop_stream: bool = Field(True, title="Cycle the streaming pool like a camera that never stops (accuracy is "
                                          "measured on the evaluation pool, which is never streamed)")
    enforce_demands: bool = Field(True, title="Fail when a demand is missed (off for searches too short to meet "
                                              "them, as in the tests)")
    eval_share: float = Field(0.5, gt=0, lt=1, title="Share of the test images kept apart as the evaluation pool")
    frames_after_swap: int = Field(1500, ge=10, title="Frames to stream on the new model before stopping")
    m: int = Field(3, ge=1, le=4, title="Simulated annotators per sample")
    annotator_accuracy: float = Field(0.9, ge=0, le=1, title="Accuracy of each simulated annotator")
    timeout_minutes: float = Field(20.0, gt=0, title="Give up on the stream stage after this long")
    field: str | None = Field(None, pattern=r"^[a-z]+$", title="A condition only the field shows (a dataset variant: "
                              "noise, lowres, lowlight, blur): the model is compiled on `dataset`, the stream and "
                              "the evaluation pool are its test images under this variant, and the hub re-fits the "
                              "gate on the field's labels")
    audit_share: float = Field(0.02, ge=0, le=1, title="Share of confident frames the agent also sends to people "
                                                       "(the hub weights them as the field)")
    unfamiliar_share: float = Field(UNFAMILIAR_SHARE, gt=0, le=1, title="Share of confident frames unlike the "
                                    "training images the agent sends to people (the hub weights them as the field)")
    seed: int = Field(0, title="Seed")

    @field_validator("transport")
    @classmethod
    def _known_transport(cls, value: str) -> str:
        from hgen.edge_agent.transports import TRANSPORTS

        return TRANSPORTS.validate(value, also=("auto",))


def demo_config(**values: Any) -> DemoConfig:
    return parse_config(DemoConfig, values, source="demo settings", error=InvalidArgumentError)


def with_preset(config: DemoConfig, base: str) -> DemoConfig:
    """Fill what the user left unset from the preset of the dataset actually found (`auto` resolved)."""
    preset = preset_for(base)
    return config.model_copy(update={
        "demands": config.demands or preset.demands,
        "base_epochs": config.base_epochs or preset.base_epochs,
        "final_epochs": config.final_epochs or preset.final_epochs,
    })


def format_demands(demands: Demands) -> str:
    return (f"A >= {demands.accuracy:g}, T <= {demands.latency_ms:g} ms, S <= {demands.storage_mb:g} MB, "
            f"E <= {demands.energy_mj:g} mJ, L <= {demands.labour:g}")
