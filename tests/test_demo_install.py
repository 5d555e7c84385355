"""What `make demo` installs before it runs the demo: JupyterLab in the venv (the `jupyter` extra,
pinned in constraints.txt as in the Dockerfile) and the Debian packages of
scripts/system-packages.sh, redis_exporter among them. Checked without installing anything:
`make -n`, the script's --dry-run against a PATH of stand-in programs, and the pins."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "system-packages.sh"
# Every program the script looks for, and python3 (its venv check runs `python3 -c ...`).
PROGRAMS = ("redis-server", "java", "python3", "prometheus", "prometheus-redis-exporter", "docker-compose",
            "chromium", "chromedriver", "wrk")


def missing_packages(purpose: str, programs: tuple[str, ...], tmp_path: Path) -> list[str]:
    """The Debian packages the script would install for ``purpose`` on a machine that has only
    ``programs`` (stand-ins that exit 0)."""
    folder = tmp_path / f"bin-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    for name in programs:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    result = subprocess.run([shutil.which("bash"), str(SCRIPT), "--dry-run", purpose], env={"PATH": str(folder)},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], timeout=30).returncode == 0


def test_the_demo_gets_prometheus_and_redis_exporter_from_debian(tmp_path):
    assert missing_packages("demo", PROGRAMS, tmp_path) == []
    without_exporter = tuple(name for name in PROGRAMS if name != "prometheus-redis-exporter")
    assert missing_packages("demo", without_exporter, tmp_path) == ["prometheus-redis-exporter"]
    assert missing_packages("test", without_exporter, tmp_path) == ["prometheus-redis-exporter"]  # test_demo starts it
    assert missing_packages("bench", without_exporter, tmp_path) == []
    # The upstream build's name counts as installed too.
    assert missing_packages("demo", (*without_exporter, "redis_exporter"), tmp_path) == []
    assert missing_packages("demo", (), tmp_path) == ["redis-server", "openjdk-17-jre-headless", "python3-venv",
                                                      "prometheus", "prometheus-redis-exporter"]
    assert missing_packages("test", (), tmp_path)[-3:] == ["docker-compose", "chromium", "chromium-driver"]


def test_the_script_refuses_an_unknown_purpose():
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", "everything"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "usage" in result.stderr


def make_dry_run(target: str) -> list[str]:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed: apt-get install make")
    result = subprocess.run([make, "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_make_demo_installs_jupyterlab_and_the_system_packages_before_the_demo():
    steps = make_dry_run("demo")
    run = steps.index(".venv/bin/nextwatch demo")
    install = next(i for i, step in enumerate(steps) if "pip install" in step and "[sequence,jupyter]" in step)
    assert "-c constraints.txt" in steps[install] and "-e " in steps[install]
    assert install < run
    assert "scripts/system-packages.sh demo" in steps[:run]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_the_jupyter_extra_is_pinned_as_in_the_dockerfile():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["jupyter"]
    pins = constraints()
    required = {}
    for text in extra:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} (extra jupyter) is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {text}"
        required[name] = pins[name]
    assert "jupyterlab" in required
    # The compose stack's jupyter image installs the same versions.
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name, version in required.items():
        assert f"{name}=={version}" in dockerfile, f"the Dockerfile's jupyter stage should pin {name}=={version}"
