"""The sequence network trained under pyspark's TorchDistributor: PyTorch DDP in several
processes, over gloo on CPUs (NCCL on GPUs), one process per Spark executor slot on a cluster
(barrier tasks), or N processes on this machine (``torchrun``) in local mode.

The driver sends each process the same job: the training sequences (packed into two arrays),
the holdout sample, the options and the seconds left of the run's cap (not a deadline: clocks
differ between machines). Every process runs ``sequence.train_network`` on its share of each
batch (``ranks.py``); process 0 measures the holdout and decides when to stop; the best epoch's
weights come back as NumPy arrays with the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import sys

import numpy as np

from ..model.sequence import SequenceModel
from .engines import DistributorPlan, training_device

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass
class Job:
    """What every process receives: plain arrays and numbers, pickled once for all of them."""

    codes: np.ndarray  # every training sequence, end to end (int32)
    offsets: np.ndarray  # sequence i is codes[offsets[i]:offsets[i + 1]]
    title_count: int
    options: object  # SequenceOptions; threads 0 made each process's share of the cores
    sample: tuple | None  # the holdout sample (histories, targets), measured by process 0
    target_epochs: int
    start: dict | None  # a network to continue: SequenceModel arrays and heads
    seconds_left: float | None
    placement: str  # "spark executors" or "this machine", for the engine's name

    def sequences(self) -> list[np.ndarray]:
        codes = self.codes.astype(np.int64)
        return [codes[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]


def train_with_distributor(plan: DistributorPlan, sequences: list[np.ndarray], title_count: int, options, sample,
                           target_epochs: int, start: SequenceModel | None, seconds_left: float | None):
    """``sequence.train_network`` under TorchDistributor as ``plan`` places it: the model and
    the report of process 0."""
    from pyspark.ml.torch.distributor import TorchDistributor

    from .sequence_training import SequenceReport

    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    threads = options.threads or plan.threads
    job = Job(np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, dtype=np.int32),
              np.r_[0, np.cumsum(lengths)], title_count, dataclasses.replace(options, threads=threads),
              sample, target_epochs, None if start is None else {"arrays": start.arrays, "heads": start.heads},
              seconds_left, "spark executors" if plan.on_executors else "this machine")
    log.info("sequence model: TorchDistributor, %d processes on %s, %d threads each", plan.processes, job.placement,
             threads)
    distributor = TorchDistributor(num_processes=plan.processes, local_mode=not plan.on_executors,
                                   use_gpu=plan.use_gpu)
    # TorchDistributor echoes the processes' output on stdout, which is the commands' answer
    # (``evaluate --json``): their log goes where this process's log goes, to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        result = distributor.run(train_in_process, job)
    return SequenceModel(result["arrays"], heads=result["heads"]), SequenceReport(**result["report"])


def train_in_process(job: Job) -> dict:
    """What each process runs (TorchDistributor has set RANK, WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT): join the group, train, leave. Every process returns process 0's result, as
    plain data: the arrays, their heads and the report's fields."""
    import torch
    import torch.distributed as dist

    from .ranks import Processes
    from .sequence_training import train_network

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = training_device(job.options.engine, torch)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif os.environ.get("MASTER_ADDR") in LOOPBACK_NAMES and "GLOO_SOCKET_IFNAME" not in os.environ:
        # Left alone gloo listens on the address the host name resolves to: keep a training on
        # loopback there too (training/spark.py does the same for Spark).
        interface = _loopback_interface()
        if interface:
            os.environ["GLOO_SOCKET_IFNAME"] = interface
    dist.init_process_group(backend)
    try:
        world = dist.get_world_size()
        processes = f"{world} process{'es' if world > 1 else ''}"
        engine = f"torch-distributor {processes} ({backend}, {device.type}, {job.placement})"
        start = None if job.start is None else SequenceModel(job.start["arrays"], heads=job.start["heads"])
        model, report = train_network(job.sequences(), job.title_count, job.options, job.sample, job.target_epochs,
                                      start, job.seconds_left, ranks=Processes(device), device=device, engine=engine)
    finally:
        dist.destroy_process_group()
    return {"arrays": model.arrays, "heads": model.heads, "report": dataclasses.asdict(report)}


def _loopback_interface() -> str | None:
    """The name of the loopback interface ("lo" on Linux, "lo0" on macOS), if there is one."""
    names = [name for _, name in socket.if_nameindex()]
    return next((name for name in ("lo", "lo0") if name in names), None)
