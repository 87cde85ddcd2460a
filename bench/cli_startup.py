"""How long each `inhouse` command takes before it does its work, and which heavy libraries it imports.

    python bench/cli_startup.py                                     # this checkout
    git worktree add /tmp/before 0a0fe44 && python bench/cli_startup.py --before /tmp/before/src

Runs every command `--repeat` times in a fresh interpreter (`python -m inhouse ...`, the way the
console script starts) and reports the median wall time, plus whether torch, transformers or
lancedb were imported (from `-X importtime`). `--before` puts an older checkout's `src/` first on
the path and measures it in the same run, alternating with this checkout, so the two columns
share the machine's state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HEAVY = ("torch", "transformers", "lancedb")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def commands(data: Path) -> list[list[str]]:
    """Help screens, plus the work commands that should start without deep-learning libraries."""
    helps = [[], ["data", "check"], ["data", "prepare"], ["train"], ["eval"], ["serve"], ["rag", "search"],
             ["ask"], ["merge"], ["jobs", "list"]]
    return [[*c, "--help"] for c in helps] + [["data", "check", str(data)], ["data", "scan", str(data)],
                                            ["adapters"], ["jobs", "list"]]


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, set[str], int]:
    """Wall seconds, heavy modules imported, exit code."""
    clock = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "inhouse", *args], capture_output=True,
                          text=True, env=env)
    seconds = time.perf_counter() - clock
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return seconds, {name for name in HEAVY if name in imported}, proc.returncode


def measure(args: list[str], envs: dict[str, dict[str, str]], repeat: int) -> dict:
    """Each variant in turn, `repeat` rounds, so load on the machine falls on all of them alike."""
    runs: dict[str, list] = {label: [] for label in envs}
    for _ in range(repeat):
        for label, env in envs.items():
            runs[label].append(run_once(args, env))
    row: dict = {"command": "inhouse " + " ".join(Path(a).name if "/" in a else a for a in args)}
    for label, got in runs.items():
        row[label] = {"median_s": round(statistics.median(r[0] for r in got), 3),
                      "heavy_imports": sorted(set().union(*(r[1] for r in got))),
                      "exit_codes": sorted({r[2] for r in got})}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="An older checkout's src/ to measure alongside this one.")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cli_startup.json"))
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        base = {**os.environ, "INHOUSE_HOME": home}
        envs = {"now": base}
        if opts.before:
            envs = {"before": {**base, "PYTHONPATH": str(opts.before.resolve())}, "now": base}
        rows = [measure(args, envs, opts.repeat) for args in commands(EXAMPLES / "support.jsonl")]
    print_table(rows, list(envs))
    result = {"date": date.today().isoformat(), "python": platform.python_version(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "repeat": opts.repeat,
              "before": str(opts.before) if opts.before else None, "rows": rows}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=2) + "\n")


def print_table(rows: list[dict], labels: list[str]) -> None:
    print(f"{'command':<34}" + "".join(f" {label + ' s':>9}  {'heavy imports (' + label + ')':<32}" for label in labels))
    for row in rows:
        cells = "".join(f" {row[l]['median_s']:>9.3f}  {', '.join(row[l]['heavy_imports']) or '-':<32}" for l in labels)
        print(f"{row['command']:<34}{cells}")


if __name__ == "__main__":
    main()
