"""Metrics: exact match on strings; chrF and chrF++ are sacrebleu's own numbers; pass@1 runs each
program with its tests in a separate process, counts right and wrong programs, and kills
programs that loop or allocate too much without harming the test process."""

import resource
import time

import pytest
from sacrebleu.metrics import CHRF

from calm_mini.evaluation import chrf, chrf_plus_plus, exact_match_score, pass_at_1, run_program

PREDICTIONS = ["The cat sat on the mat.", "A quick brown fox jumps", "nothing like it"]
REFERENCES = ["The cat is sitting on the mat.", "The quick brown fox jumps over the dog", "completely different"]


def test_exact_match_compares_stripped_strings():
    assert exact_match_score([" Tavrik", "Gifu\n", "Oslo"], ["Tavrik", "Gifu", "Bergen"]) == pytest.approx(2 / 3)
    assert exact_match_score([" Tavrik"], ["Tavrik"], strip=False) == 0.0
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        exact_match_score(["a", "b"], ["a"])


def test_chrf_and_chrf_plus_plus_are_sacrebleus_own():
    assert chrf(PREDICTIONS, REFERENCES) == CHRF().corpus_score(PREDICTIONS, [REFERENCES]).score
    assert chrf_plus_plus(PREDICTIONS, REFERENCES) == CHRF(word_order=2).corpus_score(PREDICTIONS, [REFERENCES]).score
    assert chrf_plus_plus(PREDICTIONS, REFERENCES) != chrf(PREDICTIONS, REFERENCES)
    assert chrf(REFERENCES, REFERENCES) == pytest.approx(100.0)


def test_pass_at_1_counts_a_right_and_a_wrong_program():
    programs = ["def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b"]
    tests = ["assert add(2, 3) == 5\nassert add(-1, 1) == 0"] * 2
    assert pass_at_1(programs, tests, timeout=20) == 0.5
    wrong = run_program(programs[1], tests[1], timeout=20)
    assert (wrong.passed, wrong.status, wrong.returncode) == (False, "failed", 1)
    assert "AssertionError" in wrong.output


def test_programs_run_elsewhere_with_a_bare_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:1")
    monkeypatch.setenv("CALM_SECRET", "do-not-leak")
    probe = ("import os, sys\nassert 'HTTPS_PROXY' not in os.environ and 'CALM_SECRET' not in os.environ\n"
             f"assert os.getcwd() != {str(tmp_path)!r}\nopen('left.txt', 'w').write('x')\nassert sys.flags.isolated")
    monkeypatch.chdir(tmp_path)
    result = run_program(probe, timeout=20)
    assert result.passed, result.output
    assert not (tmp_path / "left.txt").exists(), "the program writes in its own temporary folder"


def test_an_endless_loop_is_killed_at_the_time_limit():
    start = time.monotonic()
    result = run_program("while True:\n    pass", "", timeout=1.0)
    assert (result.passed, result.status, result.returncode) == (False, "timeout", None)
    assert time.monotonic() - start < 10, "killed at the limit, not left running"


def test_a_huge_list_fails_by_the_memory_limit_and_the_test_process_is_unharmed():
    before = resource.getrlimit(resource.RLIMIT_AS)
    huge = "data = [0] * (80 * 2**20)  # 640 MB of pointers\nprint(len(data))"
    result = run_program(huge, timeout=30, memory_mb=256)
    assert (result.passed, result.status) == (False, "memory"), result.output
    assert "MemoryError" in result.output
    assert resource.getrlimit(resource.RLIMIT_AS) == before, "the limit applied to the child only"
    assert len([0] * (80 * 2**20)) == 80 * 2**20, "this process can still allocate it"
