"""Exception root of `hgen.hub`."""

from hgen.runtime.errors import HGenError, PlainKeyError


class HubError(HGenError):
    """Root of every error raised by `hgen.hub`."""


class CrowdConfigError(HubError, ValueError):
    """An annotator or crowd parameter is out of range (for example m < 1 or an accuracy above 1)."""


# --- Hub core (issue 6). Each bad-input error carries `code`, the metrics counter it increments; `reject_reason`
# is the hgen.v1.RejectReason name sent back to the device when the error concerns one sample.


class HubConfigError(HubError, ValueError):
    """The hub configuration is invalid; the message lists every problem by key path."""


class UnknownAggregatorError(HubError, PlainKeyError):
    """No aggregator is registered under that name; the message lists the valid names."""


class AggregationError(HubError, ValueError):
    """The answers cannot be aggregated by the chosen strategy (e.g. boxes given to `majority`)."""


class KnowledgeBaseError(HubError):
    """The knowledge base cannot be opened, migrated or written consistently."""


class SampleImageMissingError(KnowledgeBaseError):
    """A stored sample's image cannot be read (its file deleted, not shared with this hub, no file descriptor
    left): the sample is set aside for a while rather than handed out (`KnowledgeBase.unreadable`)."""


class KnowledgeBaseIntegrityError(KnowledgeBaseError):
    """A write broke a database constraint other than the insert race it expects (e.g. a foreign key to a row that is
    not there); nothing of it was stored."""


class BadInputError(HubError, ValueError):
    """Root of the inputs the hub refuses; it keeps serving after each."""

    code = "bad_input"
    reject_reason = "REJECT_REASON_INVALID_REQUEST"


class MalformedMessageError(BadInputError):
    """A payload is not a valid protobuf message of the expected type."""

    code = "malformed_message"
    reject_reason = "REJECT_REASON_MALFORMED"


class MessageTooLargeError(BadInputError):
    """A payload exceeds the configured maximum message size."""

    code = "message_too_large"
    reject_reason = "REJECT_REASON_TOO_LARGE"


class StatusTooLargeError(MessageTooLargeError):
    """A device status exceeds its own, smaller cap: it is stored whole on the device's row and shown on the
    operator page at every refresh, so a status as large as a sample batch costs every reader."""

    code = "status_too_large"


class ImageDecodeError(BadInputError):
    """The sample's image bytes do not decode in the declared format and shape."""

    code = "image_undecodable"
    reject_reason = "REJECT_REASON_IMAGE_UNDECODABLE"


class ImageTooLargeError(BadInputError):
    """The sample's image has more pixels than the configured cap."""

    code = "image_too_many_pixels"
    reject_reason = "REJECT_REASON_IMAGE_TOO_MANY_PIXELS"


class UnknownDeviceError(BadInputError):
    """The device id is not registered with the hub."""

    code = "unknown_device"
    reject_reason = "REJECT_REASON_UNKNOWN_DEVICE"


class InvalidRequestError(BadInputError):
    """A field of a request is out of range (bad UUID, m = 0, unknown aggregator, ...)."""

    code = "invalid_request"
    reject_reason = "REJECT_REASON_INVALID_REQUEST"


class LabourBudgetExceededError(BadInputError):
    """Accepting the sample would spend more labour (Eq. 3) than the batch's budget."""

    code = "labour_budget_exceeded"
    reject_reason = "REJECT_REASON_LABOUR_BUDGET"


class DuplicateSampleError(BadInputError):
    """A sample id the hub already holds (at-least-once redelivery); its stored reply is resent if ready."""

    code = "duplicate_sample"


class UnknownTaskError(BadInputError):
    """An answer names a task (assignment) the hub never created, or for another annotator."""

    code = "unknown_task"


class TaskImageUnavailableError(BadInputError):
    """The image of an annotator's open task cannot be read now (HTTP 503): the answer and skip still work."""

    code = "task_image_unavailable"


class TaskClosedError(BadInputError):
    """An answer arrives for a task already answered, or whose sample is closed (answered / expired)."""

    code = "task_closed"


class TaskConflictError(TaskClosedError):
    """The database kept aborting this change of a task (deadlock or serialization failure, retried): another
    request changed it meanwhile; nothing of this one was stored (409, like a closed task)."""

    code = "task_conflict"


# --- Web UI, gold tasks and the retraining loop (issue 7) ---------------------------------------------------------


class AuthError(BadInputError):
    """Wrong user name, password or invite token (the message never says which)."""

    code = "web_auth_failed"


class LoginRateLimitedError(BadInputError):
    """Too many failed logins for this user from this address; `retry_after_s` says when to try again."""

    code = "web_login_rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SessionExpiredError(BadInputError):
    """The session is older than web.session_max_age_s (or its account is gone): log in again."""

    code = "web_session_expired"


class CsrfError(BadInputError):
    """A state-changing request without the session's CSRF token."""

    code = "web_csrf_refused"


class NotAnImageError(BadInputError):
    """An upload that does not decode as an image."""

    code = "web_not_an_image"


class AnnotatorPausedError(TaskClosedError):
    """The annotator is paused (gold accuracy below the threshold, or an operator's decision): their answers and
    skips are stored nowhere. A TaskClosedError (409): the pause took their open tasks back."""

    code = "annotator_paused"


class ImageNotStorableError(ImageTooLargeError):
    """An image over knowledge_base.inline_image_max_bytes on a hub with no knowledge_base.image_dir to keep it."""

    code = "image_not_storable"


class BundleMissingError(HubError):
    """A recorded bundle's archive is neither on this hub's disk nor in the knowledge base."""


class RetrainError(HubError):
    """A retrain could not run to its end; the current model stays deployed and the message says why."""


class VersionTakenError(RetrainError):
    """The version a retrain or release would publish exists already (another hub published it meanwhile)."""


class ReleaseError(RetrainError):
    """A rollback or an offline bundle's publication was refused (nothing to restore, an incompatible bundle)."""


class ExportError(HubError):
    """The people's labels of a model cannot be exported as asked (no labels, a label form no data format holds, an
    output folder that is not new); nothing is left at the output path."""


class GoldFolderError(HubError):
    """A gold folder cannot be imported as laid out (not a folder, a folder naming no class); nothing was added."""


class UnknownModelError(HubError, PlainKeyError):
    """No model of that name is configured under retrain.models; the message lists the valid names."""


class RetrainBusyError(HubError):
    """A retrain of this model is already queued or running (one at a time per model)."""


class RetrainTriggerError(RetrainError, ValueError):
    """A retrain was asked for with a trigger the run history does not know; nothing was queued."""


class RetrainWaitTimeoutError(HubError, TimeoutError):
    """Waiting for a retrain gave up; not a RetrainError, because the retrain itself may still be running."""
