"""What docker-compose.yml, the Dockerfile and .env.example promise a deployment, read from the files themselves."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest

from tests.deploy import compose

VARIABLES = {"SECRET_KEY": "not-a-secret", "POSTGRES_PASSWORD": "not-a-password"}
SERVICES = compose.services(compose.load(VARIABLES))
APP_SERVICES = ("migrate", "web", "worker", "training-worker", "scheduler", "gpu-worker")
WORKERS = ("worker", "training-worker", "gpu-worker")

# CUDA wheel indexes PyTorch publishes for a torch pin: the release compatibility matrix in pytorch/pytorch's
# RELEASE.md (row 2.13: CUDA 12.6 and 13.0 stable, 13.2 experimental). A new pin needs its row here.
TORCH_CUDA_INDEXES = {"2.13.0": {"cu126", "cu130", "cu132"}}


def test_compose_refuses_to_start_without_the_secrets():
    for missing in VARIABLES:
        with pytest.raises(compose.InterpolationError, match=missing):
            compose.load({name: value for name, value in VARIABLES.items() if name != missing})
        with pytest.raises(compose.InterpolationError, match=missing):
            compose.load({**VARIABLES, missing: ""})


def test_every_long_running_service_restarts_and_has_a_healthcheck():
    for name, service in SERVICES.items():
        if name == "migrate":
            assert service.spec["restart"] == "no" and service.healthcheck is None  # one-shot: exits when done
            continue
        assert service.spec.get("restart") in ("unless-stopped", "always"), name
        assert service.healthcheck, name


def test_web_and_workers_start_after_the_migrations_have_finished():
    migrate = SERVICES["migrate"]
    assert migrate.command[:3] == ["python", "manage.py", "migrate"]
    assert migrate.depends_on() == {"postgres": "service_healthy"}
    for name in ("web", "scheduler", *WORKERS):
        assert SERVICES[name].depends_on() == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "migrate": "service_completed_successfully",
        }, name
        assert "migrate" not in " ".join(SERVICES[name].command), f"{name} must not migrate on its own (it races)"


@pytest.mark.parametrize("setting", ["IMPORT_DIR", "MODEL_STORE"])
def test_uploads_and_models_are_on_a_volume_every_app_container_mounts(setting):
    volumes = set()
    for name in APP_SERVICES:
        service = SERVICES[name]
        path = PurePosixPath(service.environment[setting])
        mounts = [target for target in service.named_volumes if path.is_relative_to(target)]
        assert mounts, f"{name}: {setting}={path} is not on a volume, so other containers do not see it"
        volumes.add(service.named_volumes[mounts[0]])
    assert len(volumes) == 1, f"{setting} is on different volumes in different services: {volumes}"
    assert volumes <= set(compose.load(VARIABLES)["volumes"])


def test_redis_keeps_queued_jobs_across_a_restart():
    redis = SERVICES["redis"]
    command = " ".join(redis.command)
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert redis.named_volumes.get("/data")


def test_healthchecks_probe_healthz_and_each_worker_by_its_node_name():
    web = SERVICES["web"]
    assert "/healthz" in web.healthcheck[-1]
    assert web.environment["PORT"] == "8000" and web.spec["ports"] == ["8000:8000"]
    for name in WORKERS:
        service = SERVICES[name]
        node = service.command[service.command.index("-n") + 1]
        prefix = node.removesuffix("@%h")
        assert node == f"{prefix}@%h", name
        assert f"inspect ping -d {prefix}@$HOSTNAME" in service.healthcheck[-1], name
    assert SERVICES["postgres"].healthcheck[0] == "pg_isready"
    assert SERVICES["redis"].healthcheck == ["redis-cli", "ping"]


def test_one_scheduler_runs_celery_beat_and_checks_that_its_sweep_runs():
    schedulers = [name for name, service in SERVICES.items() if "beat" in service.command]
    assert schedulers == ["scheduler"]
    scheduler = SERVICES["scheduler"]
    assert scheduler.command[:4] == ["celery", "-A", "config", "beat"]
    assert scheduler.healthcheck[-3:] == ["python", "manage.py", "jobs_sweep_check"]
    assert "deploy" not in scheduler.spec or "replicas" not in scheduler.spec["deploy"]


def test_every_app_container_gets_the_proxy_tls_settings():
    for name in APP_SERVICES:
        env = SERVICES[name].environment
        for variable in ("SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS"):
            assert variable in env, f"{name} lacks {variable}"


def test_gpu_worker_gets_every_gpu_and_a_torch_build_that_exists():
    gpu = SERVICES["gpu-worker"]
    devices = gpu.spec["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    # ... and trains each job in one process per GPU it sees (0 = automatic), keeping the shared environment
    assert gpu.environment["TRAINING_NUM_PROCESSES"] == "0"
    assert gpu.environment["DATABASE_URL"] == SERVICES["worker"].environment["DATABASE_URL"]
    from rlhf_worker.training.distributed import resolve_num_processes

    assert resolve_num_processes(0, int(gpu.environment["TRAINING_NUM_PROCESSES"])) == max(1, torch_gpus())
    pin = re.search(r"^torch==(\S+)$", (compose.BASE_DIR / "requirements.txt").read_text(), re.M)[1]
    index = gpu.spec["build"]["args"]["TORCH_INDEX"]
    assert index.startswith("https://download.pytorch.org/whl/")
    assert index.rstrip("/").rsplit("/", 1)[-1] in TORCH_CUDA_INDEXES[pin], f"no torch {pin} build at {index}"
    instructions = "\n".join(
        line for line in (compose.BASE_DIR / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")
    )
    # torch from that one index: a missing build fails the image build instead of falling back to PyPI.
    assert '--index-url "${TORCH_INDEX}"' in instructions and "--extra-index-url" not in instructions


def torch_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def test_env_example_lists_every_variable_compose_reads():
    example = (compose.BASE_DIR / ".env.example").read_text()
    listed = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", example, re.M))
    assert compose.variable_names() <= set(listed), sorted(compose.variable_names() - set(listed))
    assert listed["SECRET_KEY"] == "" and listed["POSTGRES_PASSWORD"] == ""  # no usable default secret
    assert listed["TORCH_GPU_INDEX"] == SERVICES["gpu-worker"].spec["build"]["args"]["TORCH_INDEX"]
