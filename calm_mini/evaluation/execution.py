"""pass@1 for code: **this executes model output.** Each generated program runs, together with
its tests, as a separate Python process; it passes when that process exits with status 0.

With greedy decoding there is one program per problem, so pass@1 is the fraction that pass
(the paper's HumanEval and MBPP numbers are pass@1).

What is isolated, and what is not. Each program runs in a *separate process*
(``sys.executable -I``: no user site-packages, ``PYTHON*`` variables ignored, the script's
folder not on ``sys.path``), never with ``exec`` in the kit's process, so a crash, a hang or a
``MemoryError`` cannot harm the caller. The process starts

* in a fresh temporary working directory, deleted afterwards, with ``HOME`` and ``TMPDIR`` there;
* with a minimal environment: ``PATH`` and ``LANG`` only — no proxy settings, tokens or other
  credentials from the caller's environment;
* with resource limits set before it starts (``resource.setrlimit`` in ``preexec_fn``):
  address space (``memory_mb``), CPU seconds, size of any file it writes, no core dumps;
* in its own session: after ``timeout`` seconds of wall-clock time its whole process group
  is killed;
* with standard input from /dev/null and its output written to a file (so endless printing cannot
  fill the caller's memory).

It is **not a security sandbox**: the program runs as you, can read and write every file you
can (by absolute path), can open network connections (only the proxy variables are gone; there
is no network namespace or firewall), and a child that starts its own session escapes the
group kill. Score untrusted models' code in a disposable container or VM. POSIX only (Linux;
macOS does not enforce the address-space limit).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

OUTPUT_KEPT = 2000  # characters of a program's output kept in its Execution
FILE_LIMIT = 16 * 2**20  # bytes any one file the program writes may reach (its output included)


@dataclass(frozen=True)
class Execution:
    """How one program ran. status: ``"passed"``, ``"failed"`` (an exception, a failed assert,
    a non-zero exit), ``"timeout"`` (killed after the wall-clock limit) or ``"memory"`` (a
    ``MemoryError`` under the memory limit). output: the end of its stdout and stderr."""

    passed: bool
    status: str
    returncode: int | None
    seconds: float
    output: str


def run_program(program: str, tests: str = "", timeout: float = 10.0, memory_mb: int = 1024) -> Execution:
    """Run ``program`` followed by ``tests`` (Python source, e.g. ``assert`` lines) in a separate
    process, as the module docstring describes.

    Args:
        timeout: wall-clock seconds before the process group is killed.
        memory_mb: the limit of the process's address space (the interpreter itself needs about 50 MB).
    """
    import resource  # POSIX only; imported here so that the rest of the kit imports on Windows

    source = f"{program}\n\n{tests}\n"
    cpu = max(1, int(timeout) + 1)
    # (limit, soft, hard): past the soft CPU limit the process gets SIGXCPU, past the hard one SIGKILL
    limits = [(resource.RLIMIT_AS, memory_mb * 2**20, memory_mb * 2**20), (resource.RLIMIT_CPU, cpu, cpu + 1),
              (resource.RLIMIT_FSIZE, FILE_LIMIT, FILE_LIMIT), (resource.RLIMIT_CORE, 0, 0)]

    def set_limits():  # runs in the child, between fork and exec; never above the limits it inherits
        for kind, soft, hard in limits:
            _, inherited = resource.getrlimit(kind)
            if inherited != resource.RLIM_INFINITY:
                soft, hard = min(soft, inherited), min(hard, inherited)
            resource.setrlimit(kind, (soft, hard))

    with tempfile.TemporaryDirectory(prefix="calm-pass1-") as folder:
        script, log = Path(folder) / "program.py", Path(folder) / "output.txt"
        script.write_text(source, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "HOME": folder, "TMPDIR": folder}
        start = time.monotonic()
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-I", script.name], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT, preexec_fn=set_limits,
                                       start_new_session=True, close_fds=True)
            try:
                returncode, timed_out = process.wait(timeout=timeout), False
            except subprocess.TimeoutExpired:
                returncode, timed_out = None, True
            finally:
                _kill_group(process)
        seconds = time.monotonic() - start
        output = log.read_bytes()[-4 * OUTPUT_KEPT:].decode("utf-8", errors="replace")[-OUTPUT_KEPT:]
    if timed_out:
        status = "timeout"
    elif returncode == 0:
        status = "passed"
    elif "MemoryError" in output:
        status = "memory"
    else:
        status = "failed"
    return Execution(status == "passed", status, returncode, seconds, output)


def execute(programs: Sequence[str], tests: Sequence[str], timeout: float = 10.0, memory_mb: int = 1024,
            workers: int = 1) -> list[Execution]:
    """:func:`run_program` for each (program, tests) pair, ``workers`` processes at a time."""
    if len(programs) != len(tests):
        raise ValueError(f"{len(programs)} programs for {len(tests)} tests: give one each.")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda pair: run_program(*pair, timeout=timeout, memory_mb=memory_mb), zip(programs, tests)))


def pass_at_1(programs: Sequence[str], tests: Sequence[str], timeout: float = 10.0, memory_mb: int = 1024,
              workers: int = 1) -> float:
    """Fraction of ``programs`` that pass their ``tests``. **Executes the programs** — see the
    module docstring for what is and is not isolated."""
    if not programs:
        raise ValueError("No programs to run: the dataset is empty.")
    results = execute(programs, tests, timeout, memory_mb, workers)
    return sum(r.passed for r in results) / len(results)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the program and anything it started in its session, and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
