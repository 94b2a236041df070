"""pip (pyproject.toml) and conda (environment.yml) install the same packages."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pip_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | {r for extra in project["optional-dependencies"].values() for r in extra}


def _conda_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\s*- pip:\s*$", line))
    return {line.strip()[2:].strip() for line in lines[start + 1:] if line.strip().startswith("- ")}


def test_pip_and_conda_list_the_same_dependencies():
    assert _pip_requirements() == _conda_requirements()


def test_torch_is_an_ordinary_range_for_users():
    torch_spec = next(r for r in _pip_requirements() if r.startswith("torch"))
    assert ">=" in torch_spec and "==" not in torch_spec


def test_ci_pins_the_cpu_torch_and_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme
    assert "TORCH ?= torch==2.13.0" in makefile
