"""`make mutation`: plant bugs in the modules that compute numbers and count how many their tests catch.

Each target below names the code to mutate and the tests that should catch a bug in it; this table
is the one place that maps a module to its tests. For each target the tracked and untracked files of
the working tree are copied to .mutation/<target>/src, cosmic-ray (https://cosmic-ray.readthedocs.io)
mutates that copy one mutant at a time, and the target's tests run against it: a failing run kills
the mutant, a passing one lets it survive. The working tree itself is never written to.

    python tests/mutation.py                          # every target, then a table of scores
    python tests/mutation.py bench/server/validation.py
    python tests/mutation.py leaderboard --list       # the targets, their code and their tests
    python tests/mutation.py probes/compute.py --sample 40   # 40 mutants drawn at random: an estimate
    python tests/mutation.py probes/timing.py --resume       # go on with an interrupted session

A module whose tests take a minute or more (compute, training, collective on a 2-core machine) takes
hours for every mutant; --sample tests a random draw of them and reports the killed share with its
95 % interval (Wilson), which is what a baseline needs. --resume goes on with the target's last
session instead of starting over, when the mutated code is byte for byte what that session mutated
(its fingerprint): the mutants it had not reached run, and its survivors run again against today's
tests; what it killed stays killed.

Operators left out (EXCLUDED_OPERATORS): replacements into or from bit operations (<<, >>, &, |, ^)
and decorator removal. On the floats these modules compute with, a bit operation raises TypeError
and decorators are dataclasses and caches, so those mutants are either killed by any test that runs
the line or equivalent (an lru_cache removed): they would add time and noise, not information.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import glob
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cosmic_ray.commands import init
from cosmic_ray.mutating import mutate_and_test
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / ".mutation"


@dataclass(frozen=True)
class Target:
    """Code to mutate and the pytest arguments that test it.

    `paths` are files or packages; `bench/projection` means bench/projection.py or the package
    bench/projection/, whichever exists. `functions` (qualified, "Class.method"), when given,
    limits the mutants to those definitions. `tests` are pytest arguments: test files (globs allowed;
    a pattern that matches nothing is left out, with a note) and options such as `-k`.
    """

    paths: tuple[str, ...]
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()


TARGETS: dict[str, Target] = {
    "probes/timing.py": Target(("probes/timing.py",), ("tests/test_timing.py", "tests/test_compute.py", "tests/test_memory.py")),
    "probes/compute.py": Target(("probes/compute.py",), ("tests/test_compute.py", "tests/test_compute_plan.py")),
    "probes/memory.py": Target(("probes/memory.py",), ("tests/test_memory.py",)),
    "probes/collective.py": Target(("probes/collective.py",), ("tests/test_collective.py",)),
    "probes/energy": Target(("probes/energy",), ("tests/test_nvml_meter.py", "tests/test_rapl.py", "tests/test_monitor.py")),
    "probes/training.py": Target(
        ("probes/training.py",),
        ("tests/test_training.py",),
        functions=(
            "GPTConfig",
            "max_params_config",
            "model_flops_per_token",
            "MemoryEstimate",
            "training_memory",
            "largest_fitting",
            "_largest_predicted",
        ),
    ),
    "bench/projection": Target(("bench/projection",), ("tests/test_projection*.py",)),
    "bench/units.py": Target(("bench/units.py",), ("tests/test_units.py", "tests/test_plots.py", "tests/test_projection*.py", "tests/test_report.py")),
    "bench/server/validation.py": Target(
        ("bench/server/validation.py",),
        ("tests/test_validation.py", "tests/test_server.py", "-k", "not postgresql and (validation or flagged or refused)"),
    ),
    # The leaderboard's statistics: the SQLite quantiles, the standing's share below, its percentile.
    # (On PostgreSQL the quantiles are SQL text, which no operator mutates.)
    "leaderboard": Target(
        ("bench/server/repository.py", "bench/server/service.py"),
        ("tests/test_leaderboard_stats.py", "tests/test_server.py", "-k", "not postgresql and (stats or leaderboard)"),
        functions=("quantile", "Repository._group_stats", "Repository.standing", "Service.standing"),
    ),
}

EXCLUDED_OPERATORS = re.compile(
    r"core/ReplaceBinaryOperator_(\w+_)?(BitOr|BitAnd|BitXor|LShift|RShift)(_\w+)?$|core/RemoveDecorator$"
)


def normalise(name: str) -> str:
    return name.rstrip("/").removesuffix(".py") if name != "leaderboard" else name


def find_target(name: str) -> tuple[str, Target]:
    wanted = normalise(name)
    for key, target in TARGETS.items():
        if normalise(key) == wanted:
            return key, target
    sys.exit(f"mutation: no target {name!r}; the targets are: {', '.join(TARGETS)}")


def module_files(root: Path, path: str) -> list[Path]:
    """The .py files of `path` under `root`: a file, a package, or a name that is either."""
    base = root / path.removesuffix(".py")
    if base.with_suffix(".py").is_file():
        return [base.with_suffix(".py")]
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    sys.exit(f"mutation: {path} is neither {path.removesuffix('.py')}.py nor a package")


def test_arguments(root: Path, tests: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(pytest arguments, notes): globs expanded in `root`, patterns that match nothing left out."""
    arguments, notes = [], []
    for item in tests:
        if not item.startswith("tests/"):
            arguments.append(item)
            continue
        found = sorted(glob.glob(item, root_dir=root))
        if not found:
            notes.append(f"{item}: no such test file here (yet)")
        arguments += found
    if not any(a.startswith("tests/") for a in arguments):
        sys.exit("mutation: none of this target's test files exists: " + "; ".join(notes))
    return arguments, notes


