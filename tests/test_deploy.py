"""Deployment files as users run them: every compose combination validates, the example env makes
compose refuse empty passwords, settings read secret files, and the Kubernetes manifests pass
kubernetes-validate (strict) with the properties the docs promise."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

import contract
from bot.settings import BotSettings
from broker.flower import FlowerSettings
from tests.browser import in_ci
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# Every compose file, and each way the docs combine them (the GPU override always last).
COMPOSE_SETS = [
    ("docker-compose.yml",),
    ("docker-compose.yml", "docker-compose.gpu.yml"),
    ("docker-compose.yml", "docker-compose.scale.yml"),
    ("docker-compose.yml", "docker-compose.scale.yml", "docker-compose.gpu.yml"),
]
# The oldest and the newest Kubernetes the manifests are checked against.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# kubernetes-validate has no schemas for KEDA's CRDs: the fields these manifests use, checked
# here (no unknown field in spec, the Redis list trigger's required metadata).
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                "additionalProperties": False,
            },
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "redis"},
                        "metadata": {
                            "type": "object",
                            "required": ["address", "listName", "listLength"],
                            "additionalProperties": {"type": "string"},
                        },
                        "authenticationRef": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["secretTargetRef"],
        "additionalProperties": False,
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "additionalProperties": False,
                    "properties": {k: {"type": "string"} for k in ("parameter", "name", "key")},
                },
            }
        },
    },
}


# --- compose --------------------------------------------------------------------------------


def compose_or_skip(env: Mapping[str, str] | None = None) -> list[str]:
    """The compose command (v2 plugin first, else v1); skip without one, fail in CI."""
    if shutil.which("docker"):
        found = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if found.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    message = "neither `docker compose` nor docker-compose found (apt-get install docker-compose)"
    if in_ci(os.environ if env is None else env):
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


def _config(compose: list[str], env_file: Path, files: tuple[str, ...]) -> Any:
    """`compose config -q` on `files` with `env_file`, in an environment without their values."""
    argv = [*compose, "--env-file", str(env_file)]
    for name in files:
        argv += ["-f", name]
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [*argv, "config", "-q"], cwd=ROOT, env=clean, capture_output=True, text=True, check=False
    )


def test_every_compose_file_is_in_a_checked_combination() -> None:
    """A new compose file must be added to COMPOSE_SETS (and so to CI)."""
    checked = {name for files in COMPOSE_SETS for name in files}
    assert {path.name for path in ROOT.glob("docker-compose*.yml")} == checked


@pytest.mark.parametrize("files", COMPOSE_SETS, ids="+".join)
def test_compose_combination_validates(files: tuple[str, ...]) -> None:
    """Valid with the CI values; with .env.example, whose passwords are empty, compose refuses
    and names the variable to set."""
    compose = compose_or_skip()
    checked = _config(compose, ROOT / ".ci" / "compose.env", files)
    assert checked.returncode == 0, checked.stderr
    refused = _config(compose, ROOT / ".env.example", files)
    assert refused.returncode != 0
    assert "set REDIS_PASSWORD in .env" in refused.stderr


def test_compose_skip_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """No compose binary: a skip saying how to install one; with CI=true, a failure."""
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.skip.Exception, match="apt-get install docker-compose"):
        compose_or_skip(env={})
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        compose_or_skip(env={"CI": "true"})


def _compose(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def test_compose_defaults_start_on_a_cpu_server() -> None:
    """No GPU reservation but in the GPU override; the S3 service is SeaweedFS, not MinIO; the
    token is a secret file, not a variable; every service's logs rotate."""
    base, gpu, scale = map(_compose, COMPOSE_SETS[3][:1] + COMPOSE_SETS[3][:0:-1])
    assert "deploy" not in base["services"]["worker"]
    assert gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["services"]["worker"]["build"]["args"]["CUDA"] == "true"
    assert scale["services"]["s3"]["image"].startswith("chrislusf/seaweedfs:")
    images = [s.get("image", "") for s in (*base["services"].values(), *scale["services"].values())]
    assert not [image for image in images if image.startswith("minio/")]
    for name in ("bot", "replier"):
        assert base["services"][name]["secrets"] == ["telegram_bot_token"]
        assert "TELEGRAM_BOT_TOKEN" not in base["services"][name]["environment"]
    for services in (base["services"], scale["services"]):
        for name, service in services.items():
            if "image" in service or "build" in service:
                assert service["logging"]["options"]["max-size"], name


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "var", "runs", ".git", "secrets", "**/__pycache__"} <= ignored


