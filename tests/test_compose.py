"""docker-compose.yml and Dockerfile: the compose file validated against the Compose Specification's
JSON schema (vendored in tests/compose_spec/, checked with ``jsonschema``, so no Docker tool is needed),
then checked for the contracts the multi-node set-up relies on; where ``docker-compose`` is installed
(scripts/test installs Debian's when it runs as root, as CI does), ``docker-compose config`` must accept
the file and resolve it as these tests do."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).resolve().parent / "compose_spec" / "compose-spec.json"
RAY_NODES = ("ray-head", "ray-worker")

# ${NAME}, ${NAME:-word}, ${NAME-word}, ${NAME:?err}, ${NAME?err}, ${NAME:+word}, ${NAME+word}, $NAME, $$
_VAR = re.compile(r"\$(?:(?P<dollar>\$)|(?P<plain>[_A-Za-z][_A-Za-z0-9]*)|\{(?P<name>[_A-Za-z][_A-Za-z0-9]*)"
                  r"(?:(?P<op>:?[-?+])(?P<word>(?:[^{}]|\{[^{}]*\})*))?\})")


def interpolate(value, env: dict[str, str]):
    """The Compose Specification's interpolation (its 12-interpolation.md) of every string value, in
    Python. Stricter than Compose in one way: an unset variable without a default is an error here, not
    an empty string, so every variable the file uses must carry its default."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}  # keys are never interpolated
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m["dollar"]:
            return "$"
        name = m["plain"] or m["name"]
        op, word = m["op"], m["word"]
        unset, empty = name not in env, not env.get(name)
        if op in (":-", "-"):
            return interpolate(word, env) if (empty if op == ":-" else unset) else env[name]
        if op in (":?", "?"):
            if empty if op == ":?" else unset:
                raise KeyError(f"{name}: {interpolate(word, env)}")
            return env[name]
        if op in (":+", "+"):
            return "" if (empty if op == ":+" else unset) else interpolate(word, env)
        if unset:
            raise KeyError(f"${{{name}}} has no default in docker-compose.yml")
        return env[name]

    return _VAR.sub(one, value)


def load_compose(env: dict[str, str] | None = None) -> dict:
    """docker-compose.yml as Compose reads it: YAML (anchors and ``<<`` merge keys resolved by the
    loader), variables interpolated from ``env`` (default: none set, so the file's defaults)."""
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()), env or {})


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_compose_file_follows_the_compose_specification(compose, validator):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors


def _set(path: str, value):
    """An edit of the compose dict: set the value at a slash-separated path."""
    def edit(doc: dict) -> None:
        *parents, last = path.split("/")
        for key in parents:
            doc = doc[int(key)] if isinstance(doc, list) else doc[key]
        doc[last] = value
    return edit


@pytest.mark.parametrize("edit", [
    _set("services/ray-head/shm-size", "8gb"),  # a misspelt key
    _set("services/dashboard/ports", "127.0.0.1:8080:8080"),  # a list given as a string
    _set("services/ray-head/depends_on/postgres/condition", "healthy"),  # not one of the conditions
    _set("services/ray-worker/deploy/resources/reservations/devices/0/capabilities", "gpu"),  # not a list
    _set("volumes/runs", ["nfs"]),  # a volume given as a list
], ids=["misspelt-key", "ports-string", "bad-condition", "capabilities-string", "volume-list"])
def test_the_schema_check_rejects_what_compose_would(compose, validator, edit):
    """The check is live: each of these edits of the real file makes it invalid."""
    broken = copy.deepcopy(compose)
    edit(broken)
    assert not validator.is_valid(broken)


def test_interpolation_follows_the_specification():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d}|${EMPTY:-d}|${UNSET:-d}|${EMPTY-d}|${UNSET-d}", env) == "v|d|d||d"
    assert interpolate("${SET:+a}|${EMPTY:+a}|${EMPTY+a}|${UNSET+a}|$SET|$${SET}|a$$b", env) == "a||a||v|${SET}|a$b"
    assert interpolate("${UNSET:-${SET}-x}", env) == "v-x"  # nested
    assert interpolate({"${SET}": ["$SET", 1, None]}, env) == {"${SET}": ["v", 1, None]}  # keys stay as written
    with pytest.raises(KeyError, match="needed"):
        interpolate("${EMPTY:?needed}", env)
    with pytest.raises(KeyError, match="no default"):
        interpolate("${UNSET}", env)


def test_docker_compose_config_accepts_the_file_and_resolves_it_alike(compose):
    """The real tool, where installed: ``docker-compose config`` accepts the file and resolves the
    commands, environments and images as load_compose does, with the defaults and with a variable set."""
    exe = os.environ.get("FER_TEST_DOCKER_COMPOSE") or shutil.which("docker-compose")
    if not exe:
        pytest.skip("docker-compose is not installed (scripts/test installs Debian's when run as root with "
                    "apt-get, as CI does): the schema and wiring tests above ran without it")
    assert Path(exe).exists(), f"$FER_TEST_DOCKER_COMPOSE={exe} does not exist"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "FER_DB_"))}
    for extra in ({}, {"FER_DB_PASSWORD": "s3cret"}):
        proc = subprocess.run([exe, "-f", "docker-compose.yml", "config"], cwd=ROOT, env={**base, **extra},
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        real, ours = yaml.safe_load(proc.stdout), load_compose(extra)
        assert set(real["services"]) == set(ours["services"]) and set(real["volumes"]) == set(ours["volumes"])
        for name, svc in ours["services"].items():
            for key in ("command", "environment", "image", "profiles", "shm_size"):
                assert _strs(real["services"][name].get(key)) == _strs(svc.get(key)), (name, key)
        if extra:
            assert "s3cret@postgres:5432" in real["services"]["driver"]["environment"]["FER_STUDY_STORAGE"]


def _strs(value):
    """Compose writes every scalar of a command or environment as a string."""
    if isinstance(value, dict):
        return {k: _strs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strs(v) for v in value]
    return value if value is None else str(value)


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
