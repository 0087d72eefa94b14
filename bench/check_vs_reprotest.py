"""``hermetic check`` side by side with ``reprotest --auto-build``: a trivial build, GNU
hello, and the corpus of upstream sources in ``bench/corpus.toml``.

Both tools vary the same things (reprotest's set minus ``user_group``, which needs sudo
and a second account, and ``exec_path``, which hermetic has no equivalent for; reprotest's
``domain_host`` is hermetic's ``hostname``) and both name their culprits. Each source is
checked by both, one right after the other, the order alternating from one source (and
pair) to the next. ``hermetic check`` is timed as a user runs it: a fresh command as the
build user, with the defaults a user gets (tracing, jobs, the shared podman service the
user's earlier commands left running); only ``--vary``, ``--report`` and ``--json`` are
given. The trivial build is the fixed cost of a check (image start, tracing, comparison).

reprotest's ``fileordering`` mounts disorderfs through /dev/fuse and ``domain_host``
unshares the UTS namespace, so reprotest runs as root; hermetic runs rootless as
``--user`` (the set-up's build user), as it always does. The corpus is fetched into that
user's input store (``bench/corpus.py``) and verified before anything is timed.

Usage: python -m bench.check_vs_reprotest [--pairs 1] [--trivial-pairs 10] [--only NAME,...]
       [--no-corpus] [--tarball PATH] [--user hermetic] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import HELLO_BUILD, REPO, find_tarball, write_hello_spec
from bench.corpus import load_corpus
from sandbox.digests import sha256_file

# The variations both tools run; hermetic names reprotest's domain_host "hostname".
REPROTEST_VARY = "-user_group,-exec_path"
HERMETIC_VARY = "-user_group"
TRIVIAL_BUILD = "echo hello > out.txt"
TARGETS = {"trivial": 1.0, "hello": 0.25, "corpus median": 0.30}


@dataclass(frozen=True)
class Run:
    """One tool's check: wall time, verdict and culprits as the tool reported them."""

    seconds: float
    reproducible: bool
    culprits: tuple[str, ...]
    builds: int
    failed: str = ""  # why the tool could not check (no verdict, no ratio)


@dataclass(frozen=True)
class Case:
    """One thing both tools check: hermetic's spec, reprotest's source, build, artifact."""

    name: str
    spec_dir: Path
    source: Path
    build: str
    artifact: str
    corpus: bool


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    """argv run as the unprivileged user with a clean environment (root only)."""
    if user is None:
        return argv
    entry = pwd.getpwnam(user)
    venv_bin = str(Path(sys.executable).parent)
    env = [
        f"HOME={entry.pw_dir}",
        f"USER={user}",
        f"LOGNAME={user}",
        "LANG=C.UTF-8",
        f"PATH={venv_bin}:/usr/local/bin:/usr/bin:/bin",
    ]
    return ["runuser", "-u", user, "--", "env", "-i", *env, *argv]


def run_hermetic(case: Case, scratch: Path, user: str | None) -> Run:
    report = Path(tempfile.mkdtemp(dir=scratch, prefix="check-")) / "report"
    if user is not None:
        shutil.chown(report.parent, user)
    argv = ["hermetic", "check", str(case.spec_dir), f"--vary={HERMETIC_VARY}"]
    argv += ["--report", str(report), "--json"]
    started = time.monotonic()
    done = subprocess.run(
        _as_user(user, argv), capture_output=True, text=True, cwd=scratch, timeout=7200
    )
    elapsed = time.monotonic() - started
    if done.returncode not in (0, 1):
        why = f"exit {done.returncode}: {done.stderr.strip()[-500:]}"
        return Run(elapsed, False, (), 0, failed=why)
    result = json.loads(done.stdout)
    shutil.rmtree(report.parent, ignore_errors=True)
    return Run(elapsed, result["reproducible"], tuple(result["culprits"]), len(result["builds"]))


