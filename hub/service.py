"""The hub service: ingest (validate, de-duplicate, budget, per-device limits, store), the deadline sweep, and reply
fan-out.

Transports (gRPC, MQTT) call `submit`; replies reach them through listeners registered per transport, and
in-process gRPC streams through the ReplyBus. Nothing here is needed to resume after a restart: the knowledge
base holds every sample, task, answer and reply.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hgen.hub.aggregators import aggregator_names, default_aggregator, get_aggregator
from hgen.hub.annotators import AnnotatorAPI, ReplyListener
from hgen.hub.config import HubConfig
from hgen.hub.devices import DeviceMismatchError
from hgen.hub.gold import GoldBook
from hgen.hub.errors import (BadInputError, ImageNotStorableError, InvalidRequestError, LabourBudgetExceededError,
                             UnknownDeviceError)
from hgen.hub.kb.retention import ImageRetention
from hgen.hub.kb.retention_labelled import LabelledImageRetention
from hgen.hub.kb.store import KnowledgeBase, NewSample
from hgen.hub.metrics import HubMetrics
from hgen.hub.quotas import DeviceImageBudgetError, DeviceLocks, DeviceQuota, DeviceSampleCapError
from hgen.hub.clocks import DeviceClocks
from hgen.hub.validation import (check_image, check_model_output, check_request_numbers, check_sample_numbers,
                                 check_uuid, classes_known, clip, device_clock_offset, parse_request,
                                 request_deadline)
from hgen.protos import hub_pb2
from hgen.protos.kinds import kind_of_wire
from hgen.runtime.hdnn import difficulty_from_confidence
from hgen.runtime.labour import labour_per_sample

log = logging.getLogger(__name__)
EXPIRY_POLL_S = 1.0  # bound on how late a deadline set by another hub process is noticed
CLOCK_SKEW_WARN_S = 30.0  # a device clock further off than this is logged (once per device) and counted
MAX_LOGGED_SOURCES = 1024  # distinct refusals a OnceLog logs; the rest are only counted


@dataclass
class SubmitResult:
    """What became of each sample of a request; `immediate` replies are sent back at once."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    immediate: list[hub_pb2.SampleReply] = field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        """Samples whose reply is still to come (accepted now or earlier, not yet replied)."""
        replied = {r.sample_id for r in self.immediate}
        return [s for s in self.accepted + self.duplicates if s not in replied]


def estimate_difficulty(confidence: float) -> float:
    """Operations a person needs, in [1, 3]: the less sure the model, the harder the sample (hub-side estimate)."""
    return float(difficulty_from_confidence(confidence))


def rejection(request: hub_pb2.AnnotationRequest, sample: hub_pb2.Sample, error: BadInputError) -> hub_pb2.SampleReply:
    """The refusal of one sample, addressed to the device that sent the request (the transports checked that
    `request.device_id` is the authenticated sender), never to the device the sample names: a device could
    otherwise make the hub publish on another device's reply topic and settle that device's waiting sample."""
    return hub_pb2.SampleReply(sample_id=sample.sample_id, device_id=request.device_id, batch_id=request.batch_id,
                               status=hub_pb2.REPLY_STATUS_REJECTED,
                               reject_reason=hub_pb2.RejectReason.Value(error.reject_reason), detail=str(error))


class OnceLog:
    """Logs a refusal the first time its key is seen, up to `limit` keys (then says that it stops): memory and log
    stay bounded whatever a client sends; the metrics still count every refusal. Keys hold clipped client strings."""

    def __init__(self, limit: int = MAX_LOGGED_SOURCES) -> None:
        self.limit = limit
        self._seen: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def first(self, key: tuple[str, ...]) -> bool:
        with self._lock:
            if key in self._seen or len(self._seen) > self.limit:
                return False
            self._seen.add(key)
            if len(self._seen) > self.limit:
                log.warning("%d distinct refusals logged: further ones are only counted (metrics)", self.limit)
                return False
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class ReplyBus:
    """In-process fan-out of new replies to the gRPC streams waiting on those sample ids."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, set[queue.Queue]] = defaultdict(set)

    def subscribe(self, sample_ids: Sequence[str]) -> queue.Queue:
        q: queue.Queue = queue.Queue()
        with self._lock:
            for sample_id in sample_ids:
                self._waiting[sample_id].add(q)
        return q

    def unsubscribe(self, sample_ids: Sequence[str], q: queue.Queue) -> None:
        with self._lock:
            for sample_id in sample_ids:
                waiters = self._waiting.get(sample_id)
                if waiters is not None:
                    waiters.discard(q)
                    if not waiters:
                        del self._waiting[sample_id]

    def publish(self, replies: Sequence[hub_pb2.SampleReply]) -> None:
        with self._lock:
            targets = [(q, r) for r in replies for q in self._waiting.get(r.sample_id, ())]
        for q, reply in targets:
            q.put(reply)


