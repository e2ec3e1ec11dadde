"""The per-process classifier: loaded after fork, warmed up, reloaded when the active pointer moves.

On a CPU this process never imports TensorFlow: it serves through `model.runtime` (LiteRT), and
what TensorFlow must build (the zero-shot conversion, a retrain) runs in a child process. On a
GPU (the tf engine) it loads TensorFlow, which is not fork-safe, so nothing here runs at import.
The worker uses the threads pool: the model lives in the worker process itself, loaded from
`celeryd_after_setup` before the consumer starts (or from `worker_process_init` in a prefork
child), and every pool thread shares it through the gather loop. A watcher thread reads the
active pointer in Redis once per interval (one GET); when it moves, the version is fetched from
the blob store into this host's cache (worker/versions.py), loaded and warmed up beside the old
one, then swapped in, so jobs already holding the old classifier finish on it. A version that
cannot be fetched or loaded is retried after a while; the old one keeps serving meanwhile. At
every poll the worker also says in Redis what it serves and why it could not load the active
version (worker/hosts.py), for `/models` and `breedbot health`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import contract
from model.hparams import AUTO, AUTO_CANDIDATES, BACKBONE_NAMES, DEFAULT_BACKBONE
from model.predict import load_classifier
from model.runtime import litert
from model.runtime.classifier import Classifier
from model.runtime.home import default_home
from model.runtime.openset import Answer
from store.registry import ZERO_SHOT, Registry
from worker import child, fetch, hosts, memory, stats, storage, versions
from worker.batching import Batcher
from worker.settings import WorkerSettings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """A loaded model version."""

    version: int
    classifier: Classifier
    since: str = ""  # ISO time it was loaded


# The Celery node name ("name@host") this worker's status goes under: two workers may share a
# machine. Set when the worker starts (worker/celery_app.py), before the model loads.
_node = {"name": socket.gethostname()}


def name_node(name: str) -> None:
    """Publish this process's status under the Celery node `name`."""
    _node["name"] = name


# A version that failed to fetch or load is tried again after this many seconds.
RETRY_SECONDS = 30
# A start that failed (Redis or the store unreachable, a malformed record) is tried again by the
# watcher, after 5 s doubling to 2 min: a start may convert a backbone in a TensorFlow child.
START_RETRY_SECONDS = (5, 120)


