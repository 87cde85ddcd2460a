"""How long `inhouse quickstart` takes after install: the whole command and its training part.

    python bench/quickstart_time.py                 # three runs, each in a fresh INHOUSE_HOME
    python bench/quickstart_time.py --cores 0,1     # pinned to two cores (taskset), as on a laptop

The promise (README): training at most a minute and the whole command at most two, on two quiet
cores. The training time is the one the quickstart itself reports (`train_seconds` in the lineage);
the whole time is the command's wall clock, model set-up, data check and answers included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path


def run_once(cores: str | None) -> dict:
    with tempfile.TemporaryDirectory() as home:
        prefix = ["taskset", "-c", cores] if cores else []
        clock = time.perf_counter()
        proc = subprocess.run([*prefix, sys.executable, "-m", "inhouse", "quickstart"], capture_output=True, text=True,
                              env={**os.environ, "INHOUSE_HOME": home})
        wall = time.perf_counter() - clock
        if proc.returncode != 0:
            raise SystemExit(f"quickstart failed:\n{proc.stderr[-2000:]}")
        lineage = json.loads(next(Path(home, "adapters").glob("*/inhouse.json")).read_text())
        metrics = lineage["metrics"]
        return {"wall_s": round(wall, 1), "train_s": round(metrics["train_seconds"], 1),
                "validation_loss_before": round(metrics["validation_loss_before"], 4),
                "validation_loss": round(metrics["validation_loss"], 4), "published_step": metrics.get("published_step"),
                "steps": metrics.get("steps")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cores", help="taskset CPU list, e.g. 0,1")
    parser.add_argument("--out", type=Path, default=Path("bench/results/quickstart_time.json"))
    opts = parser.parse_args()
    if opts.cores and not shutil.which("taskset"):
        raise SystemExit("--cores needs taskset (util-linux)")
    runs = [run_once(opts.cores) for _ in range(opts.runs)]
    print(f"{'run':>4} {'whole s':>8} {'training s':>11} {'val loss':>17} {'published':>10}")
    for n, r in enumerate(runs, 1):
        print(f"{n:>4} {r['wall_s']:>8.1f} {r['train_s']:>11.1f} {r['validation_loss_before']:>8.4f}->{r['validation_loss']:<8.4f}"
              f" {r['published_step']!s:>4}/{r['steps']}")
    summary = {"median_wall_s": statistics.median(r["wall_s"] for r in runs),
               "median_train_s": statistics.median(r["train_s"] for r in runs)}
    print(f"median: whole {summary['median_wall_s']:.1f} s, training {summary['median_train_s']:.1f} s")
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "cores": opts.cores or "all", "python": platform.python_version(), "runs": runs, **summary}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