class HubService:
    """One hub process's logic; run several against one database and broker to scale out."""

    def __init__(self, config: HubConfig, kb: KnowledgeBase, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.kb = kb
        self.clock = clock
        self.metrics = HubMetrics()
        self.bus = ReplyBus()
        self.gold = GoldBook(kb, config.gold, clock, aggregator=config.aggregator)
        self.annotators = AnnotatorAPI(kb, self.metrics, self.publish_replies, self.gold,
                                       max_open=config.tasks.max_open_per_annotator)
        self._listeners: dict[str, list[ReplyListener]] = defaultdict(list)
        self._observers: list[ReplyListener] = []
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._mismatches_logged = OnceLog()  # (account, clipped claim): a client chooses the claim
        self._skew_logged: set[str] = set()
        self._limits_logged = OnceLog()  # (error code, device): a device over a limit sends on, it is logged once
        self._device_locks = DeviceLocks()
        self.clocks = DeviceClocks()
        self.classes_known = classes_known(config)  # else class probabilities are only capped in length
        self.retention = ImageRetention(kb, config.knowledge_base.keep_unlabelled_images_days, self.metrics.inc, clock)
        self.labelled_retention = LabelledImageRetention(kb, config.knowledge_base.keep_labelled_images,
                                                         self.metrics.inc, clock)
        kb.register_devices(config.devices)

    @classmethod
    def from_config(cls, config: HubConfig) -> HubService:
        kb = KnowledgeBase.of_config(config.knowledge_base, num_classes=config.num_classes,
                                     aggregator=lambda name: get_aggregator(name, config.aggregator_config(name)))
        return cls(config, kb)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="hub-deadlines", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
        self.annotators.notify_work()

    def close(self) -> None:
        self.stop()
        self.kb.close()

    # --- replies ------------------------------------------------------------------------------------------

    def add_reply_listener(self, transport: str, listener: ReplyListener) -> None:
        self._listeners[transport].append(listener)

    def add_reply_observer(self, observer: ReplyListener) -> None:
        """Told of every new reply whatever its transport (the retrain worker counts labels); must not block."""
        self._observers.append(observer)

    def publish_replies(self, replies: Sequence[hub_pb2.SampleReply]) -> None:
        """Hand new replies to in-process gRPC streams and to the transport each sample came by."""
        self.metrics.inc("replies", len(replies))
        for observer in self._observers:
            observer(replies)
        self.bus.publish(replies)
        transports = self.kb.transports_of([r.sample_id for r in replies])
        by_transport: dict[str, list[hub_pb2.SampleReply]] = defaultdict(list)
        for reply in replies:
            by_transport[transports.get(reply.sample_id, "")].append(reply)
        for transport, group in by_transport.items():
            for listener in self._listeners.get(transport, ()):
                listener(group)

    # --- ingest -------------------------------------------------------------------------------------------

    def submit_payload(self, payload: bytes, transport: str, max_bytes: int, sender: str | None = None) -> SubmitResult:
        """Decode then submit; malformed or oversized payloads are counted, logged once and re-raised. `sender` is
        the device the transport authenticated (MQTT: the topic, which the broker's ACL reserves to that device)."""
        try:
            request = parse_request(payload, max_bytes)
        except BadInputError as exc:
            self._count(exc)
            raise
        if sender is not None:
            self.check_sender(sender, request.device_id)
        return self.submit(request, transport)

    def check_sender(self, account: str, claimed: str) -> None:
        """A message must name the device whose account it arrived on; else it is refused (no reply goes to the
        named device), counted, and logged once per (account, claimed) pair, for at most MAX_LOGGED_SOURCES pairs;
        the claim is clipped wherever it is repeated (the log, the refusal's text, the once-log's key)."""
        if claimed == account:
            return
        error = DeviceMismatchError(f"device {account!r} sent a message as {clip(claimed)!r}")
        self.metrics.inc(error.code)
        if self._mismatches_logged.first((account, clip(claimed))):
            log.warning("refused (%s): %s", error.code, error)
        raise error

    def submit(self, request: hub_pb2.AnnotationRequest, transport: str) -> SubmitResult:
        result = SubmitResult()
        try:
            m, deadline, budget, default_aggregator = self._check_request(request)
        except BadInputError as exc:
            self._count(exc)
            result.immediate = [rejection(request, s, exc) for s in request.samples]
            return result
        owner = self.kb.ensure_batch(request, m, deadline, budget)
        if owner != request.device_id:
            exc = DeviceMismatchError(f"batch {request.batch_id} belongs to another device than "
                                      f"{clip(request.device_id)!r}")
            self._count(exc)
            result.immediate = [rejection(request, s, exc) for s in request.samples]
            return result
        with self._device_locks(request.device_id):
            quota = DeviceQuota(request.device_id, self.config.limits, self.kb)
            for sample in request.samples:
                self._submit_sample(request, sample, m, deadline, default_aggregator, transport, quota, result)
        if result.accepted:
            self.metrics.inc("accepted", len(result.accepted))
            self.annotators.notify_work()
            with self._wake:
                self._wake.notify_all()
        if result.duplicates:
            replies = self.kb.replies_for(result.duplicates)
            result.immediate += replies
            # one line per batch, not per sample: a device asks again about everything still waiting for people
            log.info("batch %s from %s: %d sample(s) asked again (already stored), %d reply(ies) resent, the rest "
                     "still wait for people", request.batch_id, clip(request.device_id), len(result.duplicates),
                     len(replies))
        return result

    def _check_request(self, request: hub_pb2.AnnotationRequest) -> tuple[int, float, float, str]:
        limits = self.config.limits
        if not request.device_id:
            raise InvalidRequestError("request has no device_id")
        if not self.kb.device_exists(request.device_id):
            if not self.config.allow_unknown_devices:
                raise UnknownDeviceError(f"device {clip(request.device_id)!r} is not registered")
            self.kb.register_devices([request.device_id])
        check_uuid(request.batch_id, "batch_id")
        m = request.annotators_wanted
        if not 1 <= m <= limits.max_annotators:
            raise InvalidRequestError(f"annotators_wanted must be in 1..{limits.max_annotators}, got {m}")
        if not 1 <= len(request.samples) <= limits.max_batch:
            raise InvalidRequestError(f"a batch holds 1..{limits.max_batch} samples, got {len(request.samples)}")
        if request.aggregator and request.aggregator not in aggregator_names():
            raise InvalidRequestError(f"unknown aggregator {clip(request.aggregator)!r}; valid: "
                                      f"{', '.join(aggregator_names())}")
        check_request_numbers(request)  # NaN, infinity or an out-of-range Timestamp: refused here, not by the database
        now = self.clock()
        offset = self._device_clock(request, now)
        deadline = request_deadline(request, now, limits, offset)
        budget = request.labour_budget or limits.default_labour_budget
        return m, deadline, budget, request.aggregator

    def _device_clock(self, request: hub_pb2.AnnotationRequest, now: float) -> float:
        """The device clock's offset this request's deadline is moved by; said once per device when it is more
        than CLOCK_SKEW_WARN_S off (its captured_at times and logs are off too)."""
        offset = self.clocks.observe(request.device_id, device_clock_offset(request, now))
        skew = self.clocks.skew(request.device_id)
        if abs(skew) > CLOCK_SKEW_WARN_S:
            self.metrics.inc("device_clock_skew")
            if request.device_id not in self._skew_logged:
                self._skew_logged.add(request.device_id)
                log.warning("device %s: its clock is %.0f s %s the hub's; its deadlines are moved to the hub's clock "
                            "(set up NTP on the device)", request.device_id, abs(skew),
                            "behind" if skew > 0 else "ahead of")
        return offset

    def _submit_sample(self, request: hub_pb2.AnnotationRequest, sample: hub_pb2.Sample, m: int, deadline: float,
                       aggregator: str, transport: str, quota: DeviceQuota, result: SubmitResult) -> None:
        try:
            new = self._check_sample(request, sample, m, deadline, aggregator, transport, quota)
            outcome = quota.add(new)  # checked again with what every hub process stored, under the device's lock
        except (DeviceSampleCapError, DeviceImageBudgetError) as exc:
            self._count_over_limit(exc, request.device_id)
            result.immediate.append(rejection(request, sample, exc))
            return
        except BadInputError as exc:
            self._count(exc)
            result.immediate.append(rejection(request, sample, exc))
            return
        if outcome == "accepted":
            result.accepted.append(sample.sample_id)
        elif outcome == "duplicate":
            self.metrics.inc("duplicate_sample")
            log.debug("duplicate sample %s from %s (redelivery)", sample.sample_id, request.device_id)
            result.duplicates.append(sample.sample_id)
        elif outcome == "foreign":
            exc = DeviceMismatchError(f"sample {sample.sample_id} belongs to another device than "
                                      f"{clip(request.device_id)!r}")
            self._count(exc)
            result.immediate.append(rejection(request, sample, exc))
        else:
            exc = LabourBudgetExceededError(f"sample {sample.sample_id}: L0={new.labour:.2f} exceeds what is left "
                                            f"of batch {request.batch_id}'s budget {request.labour_budget}")
            self._count(exc)
            result.immediate.append(rejection(request, sample, exc))

    def _check_sample(self, request: hub_pb2.AnnotationRequest, sample: hub_pb2.Sample, m: int, deadline: float,
                      aggregator: str, transport: str, quota: DeviceQuota) -> NewSample:
        check_uuid(sample.sample_id, "sample_id")
        if sample.device_id and sample.device_id != request.device_id:
            raise InvalidRequestError(f"sample {sample.sample_id} names device {clip(sample.device_id)!r} in a "
                                      f"request from {clip(request.device_id)!r}")
        now = self.clock()
        # No image: nothing to show people, so it expires at once, as one arriving past its deadline does. The
        # agent sends a sample past its deadline so, by its own clock, which may differ a little from the hub's.
        if not sample.image.data:
            deadline = min(deadline, now)
        keep_image = deadline > now
        # A resent sample the hub holds gets its stored reply (add_sample: duplicate): it was checked, and counted,
        # the first time, by the rules of then.
        if not self.kb.sample_exists(sample.sample_id):
            self._check_new(sample, keep_image, quota)
        return self._new_sample(request, sample, m, deadline, aggregator, transport, keep_image)

    def _check_new(self, sample: hub_pb2.Sample, keep_image: bool, quota: DeviceQuota) -> None:
        """A sample the hub does not hold yet: its model output's shape, then its numbers (a huge vector is refused
        before any value is read), within its device's limits (checked before the image: they are cheap, and a
        flooding device's images are not decoded), then its image, unless it is not kept (deadline passed, or no
        image sent)."""
        check_model_output(sample.output, self.config.num_classes, self.config.limits, self.classes_known)
        check_sample_numbers(sample)
        quota.check(len(sample.image.data) if keep_image else 0)
        if not keep_image:
            return
        check_image(sample.image, self.config.limits)
        if len(sample.image.data) > self.kb.images.inline_max_bytes and self.kb.images.image_dir is None:
            raise ImageNotStorableError(f"image of {len(sample.image.data)} bytes is over knowledge_base."
                                        "inline_image_max_bytes and no knowledge_base.image_dir is set to keep it")

    def _new_sample(self, request: hub_pb2.AnnotationRequest, sample: hub_pb2.Sample, m: int, deadline: float,
                    aggregator: str, transport: str, keep_image: bool = True) -> NewSample:
        """The sample as stored. Without `keep_image` (its deadline passed before it arrived, or it came without
        image: the sweep replies EXPIRED at once and nobody will see it) the image's bytes are left out; it used to
        be stored in full."""
        stored = hub_pb2.Sample()
        stored.CopyFrom(sample)
        stored.device_id = request.device_id
        if not keep_image:
            stored.image.ClearField("data")
        kind = kind_of_wire(sample.output.kind)  # UNSPECIFIED (older devices): the default kind
        if kind is not None:
            stored.output.kind = hub_pb2.HdnnKind.Value(kind.proto_enum)
        difficulty = estimate_difficulty(sample.output.confidence)
        if kind is None:  # a kind this hub has no descriptor of: people answer what the named aggregator takes
            aggregator = aggregator or self.config.aggregator
        else:
            aggregator = aggregator or default_aggregator(kind, self.config.aggregator)
            if get_aggregator(aggregator).label != kind.label:  # people could give no answer it aggregates
                raise InvalidRequestError(f"aggregator {aggregator!r} cannot aggregate the {kind.label} answers a "
                                          f"sample of H-DNN kind {kind.name} gets")
        return NewSample(stored, request.batch_id, m, aggregator,
                         deadline, difficulty, float(labour_per_sample(difficulty, m)), transport)

    def _count(self, exc: BadInputError) -> None:
        self.metrics.inc(exc.code)
        log.warning("refused (%s): %s", exc.code, exc)

    def _count_over_limit(self, exc: BadInputError, device_id: str) -> None:
        """Counted each time, logged once per (limit, device): a device over its cap sends on, often thousands."""
        self.metrics.inc(exc.code)
        if self._limits_logged.first((exc.code, clip(device_id))):
            log.warning("refused (%s): %s (logged once per device; counted as %s)", exc.code, exc, exc.code)

    # --- deadlines ----------------------------------------------------------------------------------------

    def sweep_once(self) -> bool:
        """Time out held tasks, then close due samples one by one (a failing one is set aside, counted, and logged
        once by the knowledge base); True when more may be due at once."""
        timed_out = self.kb.expire_assignments(self.config.tasks.assignment_timeout_s)
        if timed_out:
            self.metrics.inc("tasks_timed_out", timed_out)
            self.annotators.notify_work()
        set_aside: list[str] = []
        replies = self.kb.expire_due(set_aside=set_aside)
        if set_aside:
            self.metrics.inc("sweep_set_aside", len(set_aside))
        if replies:
            self.metrics.inc("closed_at_deadline", len(replies))
            self.publish_replies(replies)
        return bool(replies or set_aside)

    def retain_images(self) -> bool:
        """Remove the images of samples that expired unanswered over knowledge_base.keep_unlabelled_images_days ago
        (hgen.hub.kb.retention), then those of answered samples past the newest knowledge_base.keep_labelled_images
        of their model (hgen.hub.kb.retention_labelled): one batch when a round is due or under way, the answered
        ones' once the expired ones' backlog is gone; True when a backlog is left (the loop then runs the next batch
        at its next turn, after the deadline sweep). A failure is logged, not raised: the deadline sweep beside it
        must go on (the next round tries again)."""
        return self._retain(self.retention) or self._retain(self.labelled_retention)

    @staticmethod
    def _retain(retention: ImageRetention | LabelledImageRetention) -> bool:
        try:
            return retention.run_if_due()
        except Exception:  # a database hiccup must not end the loop
            log.exception("image retention sweep failed; retried at its next round")
            return False

    def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            backlog = self.retain_images()  # one batch at most: due deadlines are closed between two batches
            try:
                if self.sweep_once():
                    continue
                next_deadline = self.kb.next_deadline()
            except Exception:  # a database hiccup must not end the sweep; it is retried next round
                log.exception("deadline sweep failed; retrying")
                next_deadline = None
            if backlog:  # the next batch at once, the sweep having run
                continue
            wait = EXPIRY_POLL_S if next_deadline is None else min(EXPIRY_POLL_S, next_deadline - self.clock())
            if wait > 0:
                with self._wake:
                    self._wake.wait(timeout=wait)