def copy_tree(destination: Path) -> None:
    """The working tree's tracked and untracked (not ignored) files: what a commit of it would hold."""
    if destination.exists():
        shutil.rmtree(destination)
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    for name in filter(None, listing.split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def definition_spans(module: Path, names: tuple[str, ...]) -> list[tuple[int, int]]:
    """Line spans (first, last) of the named top-level functions/classes and Class.method definitions."""
    spans = []
    for node in ast.parse(module.read_text()).body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        if node.name in names:
            spans.append((node.lineno, node.end_lineno))
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef) and f"{node.name}.{member.name}" in names:
                    spans.append((member.lineno, member.end_lineno))
    return spans


def skip_out_of_scope(db: WorkDB, target: Target, files: list[Path], sample: int | None) -> tuple[int, int]:
    """Mark as skipped the mutants this target does not cover, and those beyond a random sample.

    Returns (mutants in scope, mutants to run). cosmic-ray hands out pending work in random order.
    """
    spans = {str(f): definition_spans(f, target.functions) for f in files} if target.functions else {}
    in_scope = 0
    for item in db.pending_work_items:
        [mutation] = item.mutations
        line = mutation.start_pos[0]
        if EXCLUDED_OPERATORS.match(mutation.operator_name):
            why = "operator left out"
        elif target.functions and not any(a <= line <= b for a, b in spans[str(mutation.module_path)]):
            why = "outside the target's functions"
        else:
            in_scope += 1
            if sample is None or in_scope <= sample:
                continue
            why = "not in the sample"
        db.set_result(item.job_id, WorkResult(output=why, worker_outcome=WorkerOutcome.SKIPPED))
    return in_scope, min(in_scope, sample) if sample is not None else in_scope


def fingerprint(src: Path, files: list[Path]) -> str:
    """sha256 over the mutated files' paths and contents: whether a session's mutants still apply."""
    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def reopen(session: Path) -> None:
    """For --resume: forget the survivors' results, so that they run again against today's tests.
    (cosmic-ray's WorkDB can clear every result but not some; its table is plain SQLite.)"""
    with contextlib.closing(sqlite3.connect(session)) as con, con:
        con.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")


def scope_of(db: WorkDB) -> tuple[int, int]:
    """(mutants in scope, mutants pending) of a session: all but those left out by operator or function."""
    left_out = sum(1 for _, r in db.completed_work_items
                   if r.worker_outcome == WorkerOutcome.SKIPPED and r.output != "not in the sample")
    pending = len(db.pending_work_items)
    return db.num_work_items - left_out, pending


def check_imports_copy(src: Path) -> None:
    """Abort unless python started in the copy imports bench and probes from it (else no mutant is seen)."""
    found = subprocess.run(
        [sys.executable, "-c", "import bench, probes; print(bench.__file__); print(probes.__file__)"],
        cwd=src, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not all(Path(f).resolve().is_relative_to(src.resolve()) for f in found):
        sys.exit(f"mutation: python in {src} imports {found}, not the copy")


def run_target(name: str, target: Target, sample: int | None = None, resume: bool = False) -> dict:
    work = OUTPUT / re.sub(r"\W+", "_", normalise(name)).strip("_")
    src = work / "src"
    copy_tree(src)
    files = [f for path in target.paths for f in module_files(src, path)]
    code = fingerprint(src, files)
    if resume and not ((work / "session.sqlite").exists() and (work / "fingerprint").exists()):
        sys.exit(f"mutation: no session of {name} to resume in {work}; run it without --resume")
    if resume and (work / "fingerprint").read_text().strip() != code:
        sys.exit(f"mutation: {name}'s code changed since its last session; run it without --resume")
    arguments, notes = test_arguments(src, target.tests)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *arguments]
    os.chdir(src)
    os.environ["PYTHONPATH"] = str(src)  # subprocesses the tests start (flopwatt, python -m bench) see the mutant too
    check_imports_copy(src)
    for note in notes:
        print(f"  note: {note}")

    print(f"{name}: baseline {shlex.join(command[1:])}", flush=True)
    started = time.monotonic()
    baseline = subprocess.run(command, capture_output=True, text=True)
    baseline_s = time.monotonic() - started
    if baseline.returncode != 0:
        sys.exit(f"mutation: the tests fail before any mutation:\n{baseline.stdout[-3000:]}{baseline.stderr[-2000:]}")
    timeout = max(30.0, 4 * baseline_s)

    relative = [f.relative_to(src) for f in files]
    if resume:
        reopen(work / "session.sqlite")
    with use_db(str(work / "session.sqlite")) as db:
        if resume:
            in_scope, pending = scope_of(db)
        else:
            init(relative, db, {})
            (work / "fingerprint").write_text(code + "\n")
            in_scope, pending = skip_out_of_scope(db, target, relative, sample)
        drawn = f" ({pending} drawn at random)" if pending < in_scope else ""
        print(f"  {in_scope} mutants{drawn}, tests take {baseline_s:.1f} s unmutated (timeout {timeout:.0f} s)",
              flush=True)  # fmt: skip
        for done, item in enumerate(db.pending_work_items, 1):
            result = mutate_and_test(item.mutations, shlex.join(command), timeout)
            db.set_result(item.job_id, result)
            [mutation] = item.mutations
            print(f"  {done}/{pending} {outcome(result):9} {mutation.module_path}:{mutation.start_pos[0]} "
                  f"{mutation.operator_name}", flush=True)  # fmt: skip
        summary = summarise(name, db, work, in_scope)
    os.chdir(REPO)
    return summary