# --- secret files ---------------------------------------------------------------------------


@pytest.fixture
def secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A secrets folder as compose and Kubernetes mount it, and no variable shadowing it."""
    for name in ("TELEGRAM_BOT_TOKEN", "REDIS_URL", "FLOWER_BASIC_AUTH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env either
    folder = tmp_path / "run-secrets"
    folder.mkdir()
    (folder / "telegram_bot_token").write_text("123456:from-a-file\n")
    (folder / "redis_url").write_text("redis://:s3cret@redis:6379/0")
    (folder / "flower_basic_auth").write_text("admin:from-a-file")
    yield folder


def test_settings_read_secret_files(secrets_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process's settings read their secrets from files named after them; a variable still
    wins; an empty variable (compose's `X=`) does not hide the file."""
    bot = BotSettings(_secrets_dir=secrets_dir)
    assert bot.telegram_bot_token is not None
    assert bot.telegram_bot_token.get_secret_value() == "123456:from-a-file"
    assert bot.broker_url() == "redis://:s3cret@redis:6379/0"
    worker = WorkerSettings(_secrets_dir=secrets_dir)
    assert worker.flower_basic_auth is not None
    assert worker.flower_basic_auth.get_secret_value() == "admin:from-a-file"
    assert FlowerSettings(_secrets_dir=secrets_dir).broker_url() == bot.broker_url()
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "")
    monkeypatch.setenv("REDIS_URL", "redis://from-the-environment:6379/0")
    bot = BotSettings(_secrets_dir=secrets_dir)
    assert bot.telegram_bot_token is not None
    assert bot.telegram_bot_token.get_secret_value() == "123456:from-a-file"
    assert bot.broker_url() == "redis://from-the-environment:6379/0"


def test_no_secrets_folder_no_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a container (`make up`), a missing /run/secrets is not worth a warning."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BotSettings(_secrets_dir=tmp_path / "absent").telegram_bot_token is None


# --- Kubernetes -----------------------------------------------------------------------------


def _manifests(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(folder.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


CORE = _manifests(K8S)
KEDA = _manifests(K8S / "keda")


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in CORE if doc["kind"] == kind}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_strictly(version: str) -> None:
    """Every core object, against Kubernetes' own schemas, unknown fields refused."""
    assert CORE
    for name, doc in CORE:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} {doc['kind']}: {error.message}")


def test_keda_objects_match_their_schema() -> None:
    """KEDA's CRDs are not in kubernetes-validate: a schema of the fields used, strict."""
    assert {doc["kind"] for _, doc in KEDA} == set(KEDA_SCHEMAS)
    for _, doc in KEDA:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        jsonschema.validate(doc["spec"], KEDA_SCHEMAS[doc["kind"]])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"scaleTargetRef": {"name": "x"}, "trigers": []}, KEDA_SCHEMAS["ScaledObject"]
        )


def test_kubernetes_layout_is_what_the_docs_promise() -> None:
    """One Deployment per process, one bot; KEDA scales the photo workers on the infer list;
    no liveness or startup probe of a Celery consumer goes through the broker; caches on
    emptyDir."""
    deployments = _by_kind("Deployment")
    assert set(deployments) == {
        f"breedbot-{p}" for p in ("bot", "replier", "worker", "trainer", "flower")
    }
    assert deployments["breedbot-bot"]["spec"]["replicas"] == 1
    assert deployments["breedbot-bot"]["spec"]["strategy"]["type"] == "Recreate"
    [scaler] = [doc for _, doc in KEDA if doc["kind"] == "ScaledObject"]
    assert scaler["spec"]["scaleTargetRef"]["name"] == "breedbot-worker"
    assert scaler["spec"]["triggers"][0]["metadata"]["listName"] == contract.QUEUE_INFER
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for probe in ("livenessProbe", "startupProbe"):
                text = yaml.safe_dump(container.get(probe, {}))
                assert "celery" not in text and "redis" not in text, (name, probe)
        if name in ("breedbot-worker", "breedbot-trainer"):
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes["cache"]
            mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
            assert mounts["cache"] == "/cache"
    config = _by_kind("ConfigMap")["breedbot"]["data"]
    assert all(config[k].startswith("/cache/") for k in ("VAR_DIR", "MODELS_DIR", "BREEDBOT_HOME"))
