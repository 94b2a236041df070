"""The README's results are rendered from the JSON reports in assets/, and each report was
written by the current default configuration of its setting (its config hash says so)."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from calm_mini.cli import main
from calm_mini.experiments.kv import ExperimentConfig
from calm_mini.experiments.readme import (MARKER, PARTS, SOURCES, disagreements, load_reports, render, stale_reports,
                                         update_readme)
from calm_mini.experiments.reports import against_range, config_hash, jsonable, spread

ROOT = Path(__file__).resolve().parents[1]
README, ASSETS = ROOT / "README.md", ROOT / "assets"


def test_the_committed_readme_agrees_with_the_committed_reports():
    differ = disagreements(README.read_text(), load_reports(ASSETS))
    assert not differ, f"README parts differ from their JSON: {differ}; run `python -m calm_mini readme`"


def test_every_marker_names_a_part_and_every_part_is_in_the_readme():
    names = [m["name"] for m in MARKER.finditer(README.read_text())]
    assert sorted(names) == sorted(PARTS), "each part rendered once, no marker without a renderer"
    assert {name.split()[0] for name in names} == set(SOURCES)


def test_every_committed_report_was_written_by_the_current_default_config():
    """Fails when a default setting changed after its report was written; the message names the
    command that rewrites each stale file (then run `python -m calm_mini readme`)."""
    reports = load_reports(ASSETS)
    assert set(reports) == set(SOURCES), "every report the README reads is committed"
    stale = stale_reports(reports)
    assert not stale, "stale reports:\n" + "\n".join(stale.values())


@pytest.fixture
def copy(tmp_path):
    """A copy of the README and of the reports, to change."""
    shutil.copytree(ASSETS, tmp_path / "assets", ignore=shutil.ignore_patterns("figures", "*.png", "*.svg"))
    shutil.copy(README, tmp_path / "README.md")
    return tmp_path


def _edit(path: Path, change) -> None:
    report = json.loads(path.read_text())
    change(report)
    path.write_text(json.dumps(report))


def test_changing_one_number_in_a_report_makes_the_check_fail_and_names_the_table(copy, capsys):
    def bump(report):
        report["table"]["KV-MATH"]["CALM"] += 1.0
        for part in report.get("range", {}).values():  # with several seeds the README shows the range
            part["CALM"]["mean"] += 1.0

    _edit(copy / "assets" / "kv_results.json", bump)
    _edit(copy / "assets" / "kv_ablations.json", lambda r: r["variants"]["LoRA on m_B"].update({"NUM-MATH": 1.0}))
    before = (copy / "README.md").read_text()
    assert update_readme(copy / "README.md", copy / "assets", check=True) == ["kv_results table1",
                                                                               "kv_ablations variants"]
    assert (copy / "README.md").read_text() == before, "--check changes nothing"
    with pytest.raises(SystemExit) as exit_:
        main(["readme", "--check", "--readme", str(copy / "README.md"), "--assets", str(copy / "assets")])
    printed = capsys.readouterr().out
    assert exit_.value.code == 1 and "kv_results table1, kv_ablations variants" in printed

    assert update_readme(copy / "README.md", copy / "assets") == ["kv_results table1", "kv_ablations variants"]
    assert update_readme(copy / "README.md", copy / "assets", check=True) == []
    lora = json.loads((copy / "assets" / "kv_ablations.json").read_text())["variants"]["LoRA on m_B"]["KV-MATH"]
    assert f"| 1.0 | {lora:.1f} |" in (copy / "README.md").read_text(), "the rewritten LoRA row"


def test_an_inline_number_is_checked_too(copy):
    _edit(copy / "assets" / "keys_chars_results.json", lambda r: r.update({"augmenting_own_format": 12.3}))
    assert update_readme(copy / "README.md", copy / "assets", check=True) == ["keys_chars_results table",
                                                                               "keys_chars_results own-format"]


def test_a_benchmark_figure_is_checked_and_a_benchmark_is_never_stale(copy):
    """The hot-path table is rendered from its benchmark's JSON; a benchmark has no kit config to
    go stale against (its figures depend on the machine), so only agreement is checked."""
    _edit(copy / "assets" / "bench_hot_path_cpu.json", lambda r: r["pairs"]["small"]["forward"].update({"ratio": 1.5}))
    assert update_readme(copy / "README.md", copy / "assets", check=True) == ["bench_hot_path_cpu table"]
    update_readme(copy / "README.md", copy / "assets")
    assert "| small: 256×8 ← 128×4 | **1.500**" in (copy / "README.md").read_text()
    assert stale_reports({"bench_hot_path_cpu": {"setting": {"batch": 4}}}) == {}

    def double_first_memory_ratio(report):
        memory = next(r for r in report["results"] if r["benchmark"] == "memory")
        memory["training_over_inference"] = 9.99

    _edit(copy / "assets" / "bench_cpu.json", double_first_memory_ratio)
    assert update_readme(copy / "README.md", copy / "assets", check=True) == ["bench_cpu table", "bench_cpu memory-span"]


def test_a_missing_report_names_the_command_of_its_setting():
    reports = load_reports(ASSETS)
    del reports["kv_results_paper_cpu"]
    with pytest.raises(FileNotFoundError, match="reproduce --assets assets --setting paper_cpu"):
        render(README.read_text(), reports)


def test_a_report_of_another_config_is_stale_and_names_its_command():
    cfg = ExperimentConfig.classroom()
    current = {"setting": "classroom", "config_hash": config_hash(cfg), "seeds": [0]}
    other = {**current, "config_hash": config_hash(replace(cfg, bridges=replace(cfg.bridges, steps=7)))}
    assert stale_reports({"kv_ablations": current}) == {}
    assert "rerun `python -m calm_mini ablations --assets assets`" in stale_reports({"kv_ablations": other})["kv_ablations"]
    one_seed = stale_reports({"kv_results": current})["kv_results"]
    assert "holds 1 seed(s), the README shows 5" in one_seed and "reproduce --seeds 5" in one_seed


def test_the_config_hash_is_stable_and_sees_every_setting():
    cfg = ExperimentConfig.smoke()
    assert config_hash(cfg) == config_hash(ExperimentConfig.smoke()) == config_hash(jsonable(cfg))
    reordered = dict(reversed(list(jsonable(cfg).items())))
    assert config_hash(reordered) == config_hash(cfg), "key order does not matter"
    assert config_hash(replace(cfg, kv=replace(cfg.kv, seed=1))) != config_hash(cfg)
    assert config_hash(replace(cfg, eval_batch_size=99)) != config_hash(cfg)
    assert len(config_hash(cfg)) == 12


def test_spread_gives_mean_min_and_max_per_cell():
    tables = [{"KV-MATH": {"CALM": 90.0, "m_A": 1.0}}, {"KV-MATH": {"CALM": 80.0, "m_A": 2.0}},
              {"KV-MATH": {"CALM": 85.5, "m_A": 0.0}}]
    assert spread(tables) == {"KV-MATH": {"CALM": {"mean": 85.2, "min": 80.0, "max": 90.0},
                                          "m_A": {"mean": 1.0, "min": 0.0, "max": 2.0}}}
    assert spread(tables, ["m_A"]) == {"KV-MATH": {"m_A": {"mean": 1.0, "min": 0.0, "max": 2.0}}}


def test_a_single_run_is_placed_inside_or_outside_the_committed_range():
    committed = {"config_hash": "abc", "seeds": [0, 1, 2, 3, 4],
                 "range": {"KV-MATH": {"CALM": {"mean": 85.0, "min": 80.0, "max": 90.0}},
                           "NUM-MATH": {"CALM": {"mean": 95.0, "min": 94.0, "max": 96.0}}}}
    table = {"KV-MATH": {"CALM": 80.0, "m_A": 3.0}, "NUM-MATH": {"CALM": 93.5}}
    lines = against_range(table, committed, "CALM", "abc")
    assert lines[0].startswith("KV-MATH · CALM: 80.0") and lines[0].endswith("inside"), "the range includes its ends"
    assert lines[1].startswith("NUM-MATH · CALM: 93.5") and lines[1].endswith("OUTSIDE")
    assert lines[2] == "1 of 2 cells inside the committed 5-seed range; 1 OUTSIDE."
    assert "another configuration" in against_range(table, committed, "CALM", "xyz")[0]
    assert "No committed multi-seed range" in against_range(table, {"config_hash": "abc"}, "CALM", "abc")[0]