def run_reprotest(case: Case, scratch: Path) -> Run:
    argv = ["reprotest", "--verbosity=1", "--auto-build", f"--vary={REPROTEST_VARY}"]
    argv += ["-c", case.build, str(case.source), case.artifact, "--", "null"]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=scratch, timeout=14400)
    elapsed = time.monotonic() - started
    if done.returncode not in (0, 1):
        tail = " / ".join(line for line in done.stderr.splitlines()[-40:] if "rror" in line)
        return Run(elapsed, False, (), 0, failed=f"exit {done.returncode}: {tail[-500:]}")
    builds = len(re.findall(r'^INFO:reprotest.*build "', done.stderr, re.MULTILINE))
    return Run(elapsed, done.returncode == 0, _reprotest_culprits(done.stdout), builds)


def _reprotest_culprits(stdout: str) -> tuple[str, ...]:
    """The names reprotest lists after "unreproducibility when varying each of"."""
    if "even when fixing as much as reprotest knows how to" in stdout:
        return ("inherent",)
    match = re.search(r"varying each of the following:\n((?:\S+[ \t]*)*)\n", stdout)
    return tuple(match.group(1).split()) if match else ()


def _write_trivial(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hermetic.toml").write_text(f"""
[build]
image = "debian-bookworm"
command = ["sh", "-c", "{TRIVIAL_BUILD}"]
outputs = ["out.txt"]
""")
    return directory


def _stored_corpus(user: str | None) -> dict[str, Path]:
    """The corpus in the user's input store (fetched as that user, digests verified)."""
    done = subprocess.run(
        _as_user(user, [sys.executable, "-m", "bench.corpus"]),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1800,
    )
    if done.returncode != 0:
        sys.exit(f"fetching the corpus failed:\n{done.stderr[-3000:]}")
    return {name: Path(path) for name, path in json.loads(done.stdout).items()}


def _cases(args: argparse.Namespace, scratch: Path) -> list[Case]:
    wanted = set(args.only.split(",")) if args.only else None
    cases = [
        Case(
            "trivial",
            _write_trivial(scratch / "trivial"),
            scratch / "trivial",
            TRIVIAL_BUILD,
            "out.txt",
            corpus=False,
        ),
    ]
    tarball = Path(shutil.copy(find_tarball(args.tarball), scratch / "hello-2.10.tar.gz"))
    hello_source = scratch / "reprotest-hello"  # the tarball, as hermetic's input
    hello_source.mkdir()
    shutil.copy(tarball, hello_source / tarball.name)
    tarball.chmod(0o644)
    cases.append(
        Case(
            "hello",
            write_hello_spec(scratch / "hello", tarball),
            hello_source,
            HELLO_BUILD,
            "hello-2.10/hello",
            corpus=False,
        )
    )
    corpus = [s for s in load_corpus() if wanted is None or s.name in wanted]
    stored = _stored_corpus(args.user) if corpus and not args.no_corpus else {}
    for source in corpus if not args.no_corpus else []:
        spec_dir = scratch / "specs" / source.name
        spec_dir.mkdir(parents=True)
        (spec_dir / "hermetic.toml").write_text(source.spec())
        copy = scratch / "sources" / source.name / source.file
        copy.parent.mkdir(parents=True)
        shutil.copy(stored[source.name], copy)
        if sha256_file(copy)[0] != source.sha256:  # the store's copy, as reprotest gets it
            sys.exit(f"{copy}: not the pinned sha256 {source.sha256}")
        cases.append(
            Case(source.name, spec_dir, copy.parent, source.command, source.output, corpus=True)
        )
    for path in scratch.rglob("*"):  # the build user reads the specs and the sources
        path.chmod(0o755 if path.is_dir() else 0o644)
    return [case for case in cases if wanted is None or case.name in wanted]


def _verdict(run: Run) -> str:
    if run.failed:
        return f"FAILED ({run.failed})"
    if run.reproducible:
        return "reproducible"
    return "NOT reproducible (" + (", ".join(run.culprits) or "-") + ")"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description="hermetic check vs reprotest --auto-build")
    parser.add_argument("--pairs", type=int, default=1, help="pairs per source")
    parser.add_argument(
        "--trivial-pairs", type=int, default=10, help="pairs of the trivial build (seconds each)"
    )
    parser.add_argument("--only", help="comma-separated case names (trivial, hello, corpus)")
    parser.add_argument("--no-corpus", action="store_true", help="trivial and hello only")
    parser.add_argument("--tarball", help="hello-2.10.tar.gz")
    parser.add_argument("--user", default=os.environ.get("HERMETIC_USER", "hermetic"))
    parser.add_argument("--json-out", help="write every run here as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: reprotest needs /dev/fuse (fileordering) and a UTS namespace")
    if shutil.which("reprotest") is None:
        sys.exit("reprotest is not installed: apt-get install reprotest disorderfs faketime")
    scratch = Path(tempfile.mkdtemp(prefix="hermetic-bench-"))
    scratch.chmod(0o755)
    os.chdir(REPO)
    records: list[dict[str, object]] = []
    ratios: dict[str, list[float]] = {}
    print(f"hermetic check vs reprotest --auto-build; at the start: {_load()}", flush=True)
    try:
        cases = _cases(args, scratch)
        turn = 0
        for case in cases:
            for pair in range(args.trivial_pairs if case.name == "trivial" else args.pairs):
                order = ["hermetic", "reprotest"] if turn % 2 == 0 else ["reprotest", "hermetic"]
                turn += 1
                runs: dict[str, Run] = {}
                for tool in order:
                    runs[tool] = (
                        run_hermetic(case, scratch, args.user)
                        if tool == "hermetic"
                        else run_reprotest(case, scratch)
                    )
                ours, theirs = runs["hermetic"], runs["reprotest"]
                ratio = ours.seconds / theirs.seconds
                if not ours.failed and not theirs.failed:  # a ratio of two verdicts only
                    ratios.setdefault(case.name, []).append(ratio)
                agree = "" if ours.reproducible == theirs.reproducible else "  VERDICTS DIFFER"
                print(
                    f"{case.name:<10} pair {pair + 1} ({order[0]} first): hermetic "
                    f"{ours.seconds:7.1f}s {ours.builds:2d} builds {_verdict(ours)} | "
                    f"reprotest {theirs.seconds:7.1f}s {theirs.builds:2d} builds "
                    f"{_verdict(theirs)} | ratio {ratio:.3f}{agree}",
                    flush=True,
                )
                records.append(
                    {
                        "case": case.name,
                        "pair": pair + 1,
                        "first": order[0],
                        "hermetic": asdict(ours),
                        "reprotest": asdict(theirs),
                        "ratio": ratio,
                    }
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"at the end: {_load()}")
    summary = {name: statistics.median(values) for name, values in ratios.items()}
    corpus = [summary[c.name] for c in cases if c.corpus and c.name in summary]
    failed = [c.name for c in cases if c.name not in summary]
    if failed:
        print(f"no ratio (a tool could not check): {', '.join(failed)}")
    for name in ("trivial", "hello"):
        if name in summary:
            print(
                f"{name}: ratio hermetic/reprotest {summary[name]:.3f} "
                f"(median of {len(ratios[name])}; target <= {TARGETS[name]})"
            )
    if corpus:
        median = statistics.median(corpus)
        print(
            f"corpus: median ratio hermetic/reprotest {median:.3f} over {len(corpus)} "
            f"sources (target <= {TARGETS['corpus median']}); per source: "
            + ", ".join(f"{c.name} {summary[c.name]:.2f}" for c in cases if c.corpus)
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"runs": records, "ratios": summary}, indent=2))


if __name__ == "__main__":
    main()
