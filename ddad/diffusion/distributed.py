"""Several processes, one job: torch.distributed under torch's own launcher (torchrun's engine).

A stage asked for more than one process re-runs itself under
``torch.distributed.launcher.api.elastic_launch`` (what ``torchrun`` calls), once per rank; a
stage already started by ``torchrun`` or ``srun`` + torchrun just joins the group. Work is
sharded by batches, never by images: rank r takes batches r, r + W, r + 2W, ... of the list one
process would make, so every batch holds the same images as with one process and the numbers
come out bit for bit the same. Each rank computes on its share of the node's cores, fewer
threads than one process has: ddad.diffusion.threads keeps the steps that round by the thread
count out of the numbers. With one process nothing here starts a process group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ddad.errors import DdadError

T = TypeVar("T")
R = TypeVar("R")

NODE_RANK_ENV = "PET_NODE_RANK"  # torchrun's own variable for --node-rank


@dataclass(frozen=True)
class Launch:
    """How many processes where: ``nproc_per_node`` on each of ``nnodes`` machines meeting at
    ``rdzv_endpoint`` (host:port of node 0; '' on one machine: a free local port), giving up
    after ``timeout_s`` when a node cannot reach the others."""

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str = ""
    timeout_s: int = 60
    node_rank: int = 0

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def in_worker() -> bool:
    """Whether this process was started by a torch launcher as one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_leader() -> bool:
    """Whether this rank writes what needs every image (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for with one process)."""
    if dist.is_initialized():
        dist.barrier()


def share(items: Sequence[T]) -> list[T]:
    """This rank's batches: r, r + W, r + 2W, ... of ``items``."""
    return list(items[rank() :: world_size()])


def sharded_map(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[work(x) for x in items]``, each rank doing its ``share`` and every rank getting all
    results, in order (gathered as pickled objects; tensors come back on the CPU)."""
    if not dist.is_initialized():
        return [work(item) for item in items]
    mine = [_on_cpu(work(item)) for item in share(items)]
    gathered: list[list[R] | None] = [None] * world_size()
    dist.all_gather_object(gathered, mine)
    return [gathered[i % world_size()][i // world_size()] for i in range(len(items))]


def _on_cpu(value: R) -> R:
    """A tensor on the CPU (a pickled CUDA tensor would land on the sender's GPU number)."""
    return value.cpu() if isinstance(value, torch.Tensor) else value


def average_across_ranks(value: float) -> float:
    """The mean of ``value`` over ranks (itself with one process)."""
    return _summed(value) / world_size()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (itself with one process): a decision every rank
    takes at the same point, such as stopping after this step."""
    return _summed(float(flag)) > 0


def _summed(value: float) -> float:
    if not dist.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return float(total.item())


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the launcher's group for the duration: NCCL on CUDA (one GPU per local rank),
    gloo on the CPU; this rank computes on its share of the node's cores (``_share_cores``)."""
    _share_cores()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _share_cores() -> None:
    """Let this rank's torch use its share of the cores: those this process may run on,
    divided by the ranks on this node (``LOCAL_WORLD_SIZE``, set by the launcher), at least one.

    Each rank would otherwise start torch's full thread count, as one process does, and the
    ranks' threads would fight for the same cores (elastic_launch, unlike torchrun's command,
    does not set OMP_NUM_THREADS). An OMP_NUM_THREADS set by the user, or by torchrun, is
    kept.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, _usable_cores() // local_ranks))


def _usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset or SLURM)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def report_failure(message: str) -> bool:
    """Hand a rank's one-line error to the launcher (its error file), which names the rank;
    False outside a launcher, where the caller prints it."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or not in_worker():
        return False
    with open(path, "w") as handle:
        json.dump({"message": message, "timestamp": int(time.time())}, handle)
    return True


def launch(
    config: Launch,
    entrypoint: str | Callable[..., R],
    args: Sequence[Any],
    resume_hint: str | Callable[[], str],
) -> dict[int, R | None]:
    """Run ``entrypoint`` as ``config.nproc_per_node`` ranks on this node: a module name runs
    as ``python -m entrypoint *args``, a function as ``entrypoint(*args)``; returns each local
    rank's return value (None for a module).

    A failed rank becomes one DdadError naming it (what it reported, the signal that killed it,
    or its exit code); ``resume_hint`` says how to go on (a function: asked once a rank has
    failed, as what is kept by then may differ).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _quiet_launcher()
    one_node = config.nnodes == 1 and not config.rdzv_endpoint
    launch_config = LaunchConfig(
        min_nodes=config.nnodes,
        max_nodes=config.nnodes,
        nproc_per_node=config.nproc_per_node,
        run_id="ddad" if not one_node else f"ddad-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d" if one_node else "static",
        rdzv_endpoint="127.0.0.1:0" if one_node else config.rdzv_endpoint,
        rdzv_configs={"rank": config.node_rank, "timeout": config.timeout_s},
        rdzv_timeout=config.timeout_s,
        max_restarts=0,
        monitor_interval=0.1,
    )
    if isinstance(entrypoint, str):
        target, target_args = sys.executable, ("-m", entrypoint, *args)
    else:
        target, target_args = entrypoint, tuple(args)
    try:
        return elastic_launch(launch_config, target)(*target_args)
    except ChildFailedError as exc:
        local_rank, failure = exc.get_first_failure()
        global_rank = config.node_rank * config.nproc_per_node + local_rank
        hint = resume_hint() if callable(resume_hint) else resume_hint
        raise DdadError(f"rank {global_rank} {_what_happened(failure, hint)}") from None
    except SignalException:  # Ctrl-C or a kill reached the launcher, which stopped the ranks
        raise KeyboardInterrupt from None
    except (dist.DistError, RendezvousError, TimeoutError, OSError) as exc:
        # the rendezvous: an unreachable address, a port in use, a node that never came
        reason = " ".join(str(exc).split())[:300].rstrip(".") or type(exc).__name__
        raise DdadError(
            f"node {config.node_rank} could not join the others at "
            f"{config.rdzv_endpoint or 'a local port'} ({reason}); check dist.rdzv_endpoint "
            f"(host:port of node 0, a free port) and that every node runs the same command; "
            f"dist.timeout_s = {config.timeout_s} bounds each try"
        ) from None


def _quiet_launcher() -> None:
    """Keep the launcher's own log (each worker it stops, each failure as a table) off stderr:
    the one-line error says what happened. Its loggers set their own levels, so each is set."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _what_happened(failure: Any, resume_hint: str) -> str:
    """A failed rank in words: the error it reported (which says how to fix it), or the signal
    or exit code that ended it and ``resume_hint``."""
    if failure.exitcode < 0:
        ended = f"was killed by {signal.Signals(-failure.exitcode).name}"
    elif os.path.isfile(failure.error_file):  # what report_failure wrote
        reported = failure.error_file_data["message"]
        return f"failed: {reported if isinstance(reported, str) else reported.get('message')}"
    else:
        ended = f"exited with code {failure.exitcode} (its output above says why)"
    return f"(pid {failure.pid}) {ended}; {resume_hint}"
