"""docker-compose.yml and Dockerfile: validated by the real ``docker-compose config``
(Debian's docker-compose, installed by .ci/run), then checked for the contracts the
multi-node set-up relies on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAY_NODES = ("ray-head", "ray-worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not on PATH (apt-get install docker-compose; .ci/run does)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "FER_DB_"))}
    proc = subprocess.run([exe, "-f", "docker-compose.yml", "config"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def _flag(command: list[str], flag: str) -> str:
    i = command.index(flag)
    return command[i + 1]


def _mounts(service: dict) -> dict[str, str]:
    """volume source -> container target"""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            src, dst = v.split(":")[:2]
        else:
            src, dst = v["source"], v["target"]
        out[src] = dst
    return out


def test_five_services(compose):
    assert {"postgres", "ray-head", "ray-worker", "dashboard", "driver"} <= set(compose["services"])


def test_postgres_has_healthcheck_and_volume(compose):
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    volume = next(iter(_mounts(pg)))
    assert volume in compose["volumes"], "postgres data must live on a named volume"
    assert compose["services"]["ray-head"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_ray_worker_reserves_nvidia_gpus(compose):
    devices = compose["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "--address=ray-head:6379" in compose["services"]["ray-worker"]["command"]
    assert "--head" in compose["services"]["ray-head"]["command"]


def test_dashboard_port_is_local_only(compose):
    ports = compose["services"]["dashboard"]["ports"]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), ports
    assert any(":8080" in str(p) for p in ports)


def test_ray_nodes_and_driver_share_the_runs_volume(compose):
    assert "runs" in compose["volumes"]
    for name in (*RAY_NODES, "driver"):
        svc = compose["services"][name]
        assert _mounts(svc).get("runs") == "/runs", name
        assert svc["environment"]["FER_STUDY_RUNS"] == "/runs", name
        assert svc["environment"]["RAY_ADDRESS"] == "ray-head:6379", name
    for name in RAY_NODES:
        assert compose["services"][name].get("shm_size"), name


def test_driver_and_dashboard_use_the_same_storage(compose):
    driver, dashboard = compose["services"]["driver"], compose["services"]["dashboard"]
    url = _flag(driver["command"], "--storage")
    assert url.startswith("postgresql+psycopg://") and url.endswith("@postgres:5432/fer")
    assert driver["environment"]["FER_STUDY_STORAGE"] == url
    assert dashboard["command"][:2] == ["fer-study", "dashboard"] and _flag(dashboard["command"], "--storage") == url
    # the dashboard shows the artifacts the driver uploads: one store, one volume
    assert _flag(dashboard["command"], "--artifacts") == driver["environment"]["FER_STUDY_ARTIFACTS"] == "/artifacts"
    assert _mounts(dashboard).get("artifacts") == _mounts(driver).get("artifacts") == "/artifacts"
    assert "artifacts" in compose["volumes"]
    assert _flag(driver["command"], "--address") == "ray-head:6379"
    assert driver["command"][:3] == ["fer-study", "launch", "imbalance-ablation"]
    # only the driver writes the database: Ray nodes carry no credentials
    for name in RAY_NODES:
        assert "FER_STUDY_STORAGE" not in compose["services"][name].get("environment", {}), name


def test_dockerfile_installs_with_the_constraints():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM\s+\S+", text, flags=re.M)
    assert re.search(r"pip install[^\n]*-c constraints\.txt", text)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