class ModelHolder:
    """The active version's classifier in this process, kept current by a watcher thread."""

    def __init__(
        self,
        reg: Registry,
        root: Path,
        *,
        home: Path | None = None,
        interval: float = 1.0,
        engine: str = "auto",
        num_threads: int | None = None,
        on_load: Callable[[Served], None] = lambda _: None,
        backbones: tuple[str, ...] = (),
    ) -> None:
        self.registry = reg
        self.on_load = on_load
        self.root = Path(root)
        self.home = Path(home) if home else default_home()
        self.interval = interval
        self.engine = engine
        self.num_threads = num_threads
        # Converted in the background after the start, so that a version another host trains on
        # one of them is served here without a conversion first (a minute for Lite2 on 2 cores).
        self.backbones = backbones
        self._served: Served | None = None
        self._failed: dict[int, float] = {}  # version -> when it last failed to load
        self._active = ZERO_SHOT  # what the pointer said when this host last looked
        self._error: str | None = None  # why the active version could not be loaded
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._started = False  # the start-up steps below all succeeded once

    def _load(self, version: int) -> Served:
        started = time.perf_counter()
        classifier = load_classifier(
            versions.folder(self.registry, version, self.root, self.home, _convert),
            home=self.home,
            engine=self.engine,
            num_threads=self.num_threads,
        )
        classifier.warm_up()
        seconds = time.perf_counter() - started
        log.info(
            "serving model version %s through %s (%.1f s to load)",
            version,
            classifier.engine,
            seconds,
        )
        served = Served(version, classifier, datetime.now(UTC).isoformat(timespec="seconds"))
        self.on_load(served)
        return served

    def current(self) -> Served:
        """The version to start a job on (loads it on first use)."""
        if self._served is None:
            with self._lock:
                if self._served is None:
                    version = self._active = self.registry.active_version()
                    try:
                        self._served = self._load(version)
                    except Exception as exc:
                        log.exception("cannot load active version %s; serving 0", version)
                        self._failed_to_load(version, exc)
                        self._served = self._load(ZERO_SHOT)
        return self._served

    def check(self) -> bool:
        """Reload if the active pointer moved (one Redis GET when it did not); True if swapped."""
        if self.registry.is_empty():  # Redis came back without the registry (FLUSHALL)
            self.registry.rebuild()
        version = self._active = self.registry.active_version()
        if self._served is not None and self._served.version == version:
            self._error = None
            return False
        failed = self._failed.get(version)
        if failed is not None and time.monotonic() - failed < RETRY_SECONDS:
            return False
        with self._lock:
            try:
                self._served = self._load(version)
            except Exception as exc:
                # A version that cannot be fetched or loaded must not take the worker down:
                # keep serving the old one.
                log.exception("could not load model version %s; keeping the current one", version)
                self._failed_to_load(version, exc)
                return False
            self._failed.pop(version, None)
            self._error = None
        versions.drop_pruned(self.root, self.registry.pruned())
        memory.give_back()  # the old version's buffers, once its last jobs let go of it
        return True

    def _failed_to_load(self, version: int, exc: Exception) -> None:
        self._failed[version] = time.monotonic()
        self._error = f"cannot load version {version}: {type(exc).__name__}: {exc}"[:500]

    def status(self, host: str) -> contract.HostStatus:
        """What this process serves, as `host`, and why it could not load the active version."""
        served = self.current()
        return contract.HostStatus(
            host,
            served.version,
            served.classifier.engine,
            served.since,
            self._active,
            self._error,
        )

    def report(self) -> None:
        """Publish `status` in Redis (worker/hosts.py), under this worker's node name."""
        hosts.publish(self.registry.client, self.status(_node["name"]))

    def start(self) -> None:
        """Load and warm up now, before the first job, then watch the pointer.

        The watcher starts even if this start fails: Celery swallows an exception raised here,
        and the worker would then serve with no watcher for good. The watcher retries the start
        until it succeeds, then follows the pointer.
        """
        try:
            self._start_once()
        except Exception:
            log.exception("model holder could not start; the watcher tries again")
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
            self._watcher.start()
            threading.Thread(target=self._warm_up_backbones, name="backbones", daemon=True).start()

    def _warm_up_backbones(self) -> None:
        for backbone in self.backbones:
            try:
                prepare_zero_shot(self.home, self.engine, backbone)
            except Exception:  # the watcher converts it when a version needs it
                log.exception("could not convert backbone %s ahead of time", backbone)

    def _start_once(self) -> None:
        prepare_zero_shot(self.home, self.engine)
        versions.ensure_registry(self.registry, self.root)
        self.current()
        memory.give_back()  # what loading and warming up left free in the threads' arenas
        self.report()
        self._started = True

    def _watch(self) -> None:
        start_delay, most = START_RETRY_SECONDS
        while True:
            time.sleep(self.interval if self._started else start_delay)
            try:
                if self._started:
                    self.check()
                else:
                    start_delay = min(start_delay * 2, most)
                    self._start_once()
                    self.check()  # the pointer may have moved since the first load
                self.report()
            except Exception:
                log.exception("model watcher check failed")


# One conversion at a time in a process: the watcher waits for the one warming its backbone up
# instead of converting the same backbone beside it.
_converting = threading.Lock()


def _convert(handle: str, home: Path) -> None:
    """Make a named backbone's float LiteRT files (its zero-shot folder) in this host's home,
    once, in a child process: it takes TensorFlow, which this process never imports when it
    serves through LiteRT."""
    with _converting:
        if not litert.zero_shot_ready(home, handle):
            log.info("converting backbone %s into %s (once per host)", handle, home)
            child.run("worker.tf_jobs:convert_zero_shot", (handle, home), lambda _: None)