def outcome(result: WorkResult) -> str:
    if result.worker_outcome == WorkerOutcome.SKIPPED:
        return "skipped"
    if result.worker_outcome == WorkerOutcome.NO_TEST:
        return "no-test"
    if result.test_outcome == TestOutcome.INCOMPETENT:
        return "error"
    return "survived" if result.test_outcome == TestOutcome.SURVIVED else "killed"


def wilson_interval(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of a share from n draws (Wilson score interval: sound at 0 %, 100 % and small n)."""
    share = killed / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(name: str, db: WorkDB, work: Path, in_scope: int) -> dict:
    """Counts, and the surviving mutants with their diffs written to survivors.txt."""
    counts = {"killed": 0, "survived": 0, "error": 0, "no-test": 0, "skipped": 0}
    survivors = []
    for item, result in db.completed_work_items:
        kind = outcome(result)
        counts[kind] += 1
        if kind == "survived":
            [mutation] = item.mutations
            survivors.append((str(mutation.module_path), mutation.start_pos[0], mutation.operator_name, result.diff))
        if kind == "error":
            print(f"  error while mutating: {(result.output or '')[-500:]}")
    survivors.sort()
    total = counts["killed"] + counts["survived"]
    summary = {"target": name, "killed": counts["killed"], "survived": counts["survived"], "total": total,
               "in_scope": in_scope, "score": counts["killed"] / total if total else None,
               "interval": wilson_interval(counts["killed"], total) if 0 < total < in_scope else None,
               "errors": counts["error"]}  # fmt: skip
    lines = []
    for path, line, operator, diff in survivors:
        changed = [d for d in (diff or "").splitlines() if d[:1] in "+-" and d[:3] not in ("+++", "---")]
        lines.append(f"{path}:{line} {operator}\n" + "".join(f"    {d}\n" for d in changed))
    (work / "survivors.txt").write_text("".join(lines))
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{name}: {summary['killed']} killed, {summary['survived']} survived, {total} tested of {in_scope}"
          + (f" ({summary['score']:.1%} killed)" if total else ""))  # fmt: skip
    if summary["interval"]:
        low, high = summary["interval"]
        print(f"a random sample: the whole module's killed share is {low:.0%} to {high:.0%} (95 %)")
    if survivors:
        print(f"surviving mutants ({work / 'survivors.txt'}):")
        print("".join(lines), end="")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"targets to run (default: all): {', '.join(TARGETS)}")
    parser.add_argument("--list", action="store_true", help="print the targets with their code and tests, run nothing")
    parser.add_argument("--sample", type=int, metavar="N", help="test N mutants drawn at random per target")
    parser.add_argument("--resume", action="store_true",
                        help="go on with each target's last session: its untested mutants and its survivors")
    args = parser.parse_args()
    chosen = [find_target(t) for t in args.targets] or list(TARGETS.items())
    if args.list:
        for name, target in chosen:
            scope = f" (only {', '.join(target.functions)})" if target.functions else ""
            print(f"{name}: mutates {' '.join(target.paths)}{scope}; tests: {' '.join(target.tests)}")
        return
    if args.resume and args.sample is not None:
        parser.error("--resume goes on with a session's own sample; leave out --sample")
    summaries = [run_target(name, target, args.sample, args.resume) for name, target in chosen]
    if len(summaries) > 1:
        print(f"\n{'target':32} {'killed':>7} {'survived':>9} {'tested':>7} {'of':>6} {'score':>7}")
        for s in summaries:
            score = f"{s['score']:.1%}" if s["total"] else "-"
            print(f"{s['target']:32} {s['killed']:>7} {s['survived']:>9} {s['total']:>7} {s['in_scope']:>6} {score:>7}")


if __name__ == "__main__":
    main()
