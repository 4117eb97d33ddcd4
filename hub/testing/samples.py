"""Build valid (and deliberately invalid) hgen.v1 samples and requests, as a device would send them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import cv2
import numpy as np

from hgen.protos import hub_pb2


def png_image(size: int = 28, seed: int = 0, channels: int = 1) -> hub_pb2.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", pixels if channels > 1 else pixels[:, :, 0])
    assert ok
    return hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=encoded.tobytes(), height=size, width=size,
                         channels=channels)


def grey_sample(device_id: str, x: np.ndarray, probs: np.ndarray, name: str, version: str) -> hub_pb2.Sample:
    """A grey image in [0, 1] (HxWx1) and the model's calibrated probabilities, as a classifier device sends them."""
    ok, png = cv2.imencode(".png", np.clip(x[:, :, 0] * 255.0, 0, 255).astype(np.uint8))
    assert ok
    return hub_pb2.Sample(sample_id=str(uuid.uuid4()), device_id=device_id, bundle_name=name, bundle_version=version,
                          image=hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=png.tobytes(), height=x.shape[0],
                                              width=x.shape[1], channels=1),
                          output=hub_pb2.ModelOutput(class_probabilities=probs.tolist(), confidence=float(probs.max()),
                                                     kind=hub_pb2.HDNN_KIND_CNN))


def make_sample(device_id: str, *, confidence: float = 0.5, num_classes: int = 10, top: int = 0,
                kind: int = hub_pb2.HDNN_KIND_CNN, image: hub_pb2.Image | None = None,
                sample_id: str | None = None) -> hub_pb2.Sample:
    probs = np.full(num_classes, (1.0 - confidence) / (num_classes - 1))
    probs[top] = confidence
    sample = hub_pb2.Sample(sample_id=sample_id or str(uuid.uuid4()), device_id=device_id, bundle_name="lenet5",
                            bundle_version="1", image=image or png_image(seed=hash(sample_id) % 1000),
                            output=hub_pb2.ModelOutput(class_probabilities=probs.tolist(), confidence=confidence,
                                                       kind=kind))
    sample.captured_at.GetCurrentTime()
    return sample


def make_request(device_id: str, samples: Sequence[hub_pb2.Sample], *, m: int = 3, deadline_s: float = 600.0,
                 budget: float = 0.0, aggregator: str = "", batch_id: str | None = None,
                 now: float | None = None) -> hub_pb2.AnnotationRequest:
    request = hub_pb2.AnnotationRequest(batch_id=batch_id or str(uuid.uuid4()), device_id=device_id,
                                        samples=list(samples), annotators_wanted=m, labour_budget=budget,
                                        aggregator=aggregator)
    request.deadline.FromNanoseconds(int(((now if now is not None else time.time()) + deadline_s) * 1e9))
    return request