def prepare_zero_shot(home: Path | None, engine: str, backbone: str = DEFAULT_BACKBONE) -> None:
    """Convert a named backbone (the zero-shot model's by default) once per BREEDBOT_HOME, when
    this host serves through LiteRT."""
    if litert.resolve_engine(engine) == "litert":
        _convert(backbone, Path(home) if home else default_home())


def trained_backbones(architecture: str) -> tuple[str, ...]:
    """The named backbones versions retrained with `architecture` may use."""
    if architecture == AUTO:
        return AUTO_CANDIDATES
    return (architecture,) if architecture in BACKBONE_NAMES else ()


def publish_labels(url: str, served: Served) -> None:
    """Keep a loaded version's [label, display name] pairs in Redis, for the bot to match a breed
    a user types after ❌ (see contract.labels_key)."""
    classifier = served.classifier
    pairs = list(zip(classifier.labels, classifier.display_names, strict=True))
    key = contract.labels_key(served.version)
    stats.client(url).set(key, json.dumps(pairs), ex=contract.PHOTO_TTL_SECONDS)


@functools.cache
def _process_state(pid: int) -> tuple[ModelHolder, Batcher]:
    # Keyed by pid so that a forked child never reuses its parent's TensorFlow objects.
    settings = get_settings()
    holder = ModelHolder(
        storage.registry(settings),
        settings.models_root,
        home=settings.breedbot_home,
        interval=settings.reload_interval,
        engine=settings.inference_engine,
        num_threads=settings.litert_threads,
        on_load=lambda served: publish_labels(settings.broker_url(), served),
        backbones=trained_backbones(settings.retrain_architecture),
    )
    batcher = Batcher(settings.batch_max_size, settings.batch_wait_ms / 1e3, settings.heavy_decodes)
    return holder, batcher


def holder() -> ModelHolder:
    """This process's model holder."""
    return _process_state(os.getpid())[0]


def batcher() -> Batcher:
    """This process's gather loop."""
    return _process_state(os.getpid())[1]


def _answer(answer: Answer) -> contract.Answer:
    """The model's decision as the contract carries it."""
    return contract.Answer(
        answer.species,
        answer.label,
        answer.display_name,
        answer.trained,
        round(answer.score, 6),
        answer.known_breeds,
    )


def classify(
    request: contract.ClassifyRequest, settings: WorkerSettings
) -> contract.ClassifyResult:
    """Answer one classify request with the active version; bad input gives an error result."""
    started = time.perf_counter()
    served = holder().current()
    try:
        image = fetch.image_bytes(request, stats.client(settings.broker_url()))
    except fetch.InputError as exc:
        result = contract.ClassifyResult(
            served.version, [], None, 0.0, "", 0.0, error=exc.code, error_message=str(exc)
        )
    else:
        fetched = time.perf_counter()
        top_k = max(1, min(request.top_k, len(served.classifier.labels)))
        answer = (
            batcher()
            .submit(served.classifier, image, top_k)
            .result(timeout=settings.classify_soft_time_limit)
        )
        p = answer.prediction
        result = contract.ClassifyResult(
            model_version=served.version,
            top_k=[
                contract.Guess(g.label, g.display_name, g.probability).to_dict()
                for g in p.guesses[:top_k]
            ],
            model_top_k=[
                contract.Guess(g.label, g.display_name, g.probability).to_dict()
                for g in p.top_k[:top_k]
            ],
            is_pet=p.is_pet,
            pet_unsure=p.pet_unsure,
            pet_probability=p.pet_probability,
            imagenet_label=p.imagenet_label,
            imagenet_probability=p.imagenet_probability,
            timings_ms={
                "fetch": round((fetched - started) * 1e3, 2),
                "queued": round(answer.queued_ms, 2),
                "decode": round(answer.decode_ms, 2),
                "model": round(answer.model_ms, 2),
                "batch_size": answer.batch_size,
                "total": round((time.perf_counter() - started) * 1e3, 2),
            },
            error=p.error,
            error_message=p.error_message,
            answer=None if p.answer is None else _answer(p.answer).to_dict(),
        )
    total = (time.perf_counter() - started) * 1e3
    stats.record_classify(settings.broker_url(), total, result.error is not None)
    return result
