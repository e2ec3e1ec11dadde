"""`breedbot`: the model commands plus the service ones (worker, replier, flower, up, bot, ...).

`classify`, `retrain --via-queue`, `models`, `promote` and `rollback` go through the real queue,
by task name, exactly as the bot does.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import secrets
import signal
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import contract
from model import cli as model_cli
from model.hparams import HParams
from store import registry
from worker.settings import get_settings

QUEUES = ",".join(contract.WORKER_QUEUES)


def _app() -> Any:
    from worker.celery_app import app

    return app


def cmd_worker(args: argparse.Namespace) -> int:
    """Run one Celery worker (threads pool, events on) in the foreground."""
    argv = ["worker", "-Q", args.queues, "-E", "-P", args.pool, "-l", args.loglevel]
    argv += ["-n", args.hostname, "-c", str(args.concurrency or get_settings().worker_concurrency)]
    _app().worker_main(argv)
    return 0


def cmd_replier(args: argparse.Namespace) -> int:
    """Run the reply sender: the bot's image's Celery worker on the `reply` queue."""
    from bot.reply_app import app

    argv = ["worker", "-Q", contract.QUEUE_REPLY, "-E", "-P", "threads", "-l", args.loglevel]
    app.worker_main([*argv, "-n", args.hostname])
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    """Run Flower on 127.0.0.1 behind basic auth (FLOWER_BASIC_AUTH or a generated password)."""
    settings = get_settings()
    if not os.environ.get("FLOWER_BASIC_AUTH"):
        password = secrets.token_urlsafe(12)
        os.environ["FLOWER_BASIC_AUTH"] = f"admin:{password}"
        print(f"Flower user admin, password {password} (generated; set FLOWER_BASIC_AUTH)")
    port = args.port if args.port is not None else settings.flower_port
    from broker import flower  # a client app: Flower imports no task module

    flower.run([f"--address={settings.flower_address}", f"--port={port}"])
    return 0


def cmd_redis(_args: argparse.Namespace) -> int:
    """Run the embedded redis-server alone until Ctrl-C."""
    from broker.settings import EMBEDDED_URL_FILE
    from ops.redis_server import RedisServer

    settings = get_settings()
    server = RedisServer(settings.var_dir / "redis", url_file=settings.var_dir / EMBEDDED_URL_FILE)
    # SIGTERM behaves like Ctrl-C: the `with` block then stops the server.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with server:
        print(f"redis-server on {server.url} (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Run the whole local stack, or (--info) print the running one's URLs and credentials."""
    from ops import stack

    if args.info:
        return stack.print_info(get_settings())
    return stack.run(get_settings())


def cmd_bot(_args: argparse.Namespace) -> int:
    """Run the Telegram bot (TELEGRAM_BOT_TOKEN): long polling, or a webhook with WEBHOOK_URL."""
    from bot import app as bot_app  # the bot's packages, only for this command

    bot_app.main()
    return 0


def cmd_playground(args: argparse.Namespace) -> int:
    """Run the playground: a local Telegram emulator, its web chat page and the real bot."""
    from ops import playground

    playground.main(args.rest)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """Classify images through the queue; one label_image-style line per image."""
    app = _app()
    pending = []
    for path in args.images:
        payload = contract.ClassifyRequest(
            image_b64=contract.encode_bytes(Path(path).read_bytes()), top_k=args.top_k
        )
        pending.append((path, app.send_task(contract.CLASSIFY, args=[payload.to_dict()])))
    failed = 0
    for path, result in pending:
        answer = contract.ClassifyResult.from_dict(result.get(timeout=args.timeout))
        if answer.error:
            failed += 1
            print(f"{path.name}: error: {answer.error} ({answer.error_message})")
            continue
        best = answer.top_k[0]
        line = f"{path.name}: {best['display_name']} (score = {best['probability']:.2f})"
        if answer.is_pet is False:
            line += f" [no cat or dog? ImageNet says {answer.imagenet_label}]"
        print(line)
    return 1 if failed else 0


def zip_dataset(path: Path, cap: int = contract.MAX_INLINE_DATASET_BYTES) -> bytes:
    """A dataset folder (or .zip) as zip bytes, refusing more than `cap`."""
    if path.is_file():
        data = path.read_bytes()
    else:
        buffer = io.BytesIO()
        # Photos are already compressed: storing them is as small and much faster.
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                archive.write(file, file.relative_to(path).as_posix())
        data = buffer.getvalue()
    if len(data) > cap:
        raise ValueError(
            f"{path} is {len(data) / 2**20:.1f} MB zipped; the queue carries at most "
            f"{cap / 2**20:.0f} MB (send it to the bot instead)"
        )
    return data


