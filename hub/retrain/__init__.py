"""The closed loop (paper sections 4.2.2 and 6): human labels accumulate, the hub retrains, re-lowers, publishes.

`RetrainWorker` (thread) -> `RetrainPipeline.execute` -> filter (`AutoencoderFilter`), enhancement distillation
(`enhance`), acceptance (`check`), re-lowering and signing (`build_bundles`), announcing (`HubPublisher`).
History and versions live in the knowledge base (`RetrainStore`, which counts class and box labels). What differs
per H-DNN kind (data, human labels as targets, enhancement, acceptance metric) is one file per kind in `kinds/`.
"""

from hgen.hub.retrain.pipeline import RetrainPipeline
from hgen.hub.retrain.publish import HubPublisher
from hgen.hub.retrain.records import RetrainStore, RunRecord, VersionRecord
from hgen.hub.retrain.worker import RetrainWorker

__all__ = ["HubPublisher", "RetrainPipeline", "RetrainStore", "RetrainWorker", "RunRecord", "VersionRecord"]
