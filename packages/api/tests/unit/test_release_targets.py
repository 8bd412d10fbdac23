"""The root Makefile's release targets, as dry runs (`make -n`) and as cheap real checks."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def dry_run(*args: str, cwd: Path = ROOT) -> list[str]:
    result = make("-n", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def index_of(lines: list[str], needle: str, start: int = 0) -> int:
    for i in range(start, len(lines)):
        if needle in lines[i]:
            return i
    raise AssertionError(f"{needle!r} not in the dry run after line {start}:\n" + "\n".join(lines))


def test_release_checks_tests_builds_pushes_then_tags_in_that_order():
    lines = dry_run("release", "VERSION=1.2.3", "OWNER=acme")
    steps = [
        "=~ ^[0-9]+",  # the version check
        "git status --porcelain",  # a dirty tree is refused
        'git rev-parse -q --verify "refs/tags/release/v1.2.3"',  # so is an existing tag
        "docker info",
        "-m pytest packages/common/tests/unit",
        "docker build -f docker/Dockerfile --target runtime --build-arg VERSION=1.2.3",
        "-t ghcr.io/acme/mlnode:1.2.3 .",
        "docker push ghcr.io/acme/mlnode:1.2.3",
        'git tag -a release/v1.2.3 -m "MLNode 1.2.3"',
        "git push origin release/v1.2.3",
    ]
    at = 0
    for step in steps:
        at = index_of(lines, step, at)
    assert not any("latest" in line for line in lines)


def test_build_labels_the_image_with_version_revision_and_source():
    build = "\n".join(dry_run("build-release", "VERSION=0.4.0-beta2", "OWNER=acme"))
    assert "--build-arg VERSION=0.4.0-beta2" in build
    assert "--build-arg SOURCE=https://github.com/acme/mlnode" in build
    assert "--build-arg VCS_REF=" in build
    assert "-t ghcr.io/acme/mlnode:0.4.0-beta2 ." in build


def test_image_defaults_to_ghcr_and_can_be_overridden():
    assert "docker push ghcr.io/gonka-ai/mlnode:0.1.0" in dry_run("push-release", "VERSION=0.1.0")
    pushed = dry_run("push-release", "VERSION=0.1.0", "IMAGE=registry.example/me/node")
    assert "docker push registry.example/me/node:0.1.0" in pushed


def test_release_latest_releases_first_then_moves_latest():
    lines = dry_run("release-latest", "VERSION=2.0.0")
    pushed_tag = index_of(lines, "git push origin release/v2.0.0")
    image = "ghcr.io/gonka-ai/mlnode"
    tagged = index_of(lines, f"docker tag {image}:2.0.0 {image}:latest")
    assert pushed_tag < tagged < index_of(lines, "docker push ghcr.io/gonka-ai/mlnode:latest")


@pytest.mark.parametrize("version", ["1.2.3", "0.1.0-alpha1", "10.20.30-beta12", "1.2.3-rc1"])
def test_release_versions_are_accepted(version):
    assert make("check-version", f"VERSION={version}").returncode == 0


@pytest.mark.parametrize(
    "version", ["1.2", "v1.2.3", "1.2.3-rc", "1.2.3-gamma1", "1.2.3-rc1-x", "1.2.3.4", "latest"]
)
def test_other_versions_are_refused(version):
    result = make("check-version", f"VERSION={version}")
    assert result.returncode == 2
    assert f"VERSION '{version}' is not X.Y.Z" in result.stderr


def test_latest_never_moves_to_a_pre_release():
    result = make("release-latest", "VERSION=1.0.0-rc1", "DOCKER=false")
    assert result.returncode == 2
    assert "1.0.0-rc1 is a pre-release" in result.stderr


def test_container_targets_say_when_no_engine_is_reachable():
    for target in ("unit-tests", "build-release", "push-latest"):
        result = make(target, "VERSION=1.0.0", "DOCKER=false")
        assert result.returncode == 2
        assert "No Docker engine is reachable" in result.stderr


def test_docker_lint_and_compose_targets():
    assert any("hadolint --config docker/hadolint.yaml" in line for line in dry_run("lint-docker"))
    compose = dry_run("compose-config", "COMPOSE=docker compose")
    assert "docker compose -f docker/compose.yml config --quiet" in compose


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (tmp_path / "packages/api").mkdir(parents=True)
    (tmp_path / "packages/api/pyproject.toml").write_text('[project]\nversion = "0.9.0"\n')
    (tmp_path / "README").write_text("x\n")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    return tmp_path


def git(cwd: Path, *args: str) -> None:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    identity += ["-c", "tag.gpgSign=false", "-c", "commit.gpgSign=false"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


def test_release_refuses_a_dirty_tree_before_anything_else(repo):
    (repo / "README").write_text("changed\n")
    result = make("release", "VERSION=1.0.0", "DOCKER=false", cwd=repo)
    assert result.returncode == 2
    assert "uncommitted changes" in result.stderr
    assert "pytest" not in result.stdout


def test_release_refuses_an_existing_tag(repo):
    git(repo, "tag", "release/v1.0.0")
    assert make("check-clean-tree", "VERSION=1.1.0", cwd=repo).returncode == 0
    result = make("check-clean-tree", "VERSION=1.0.0", cwd=repo)
    assert result.returncode == 2
    assert "tag release/v1.0.0 exists already" in result.stderr


def test_version_defaults_to_the_release_tag_then_the_package_version(repo):
    assert "docker push ghcr.io/gonka-ai/mlnode:0.9.0" in dry_run("push-release", cwd=repo)
    git(repo, "tag", "release/v1.4.0")
    assert "docker push ghcr.io/gonka-ai/mlnode:1.4.0" in dry_run("push-release", cwd=repo)
    (repo / "README").write_text("next\n")
    git(repo, "commit", "-qam", "after the release")
    result = make("check-version", cwd=repo)
    assert result.returncode == 2 and "VERSION '1.4.0-1-g" in result.stderr
