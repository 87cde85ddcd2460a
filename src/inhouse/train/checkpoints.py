"""Which checkpoint of a run can be resumed: the newest complete one.

The Trainer writes a checkpoint file by file into `checkpoint-N/`: the weights (and the tokenizer),
then optimizer.pt, scheduler.pt, rng_state.pth, and trainer_state.json last; only then does it remove
older checkpoints. A process killed part-way leaves a folder that `get_last_checkpoint` still picks
(it goes by the number alone) and that resume then fails on. So a checkpoint counts only when every
file resume reads is there and opens; resume takes the newest such one explicitly
(`resume_from_checkpoint=<path>`), and incomplete ones are removed, each with a warning.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

from inhouse.events import Events

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
RNG = re.compile(r"^rng_state_(\d+)\.pth$")
STATE = "trainer_state.json"
# What resume reads besides the weights: without optimizer or scheduler the Trainer silently restarts
# them, without rng_state it warns and draws different dropout masks; both change the result.
REQUIRED = (STATE, "optimizer.pt", "scheduler.pt")
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
           "pytorch_model.bin", "pytorch_model.bin.index.json")


def all_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders, newest (highest step) first."""
    found = [p for p in run_dir.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)] if run_dir.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)), reverse=True)


def problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (what is missing, else the first unreadable file), or None
    when it can."""
    missing = [name for name in REQUIRED if not (folder / name).is_file()] + rng_missing(folder)
    missing += weights_missing(folder) + shards_missing(folder)
    if missing:
        return "no " + ", no ".join(missing)
    return next((f"{p.name} is unreadable ({why})" for p in sorted(folder.iterdir()) if (why := unreadable(p))), None)


def rng_missing(folder: Path) -> list[str]:
    """The random state of each rank. One process writes rng_state.pth; N processes write
    rng_state_0..N-1.pth, each rank its own, while rank 0 writes trainer_state.json without waiting for
    the others, so a kill can leave a rank's file missing, and that rank would silently resume with other
    dropout masks. Numbered files mean at least two ranks, and must run from 0 without a gap."""
    ranks = sorted(int(m.group(1)) for p in folder.glob("rng_state_*.pth") if (m := RNG.match(p.name)))
    if not ranks:
        return [] if (folder / "rng_state.pth").is_file() else ["rng_state.pth"]
    return [f"rng_state_{r}.pth" for r in range(max(2, ranks[-1] + 1)) if r not in ranks]


def weights_missing(folder: Path) -> list[str]:
    """No weights at all, or an adapter's weights without the adapter_config.json that loading them needs."""
    if not any((folder / name).is_file() for name in WEIGHTS):
        return ["model weights (adapter_model.safetensors or model.safetensors)"]
    adapter = (folder / "adapter_model.safetensors").is_file() or (folder / "adapter_model.bin").is_file()
    return ["adapter_config.json"] if adapter and not (folder / "adapter_config.json").is_file() else []


def shards_missing(folder: Path) -> list[str]:
    """The shards a sharded model's index names that are not (yet) there."""
    names: set[str] = set()
    for index in folder.glob("*.index.json"):
        try:
            names |= set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # reported as unreadable
    return sorted(n for n in names if not (folder / n).is_file())


def unreadable(path: Path) -> str | None:
    """Whether a file written by the Trainer opens. A truncated file fails here cheaply: JSON does not
    parse, a safetensors header points past the end, a torch zip has lost its central directory (at
    the end). Other files (README.md, the chat template) are not read by resume."""
    from safetensors import SafetensorError, safe_open

    try:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as handle:
                handle.keys()
        elif path.suffix in (".pt", ".pth", ".bin"):
            zipfile.ZipFile(path).close()
    except (OSError, ValueError, zipfile.BadZipFile, SafetensorError) as exc:
        return type(exc).__name__
    return None


def last_complete(run_dir: Path) -> Path | None:
    """The newest checkpoint that resume can use; nothing is changed."""
    return next((p for p in all_checkpoints(run_dir) if problem(p) is None), None)


def settle(run_dir: Path, events: Events) -> Path | None:
    """Remove the run's incomplete checkpoints (a warning each) and return the newest complete one,
    announced: the checkpoint to pass to `Trainer.train(resume_from_checkpoint=...)`."""
    for folder in all_checkpoints(run_dir):
        why = problem(folder)
        if why is not None:
            events.log("warning", message=f"{folder.name} is incomplete ({why}: its save was interrupted); removed")
            shutil.rmtree(folder)
    chosen = last_complete(run_dir)
    if chosen is not None:
        events.say(f"resuming from {chosen.name} (step {CHECKPOINT.match(chosen.name).group(1)})")
    return chosen


def incomplete_note(run_dir: Path) -> str:
    """For 'nothing to resume': the incomplete checkpoints that are there, if any, and why."""
    broken = [f"{p.name}: {problem(p)}" for p in all_checkpoints(run_dir)]
    return f" ({'; '.join(broken)})" if broken else ""
