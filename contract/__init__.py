"""Task names, queues, payloads and Redis keys shared by the bot, its reply sender and the worker.

Stdlib only, and it imports nothing of ours: the bot never pulls in Celery task code or
TensorFlow, the worker never pulls in Telegram. Payloads cross Redis as JSON dicts; each
dataclass round-trips through `to_dict()` / `from_dict()`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

# Task names. The bot sends by name (`app.send_task(CLASSIFY, ...)`); routes are by name too.
CLASSIFY = "breedbot.classify"
RETRAIN = "breedbot.retrain"
LIST_MODELS = "breedbot.models"
PROMOTE = "breedbot.promote"
ROLLBACK = "breedbot.rollback"
STATS = "breedbot.stats"
BREEDS = "breedbot.breeds"  # the active version's class names
STORE_FEEDBACK = "breedbot.store_feedback"  # files a photo (inline bytes) under its label
EXPORT = "breedbot.export"  # a version's portable .tflite, labels and README, for /export
# Reply tasks: consumed in the bot's image, the only one that holds the Telegram token.
REPLY = "breedbot.reply"
REPLY_FAILED = "breedbot.reply_failed"  # errback: tells the chat a job failed
PROGRESS = "breedbot.progress"  # edits a retrain's status message
FEEDBACK = "breedbot.feedback"  # downloads a corrected photo and has a worker file it

# Queues.
QUEUE_INFER = "infer"
QUEUE_TRAIN = "train"
QUEUE_CONTROL = "control"
QUEUE_REPLY = "reply"
WORKER_QUEUES = (QUEUE_INFER, QUEUE_TRAIN, QUEUE_CONTROL)

TASK_QUEUES = {
    CLASSIFY: QUEUE_INFER,
    RETRAIN: QUEUE_TRAIN,
    LIST_MODELS: QUEUE_CONTROL,
    PROMOTE: QUEUE_CONTROL,
    ROLLBACK: QUEUE_CONTROL,
    STATS: QUEUE_CONTROL,
    BREEDS: QUEUE_CONTROL,
    STORE_FEEDBACK: QUEUE_CONTROL,
    EXPORT: QUEUE_TRAIN,  # converting needs TensorFlow, which the train queue's worker has
    REPLY: QUEUE_REPLY,
    REPLY_FAILED: QUEUE_REPLY,
    PROGRESS: QUEUE_REPLY,
    FEEDBACK: QUEUE_REPLY,
}

# Caps on bytes carried through Redis (base64 adds a third on top).
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # Telegram's own getFile cap
MAX_INLINE_DATASET_BYTES = 64 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1000 * 1000  # the Bot API's sendDocument limit: an export file's cap

# A photo the bot accepted, for feedback: a Redis hash with "file_id", "labels" (JSON list written
# by the reply task, best first), "version" (the model that answered) and "label" (the user's
# answer, a folder name; "" for "other").
PHOTO_TTL_SECONDS = 30 * 24 * 3600


def photo_key(photo_id: str) -> str:
    """Redis key of the hash describing one classified photo."""
    return f"breedbot:photo:{photo_id}"


def reply_key(key: str) -> str:
    """Redis key claiming one reply (`ReplyTo.key`): "sending", then "sent" (bot/replies.py)."""
    return f"breedbot:reply:{key}"


def labels_key(version: int) -> str:
    """Redis key of a model version's [label, display name] pairs (JSON), written by a worker when
    it loads the version, so the bot can match a breed typed after ❌ (a photo's "version")."""
    return f"breedbot:labels:{version}"


# What each worker host serves, as it last said: one key per host, refreshed every few seconds
# and expiring, so a host that died drops out (worker/hosts.py writes them, HostStatus JSON).
SERVED_PREFIX = "breedbot:served:"
SERVED_HOSTS = "breedbot:served-hosts"  # sorted set: host -> when it last said (Unix time)
SERVED_TTL_SECONDS = 30


def served_key(host: str) -> str:
    """Redis key of one worker host's HostStatus JSON."""
    return f"{SERVED_PREFIX}{host}"


# The outbox: every classify chain the bot publishes is also kept here until its reply task has
# run. Redis hands a message to a worker (BRPOP) before the worker records it as unacked, so a
# worker killed in between loses it for good; the reply sender re-publishes entries that stay
# unanswered (bot/outbox.py). Only idempotent jobs go here: a re-run classify is answered once.
OUTBOX_DUE = "breedbot:outbox:due"  # sorted set: outbox id -> time it was (re-)published
OUTBOX_JOBS = "breedbot:outbox:jobs"  # hash: outbox id -> OutboxEntry JSON
# A queued photo's bytes, once, under its outbox id; removed with the outbox entry.
UPLOAD_TTL_SECONDS = 24 * 3600


def upload_key(outbox_id: str) -> str:
    """Redis key of the raw bytes of a photo queued under `outbox_id`."""
    return f"breedbot:upload:{outbox_id}"


class ReplyKind(StrEnum):
    """Which result a reply task words for the chat (a plain string in the message's JSON)."""

    CLASSIFY = "classify"
    RETRAIN = "retrain"
    MODELS = "models"
    SWITCH = "switch"
    STATS = "stats"
    BREEDS = "breeds"
    EXPORT = "export"


OUTBOX_KINDS = frozenset({ReplyKind.CLASSIFY})


# Custom Celery state for retrain progress; `meta` is a `Progress.to_dict()`.
PROGRESS_STATE = "PROGRESS"


class _Payload:
    """Mixin: JSON-safe dict round trip for the dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fields for {cls.__name__}: {sorted(unknown)}")
        return cls(**data)


def encode_bytes(data: bytes) -> str:
    """Bytes to the base64 text carried in a JSON payload."""
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    """Inverse of `encode_bytes`."""
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True)
class ReplyTo(_Payload):
    """Where the answer to a job goes, so any worker can send it even if the bot restarted."""

    chat_id: int
    message_id: int | None = None
    user_id: int | None = None
    language: str = "en"
    status_message_id: int | None = None  # message edited with progress (retrain)
    key: str = ""  # idempotency key: a reply with the same key is sent once


@dataclass(frozen=True)
class ClassifyRequest(_Payload):
    """One image to classify: inline bytes (base64, capped) or the Redis key holding them (the
    bot's photos: kept once, not in the queue and the outbox both); the bot downloads it."""

    image_b64: str | None = None
    top_k: int = 5
    reply_to: dict[str, Any] | None = None  # a ReplyTo.to_dict()
    image_key: str | None = None  # an upload_key(); raw bytes


@dataclass(frozen=True)
class Guess(_Payload):
    label: str
    display_name: str
    probability: float


@dataclass(frozen=True)
class Answer(_Payload):
    """The decision on one photo (model.runtime.openset): what the reply and `label-image --json`
    say. `trained` is False for "a dog, but not one of my N breeds"; `label` is then ImageNet's
    breed (or None), and `score` the calibrated probability of what is said."""

    species: str | None  # "cat", "dog", or None
    label: str | None
    display_name: str | None
    trained: bool
    score: float
    known_breeds: int


@dataclass(frozen=True)
class ClassifyResult(_Payload):
    model_version: int
    top_k: list[dict[str, Any]]  # Guess.to_dict() items, best first
    is_pet: bool | None  # None: the backbone has no ImageNet head to gate with
    pet_probability: float
    imagenet_label: str
    imagenet_probability: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # machine-readable code when the image was rejected
    error_message: str | None = None
    pet_unsure: bool = False  # the cat/dog gate passed it only as "not sure, maybe X"
    answer: dict[str, Any] | None = None  # an Answer.to_dict(); None from an older worker
    # The layer's own ranking before the species and open-set decision (what an export gives).
    model_top_k: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetRef(_Payload):
    """A labeled upload as inline zip bytes (capped), or the collected feedback.

    Every retrain keeps its photos; `merge_last` adds an upload to the active version's kept
    dataset (new classes allowed). Feedback is always added to it, when there is one."""

    zip_b64: str | None = None
    name: str = "upload.zip"
    feedback: bool = False  # retrain on the collected corrections
    merge_last: bool = False  # add the upload to the active version's kept dataset


@dataclass(frozen=True)
class RetrainRequest(_Payload):
    dataset: dict[str, Any]  # DatasetRef.to_dict()
    # retrain.py flag names, e.g. how_many_training_steps
    params: dict[str, Any] = field(default_factory=dict)
    min_accuracy: float | None = None
    force: bool = False
    requested_by: int | None = None
    reply_to: dict[str, Any] | None = None
    # Each mistake's caption on the contact sheet, in the user's language (None: English).
    mistake_caption: str | None = None


@dataclass(frozen=True)
class Progress(_Payload):
    # In this order: "starting", "download", "bottlenecks", "training" (per candidate backbone
    # with `auto`, then the chosen one's), "final" (the served layer), "saving", "comparing".
    stage: str
    done: int
    total: int
    validation_accuracy: float | None = None
    backbone: str | None = None  # whose photo features are read or trained on
    candidate: int | None = None  # `auto` trying backbone `candidate` of `candidates`
    candidates: int | None = None
    seconds_left: float | None = None  # of this stage, from its pace so far


class Refused(Exception):
    """A job refused for a reason the user can fix: its task fails with this exception.

    A monitor (Flower) sees a failure with the reason; the failure errback words it for the chat
    from `problem` and `params`. Celery stores a failure as its type, module and args in JSON and
    rebuilds it from those, so the args are exactly (message, problem, params), all JSON.
    """

    def __init__(
        self, message: str, problem: str | None = None, params: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, problem, params or {})
        self.message = message  # English
        self.problem = problem
        self.params = params or {}

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class RetrainResult(_Payload):
    """A published version (a refused retrain fails with `Refused` instead)."""

    version: int
    activated: bool
    test_accuracy: float
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why it did or did not go live (English)
    # The reason as a problem code and its values, so the bot can word it in the user's language.
    problem: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # The confusion matrix its accuracy was measured on (rows: true class, columns: answer), and
    # the classes' display names in that order: the bot draws it in the user's language.
    confusion_matrix: list[list[int]] | None = None
    class_names: list[str] = field(default_factory=list)
    # Its out-of-fold mistakes as one captioned contact sheet; None when there are none.
    mistakes_jpeg_b64: str | None = None


# Refused.params key under which a retrain the accuracy gate kept from going live carries its
# RetrainResult (as a dict): the job fails, and the chat still gets the version's report.
GATE_REPORT = "report"


def gate_report(refusal: Refused) -> RetrainResult | None:
    """The report of a version the gate kept out, when `refusal` is that; else None."""
    report = refusal.params.get(GATE_REPORT)
    return RetrainResult.from_dict(report) if isinstance(report, dict) else None


@dataclass(frozen=True)
class FeedbackRequest(_Payload):
    """File photo `photo_id` under the label its Redis hash holds now (the last answer wins)."""

    photo_id: str
    language: str = "en"  # of a refusal (a full quota)


@dataclass(frozen=True)
class StoreFeedback(_Payload):
    """A corrected photo for a worker to file: under `label`, or nowhere ("" removes it)."""

    photo_id: str
    label: str
    image_b64: str | None = None
    owner: int | None = None  # the chat that sent the photo, for its quota


@dataclass(frozen=True)
class Breeds(_Payload):
    """Result of BREEDS: the active version and its classes' display names."""

    version: int
    names: list[str]


@dataclass(frozen=True)
class HostStatus(_Payload):
    """What one worker host serves: its version and engine since when, the version the pointer
    named when it last looked, and why it could not load that one (it keeps serving `version`)."""

    host: str
    version: int
    engine: str
    since: str  # ISO time it started serving `version`
    active: int
    error: str | None = None

    @property
    def healthy(self) -> bool:
        """False while the host cannot load the active version."""
        return self.error is None


@dataclass(frozen=True)
class ModelVersion(_Payload):
    """One item of the LIST_MODELS result (a list of these dicts, oldest first)."""

    version: int
    active: bool
    created_at: str | None = None
    created_by: int | str | None = None
    dataset: str | None = None
    test_accuracy: float | None = None
    classes: int | None = None
    note: str = ""  # the accuracy gate's verdict
    # "test_split", or "cross_validation" when test_accuracy is cross-validated (no test photos).
    accuracy_source: str | None = None
    hosts: list[dict[str, Any]] = field(default_factory=list)  # HostStatus of hosts serving it


@dataclass(frozen=True)
class PromoteRequest(_Payload):
    version: int
    requested_by: int | None = None


@dataclass(frozen=True)
class RollbackRequest(_Payload):
    requested_by: int | None = None


@dataclass(frozen=True)
class SwitchResult(_Payload):
    """Result of PROMOTE and ROLLBACK (a refused switch fails with `Refused` instead)."""

    active_version: int
    previous_version: int | None = None


@dataclass(frozen=True)
class Stats(_Payload):
    """Result of STATS: today's classify jobs (UTC day) and the active version."""

    active_version: int
    jobs_today: int
    avg_latency_ms: float | None
    errors_today: int = 0


@dataclass(frozen=True)
class OutboxEntry(_Payload):
    """A published job chain (a Celery signature dict) kept until its reply task ran."""

    signature: dict[str, Any]
    attempts: int = 0  # re-publications so far

    def to_json(self) -> str:
        """The JSON stored in OUTBOX_JOBS; a Celery signature (a dict) serialises as it is."""
        return json.dumps({"signature": self.signature, "attempts": self.attempts})

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Inverse of `to_json`."""
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class ExportRequest(_Payload):
    """/export [N]: version N, or the active one (None)."""

    version: int | None = None
    requested_by: int | None = None


@dataclass(frozen=True)
class ExportResult(_Payload):
    """Result of EXPORT: the files to send, each at most MAX_UPLOAD_BYTES, and those over it."""

    version: int
    documents: dict[str, str] = field(default_factory=dict)  # file name -> base64 bytes
    too_big: dict[str, int] = field(default_factory=dict)  # file name -> its size in bytes
