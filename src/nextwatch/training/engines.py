"""Where the sequence network trains: this process (on the CPU, or a GPU when PyTorch sees one),
or PyTorch DDP under pyspark's TorchDistributor, one process per Spark executor slot.

The settings (``NEXTWATCH_SEQUENCE_ENGINE``, ``_PROCESSES``, ``_DEVICE``) give an ``Engine``;
``distributor_plan`` turns it into the run's placement once a Spark session is known:

- ``auto`` (the default): TorchDistributor when the Spark session runs on a cluster
  (``spark://...``), so the cluster trains the network as well as the table. In local mode
  (``local[N]``, N >= 2) TorchDistributor's N processes on this machine for a training of at
  least ``LONG_TRAINING_POSITIONS`` positions an epoch, and this process for a shorter one:
  starting the processes costs seconds that a short training never wins back;
- ``local``: always this process;
- ``distributor``: always TorchDistributor; in local mode its processes run on this machine
  (``torchrun``), N of them for ``local[N]`` (how ``bench/train.py`` measures the speed-up).

PyTorch is imported only inside the functions, when training runs.
"""

from __future__ import annotations

import dataclasses
import os

from ..settings import SEQUENCE_DEVICES as DEVICES, SEQUENCE_ENGINES as ENGINES

# From this many training positions an epoch, ``auto`` in local mode trains under
# TorchDistributor. Measured with ``bench/train.py --network-only`` (BENCHMARKS.md, "The sequence
# network alone, by engine"): on 2 cores, two processes of one thread train 1.55x faster than one
# process of two threads on a quiet machine (1.15x with a core taken by other work), and start
# 5 s later (8-10 s when busy). One process trains ~28,000 positions/s, so 500,000 positions are
# an 18 s epoch: the processes repay their start-up inside the first epoch when the machine is
# quiet, and by the fourth when it is busy (a holdout-stopped training runs at least
# patience + 1 epochs). Amazon Beauty's ~130,000 positions stay in one process.
LONG_TRAINING_POSITIONS = 500_000


@dataclasses.dataclass(frozen=True)
class Engine:
    """What the settings ask for."""

    choice: str = "auto"  # ENGINES
    processes: int = 0  # TorchDistributor's processes; 0: one per executor slot (local[N]: N)
    device: str = "auto"  # DEVICES: "cpu" never uses a GPU, even where PyTorch sees one

    def __post_init__(self):
        if self.choice not in ENGINES or self.device not in DEVICES or self.processes < 0:
            raise ValueError(f"engine must be one of {ENGINES}, device one of {DEVICES} and processes >= 0; "
                             f"got {self.choice!r}, {self.device!r}, {self.processes}")


@dataclasses.dataclass(frozen=True)
class DistributorPlan:
    """One TorchDistributor run, as the Spark session allows it."""

    processes: int
    on_executors: bool  # Spark barrier tasks on the executors; False: torchrun on this machine
    use_gpu: bool  # each task asks Spark for a GPU (spark.task.resource.gpu.amount is set)
    threads: int  # PyTorch threads of each process: its share of the cores


def engine_from_settings(settings) -> Engine:
    return Engine(settings.sequence_engine, settings.sequence_processes, settings.sequence_device)


def training_device(engine: Engine, torch):
    """The device of this process's network: CUDA when PyTorch sees a GPU and the settings allow
    it (under torchrun, the GPU of this process's local rank), the CPU otherwise."""
    if engine.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def local_engine_name(device) -> str:
    """What the metadata records for a training in this process."""
    return "cuda" if device.type == "cuda" else "local-cpu"


def distributor_plan(engine: Engine, positions: int = 0) -> DistributorPlan | None:
    """TorchDistributor's placement for this training (``positions``: what it trains on each
    epoch), or None to train in this process."""
    if engine.choice == "local":
        return None
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    try:
        spark = SparkSession.active()  # the session TorchDistributor would run on
    except PySparkRuntimeError:  # none: a training without Spark (evaluate's helpers, bench)
        spark = None
    if spark is None:
        if engine.choice == "distributor":
            raise ValueError("NEXTWATCH_SEQUENCE_ENGINE=distributor needs a running Spark session")
        return None
    context = spark.sparkContext
    on_executors = not context.master.startswith("local")
    if engine.choice == "auto" and not on_executors and (context.defaultParallelism < 2
                                                         or positions < LONG_TRAINING_POSITIONS):
        return None
    task_cpus = int(context.getConf().get("spark.task.cpus", "1"))
    if on_executors:
        processes = engine.processes or executor_slots(context, task_cpus)
        threads = task_cpus
        use_gpu = engine.device != "cpu" and float(context.getConf().get("spark.task.resource.gpu.amount", "0")) > 0
    else:
        processes = engine.processes or context.defaultParallelism  # local[N]: N
        threads = max(1, (os.cpu_count() or 1) // processes)
        # On this machine each process sees every GPU and takes its local rank's
        # (training_device); TorchDistributor's use_gpu would ask for Spark driver GPU resources.
        use_gpu = False
    return DistributorPlan(processes, on_executors, use_gpu, threads)


def executor_slots(context, task_cpus: int) -> int:
    """The tasks the executors can run at once: each process of TorchDistributor is one barrier
    task, and a barrier stage asking for more slots than there are waits and fails. Spark's own
    count, the one barrier scheduling checks against (``maxNumConcurrentTasks``: in Scala
    ``private[spark]``, public to py4j); else the executors' cores, as ``defaultParallelism``
    reports them on a standalone cluster (at least 2, and any ``spark.default.parallelism`` wins)."""
    from py4j.protocol import Py4JError

    spark_context = context._jsc.sc()
    try:
        slots = spark_context.maxNumConcurrentTasks(spark_context.resourceProfileManager().defaultResourceProfile())
    except Py4JError:
        slots = context.defaultParallelism // task_cpus
    return max(1, int(slots))