def retrain_params(args: argparse.Namespace) -> dict[str, Any]:
    """The retrain flags that differ from HParams' defaults, by retrain.py name."""
    defaults = HParams()
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(HParams)
        if hasattr(args, f.name) and getattr(args, f.name) != getattr(defaults, f.name)
    }


def _print_progress(meta: dict[str, Any]) -> None:
    p = contract.Progress.from_dict(meta)
    accuracy = p.validation_accuracy
    shown = "" if accuracy is None else f", validation accuracy {accuracy:.1%}"
    backbone = f" ({p.backbone})" if p.backbone else ""
    print(f"  {p.stage}{backbone} {p.done}/{p.total}{shown}", flush=True)


def cmd_retrain(args: argparse.Namespace) -> int:
    """`retrain`: locally (the model CLI), or with --via-queue on a worker, showing progress."""
    if not args.via_queue:
        if args.merge:
            raise ValueError("--merge adds to the datasets the workers keep: add --via-queue")
        return model_cli.cmd_retrain(args)
    if args.labels_csv is not None:
        raise ValueError("--via-queue sends --image_dir only: put labels.csv inside it")
    ref = contract.DatasetRef(
        zip_b64=contract.encode_bytes(zip_dataset(args.image_dir)),
        name=args.image_dir.name,
        merge_last=args.merge,
    )
    request = contract.RetrainRequest(
        ref.to_dict(), retrain_params(args), args.min_accuracy, args.force
    )
    result = _app().send_task(contract.RETRAIN, args=[request.to_dict()])
    print(f"retrain job {result.id} queued", flush=True)
    last = None
    while not result.ready():
        if result.state == contract.PROGRESS_STATE and result.info != last:
            last = result.info
            _print_progress(last)
        time.sleep(0.5)
    answer = contract.RetrainResult.from_dict(result.get(timeout=10))
    live = "now active" if answer.activated else "NOT active"
    print(f"Final test accuracy = {answer.test_accuracy:.1%}; version {answer.version} {live}")
    print(f"  {answer.reason}")
    if dataset := answer.metrics.get("dataset"):
        words = {
            "kept": f"kept from version {dataset.get('base_version')}",
            "upload": "uploaded",
            "feedback": "from corrections",
        }
        sources = ", ".join(f"{n} {words[name]}" for name, n in dataset["sources"].items() if n)
        print(f"  trained on {dataset['photos']} photos: {sources}")
        if dataset.get("new_classes"):
            print(f"  new classes: {', '.join(dataset['new_classes'])}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List model versions."""
    versions = _app().send_task(contract.LIST_MODELS).get(timeout=args.timeout)
    for item in map(contract.ModelVersion.from_dict, versions):
        measure = (
            "cross-validated accuracy"
            if item.accuracy_source == "cross_validation"
            else "test accuracy"
        )
        accuracy = "" if item.test_accuracy is None else f"{measure} {item.test_accuracy:.1%}"
        mark = "*" if item.active else " "
        details = ", ".join(
            str(x) for x in (item.dataset, accuracy, item.created_at, item.note) if x
        )
        print(f"{mark} {item.version:>3}  {details}")
        for host in map(contract.HostStatus.from_dict, item.hosts):
            print(f"        {_host_line(host)}")
    return 0


def _host_line(host: contract.HostStatus) -> str:
    line = f"{host.host}: serves version {host.version} through {host.engine} since {host.since}"
    return line if host.healthy else f"{line}; UNHEALTHY, {host.error}"


def cmd_health(args: argparse.Namespace) -> int:
    """What each worker host serves; exit 1 if one cannot load the active version (or none,
    or not `--host`, is there)."""
    from worker import hosts, storage

    found = hosts.read_all(storage.registry(get_settings()).client)
    if args.host:
        found = [status for status in found if status.host == args.host]
    for status in found:
        print(_host_line(status))
    if not found:
        print(f"{args.host or 'no worker host'} has not said what it serves (down, or not started)")
    return 0 if found and all(status.healthy for status in found) else 1


def _switched(answer: dict[str, Any]) -> int:
    result = contract.SwitchResult.from_dict(answer)
    print(f"active version: {result.active_version} (was {result.previous_version})")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Make a version active."""
    payload = contract.PromoteRequest(args.version).to_dict()
    return _switched(_app().send_task(contract.PROMOTE, args=[payload]).get(timeout=args.timeout))


def cmd_rollback(args: argparse.Namespace) -> int:
    """Return to the previously active version."""
    payload = contract.RollbackRequest().to_dict()
    return _switched(_app().send_task(contract.ROLLBACK, args=[payload]).get(timeout=args.timeout))


def cmd_registry(args: argparse.Namespace) -> int:
    """Show the shared registry, or rebuild it from the blob store if Redis came back empty."""
    from worker import storage, versions

    reg = storage.registry(get_settings())
    if args.action == "rebuild":
        # Also imports a MODELS_DIR from before Redis held the registry, as a worker's start does.
        versions.ensure_registry(reg, get_settings().models_root)
    print(
        f"{len(reg.records())} versions, active {reg.active_version()}, "
        f"next number {int(reg.client.get(registry.COUNTER) or 0) + 1}, store {reg.store.url}"
    )
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register the service commands (and extend the model CLI's `retrain`)."""
    retrain = sub.choices["retrain"]
    retrain.add_argument("--via-queue", action="store_true", help="run it on a worker")
    retrain.add_argument("--min-accuracy", type=float, help="gate: minimum test accuracy")
    retrain.add_argument("--force", action="store_true", help="go live even below the gate")
    retrain.add_argument(
        "--merge",
        action="store_true",
        help="with --via-queue: add these photos (new classes too) to the active version's",
    )
    retrain.set_defaults(func=cmd_retrain)

    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument("--queues", "-Q", default=QUEUES)
    p.add_argument("--concurrency", "-c", type=int, help="threads (default WORKER_CONCURRENCY)")
    p.add_argument("--pool", "-P", default="threads", choices=["threads", "solo", "prefork"])
    p.add_argument("--hostname", "-n", default="breedbot@%h")
    p.add_argument("--loglevel", "-l", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("replier", help="run the reply sender (needs TELEGRAM_BOT_TOKEN)")
    p.add_argument("--hostname", "-n", default="replier@%h")
    p.add_argument("--loglevel", "-l", default="INFO")
    p.set_defaults(func=cmd_replier)

    p = sub.add_parser("flower", help="run Flower on 127.0.0.1 with basic auth")
    p.add_argument("--port", type=int, help="default FLOWER_PORT")
    p.set_defaults(func=cmd_flower)

    sub.add_parser("redis", help="run the embedded redis-server").set_defaults(func=cmd_redis)
    p = sub.add_parser("registry", help="show the model registry, or rebuild it from the store")
    p.add_argument("action", nargs="?", choices=["show", "rebuild"], default="show")
    p.set_defaults(func=cmd_registry)
    p = sub.add_parser("health", help="what each worker host serves; exit 1 if one is failing")
    p.add_argument("--host", help="check only this worker (its Celery node name, name@host)")
    p.set_defaults(func=cmd_health)
    p = sub.add_parser("up", help="run Redis, a worker, Flower and the bot")
    p.add_argument(
        "--info", action="store_true", help="print the running stack's URLs and credentials"
    )
    p.set_defaults(func=cmd_up)
    sub.add_parser("bot", help="run the Telegram bot").set_defaults(func=cmd_bot)
    # Its own options (--host, --port, --help) are ops.playground's: passed through as they are.
    p = sub.add_parser("playground", help="run the bot against a local emulator", add_help=False)
    p.set_defaults(func=cmd_playground, passes_rest=True)

    for name, func, helptext in (
        ("classify", cmd_classify, "classify images through the queue"),
        ("models", cmd_models, "list model versions"),
        ("promote", cmd_promote, "make a model version active"),
        ("rollback", cmd_rollback, "return to the previously active version"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for answers")
        p.set_defaults(func=func)
        if name == "classify":
            p.add_argument("images", type=Path, nargs="+")
            p.add_argument("--top-k", type=int, default=5)
        if name == "promote":
            p.add_argument("version", type=int)


def build_parser() -> argparse.ArgumentParser:
    """The full `breedbot` parser."""
    parser = argparse.ArgumentParser(prog="breedbot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    model_cli.add_subcommands(commands)
    add_subcommands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `breedbot` console script."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passes_rest", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return args.func(args)
    # DatasetError is a ValueError and AccuracyGateError a RuntimeError: no TensorFlow import here.
    # A job the worker refused fails with contract.Refused, rebuilt here from its message.
    except (ValueError, FileNotFoundError, RuntimeError, contract.Refused) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except CeleryTimeout:
        print("error: no answer in time; is a worker running (`breedbot up`)?", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
