"""Training on several GPUs: the launch, the strategy, and what only the main process does.

`inhouse train --devices N` starts N copies of itself through torchrun's launcher
(`torch.distributed.launcher`), one per GPU; `torchrun -m inhouse train ...` and
`accelerate launch -m inhouse train ...` work the same, since each only sets RANK, LOCAL_RANK and WORLD_SIZE (`inhouse.world`). Inside, transformers' Trainer
(through accelerate) wraps the model for DDP or FSDP2 and splits the data across ranks. inhouse adds
the rest: one run name for all ranks, the run folder and the library written by rank 0 alone, and a
stop request seen by rank 0 obeyed by all.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from inhouse import world
from inhouse.errors import InvalidInputError
from inhouse.recipe import Recipe

PR_SET_PDEATHSIG = 1  # prctl(2)


def needs_launch(recipe: Recipe) -> bool:
    """A run asked for more devices than the processes it is running in."""
    return (recipe.devices or 1) > 1 and not world.current().distributed


def check_world(recipe: Recipe) -> None:
    """devices, when set, must match the processes the launcher started; a plain process cannot train
    on several GPUs by itself (the Python API needs a launcher; the CLI relaunches)."""
    check_strategy(recipe)
    size = world.current().size
    if recipe.devices is not None and recipe.devices != size:
        how = ("start it with 'inhouse train --devices N' or torchrun --nproc_per_node N" if size == 1 else
               f"the launcher started {size} processes")
        raise InvalidInputError(f"--devices: {recipe.devices} asked for, but this run has {size} process"
                                f"{'es' if size > 1 else ''}; {how}")
    if size > 1 and world.gpu():
        import torch

        if torch.cuda.device_count() < size:
            raise InvalidInputError(f"--devices: {size} processes but {torch.cuda.device_count()} GPU(s) visible")


def launch_config(devices: int) -> Any:
    """What `torchrun --standalone --nproc_per_node N` configures: one machine, a local rendezvous on a
    free port, no restarts."""
    import uuid

    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=devices, run_id=str(uuid.uuid4()),
                        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)


def relaunch(recipe: Recipe, argv: Sequence[str], resume: bool = False) -> int:
    """Run the command again in `devices` processes and return its exit status. The run name is fixed
    and its folder checked here, once: every rank (and a later --resume) agrees on the name, and a wrong
    --resume or a taken name is one line before any process starts."""
    from inhouse.train.sft import default_name, run_dir_for

    check_launchable(recipe)
    args = list(argv)
    if recipe.output_name is None:
        args += ["--output-name", default_name(recipe)]
    run_dir_for(recipe.output_name or args[-1], resume)
    return launch(recipe.devices or 1, ["-m", "inhouse", *args])


def launch(devices: int, args: Sequence[str]) -> int:
    """torchrun's launcher (torch.distributed.launcher), run in this process: each rank prints its own
    one-line error when it fails, so the launcher's report and traceback are not shown; exit status 1."""
    import logging
    import os

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun sets it: the ranks share the CPU cores
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        elastic_launch(launch_config(devices), sys.executable)(*args)
    except ChildFailedError:
        return 1
    return 0


def check_launchable(recipe: Recipe) -> None:
    check_strategy(recipe)
    if world.gpu():
        import torch

        if torch.cuda.device_count() < (recipe.devices or 1):
            raise InvalidInputError(f"--devices: {recipe.devices} asked for, but {torch.cuda.device_count()} "
                                    "GPU(s) are visible")


def join() -> None:
    """Join the process group (accelerate's PartialState sets it up from the launcher's environment: NCCL
    on GPUs, gloo on CPUs) before anything is decided for all ranks."""
    if world.current().distributed:
        from accelerate import PartialState

        die_with_launcher()
        PartialState(cpu=not world.gpu())


def die_with_launcher() -> None:
    """A rank must not outlive its launcher. torchrun's agent starts each rank in a session of its own, so
    when the agent is killed outright (kill -9 of `inhouse train`, a job cancelled hard, the OOM killer)
    nothing stops the ranks, and they would train on and publish unseen. Linux's parent-death signal
    ends each rank with the process that started it."""
    import os

    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher was gone before the signal was asked for
        os._exit(1)


def one_device_per_process(args: Any) -> Any:
    """A process trains on its own device only. Without a launcher, the Trainer would spread one process
    over every visible GPU with nn.DataParallel (on an H200 pair: NaN at the second step of an 8B LoRA
    run, with packing's single-row batches); several GPUs are used through `devices` (DDP/FSDP) instead.
    The device is settled first, then the GPU count set to one, as the Trainer does for model parallelism."""
    _ = args.device
    if args.n_gpu > 1:
        args._n_gpu = 1
    return args


def strategy(recipe: Recipe) -> str | None:
    """'ddp' or 'fsdp' when several processes train, None for one."""
    if not world.current().distributed:
        return None
    if recipe.strategy != "auto":
        return recipe.strategy
    return "fsdp" if recipe.method == "full" and world.gpu() else "ddp"


def check_strategy(recipe: Recipe) -> None:
    """accelerate shards with FSDP on GPUs only: on CPUs it would quietly run DDP instead."""
    if recipe.strategy == "fsdp" and (recipe.devices or world.current().size) > 1 and not world.gpu():
        raise InvalidInputError("--strategy: fsdp needs GPUs (accelerate shards on CUDA devices only); "
                                "on CPUs use ddp")


def trainer_settings(recipe: Recipe, layer_classes: Sequence[str], checkpointing: bool) -> dict:
    """The Trainer's arguments for the strategy: FSDP2 shards each decoder layer (and checkpoints it
    itself when asked: the model's own checkpointing is then off); DDP needs no search for unused
    parameters (every LoRA weight takes part in each step)."""
    chosen = strategy(recipe)
    if chosen == "fsdp":
        config = {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                  "transformer_layer_cls_to_wrap": list(layer_classes), "activation_checkpointing": checkpointing,
                  "state_dict_type": "FULL_STATE_DICT", "reshard_after_forward": True}
        return {"fsdp": "full_shard auto_wrap", "fsdp_config": config}
    if chosen == "ddp":
        return {"ddp_find_unused_parameters": False}
    return {}
