"""How the processes of one training of the sequence network share the batches and agree.

Every process holds every training sequence and draws the same order of them each epoch (the
same seed), so all cut the same global batches of ``batch_size`` sequences, the batches that one
process alone would train on; process ``r`` of ``W`` trains on rows ``r, r + W, ...`` of each.
DDP averages the W gradients; each process's loss is its share's mean scaled by
``W x its positions / the batch's positions``, so that the average is the gradient of the
whole batch's mean loss, as in one process (``tests/test_sequence_engines.py`` checks it).

Process 0 decides: it measures the holdout after each epoch, applies the patience rule and
the time cap, and the others follow its verdict (a broadcast). Each process's clock only counts
the seconds it was given, since clocks differ between machines.

PyTorch is imported only inside the functions, when training runs.
"""

from __future__ import annotations

import numpy as np

GO_ON, PATIENCE, TIME_CAP_REACHED = 0, 1, 2  # process 0's verdicts


def batch_share(batch: np.ndarray, lengths: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, float]:
    """Process ``rank``'s rows of the global ``batch`` (indices of sequences whose lengths are
    ``lengths``) and the factor of its mean loss. A process left without a row (a last batch
    smaller than the processes) trains the batch's first row with factor 0: DDP needs every
    process in every step, and it adds nothing to the gradient."""
    mine = batch[rank::world]
    if len(mine) == 0:
        return batch[:1], 0.0
    positions = lengths[batch] - 1
    return mine, float(world * (lengths[mine] - 1).sum() / positions.sum())


class OneProcess:
    """A training alone: process 0 of 1, which decides for itself."""

    rank, world = 0, 1

    def wrap(self, network):
        return network

    def agree(self, verdict: int) -> int:
        return verdict

    def totals(self, *values: float) -> tuple[float, ...]:
        return values

    def shared(self, result):
        return result


class Processes:
    """This process in a torch.distributed group (``init_process_group`` already called)."""

    def __init__(self, device):
        import torch.distributed as dist

        self.dist, self.device = dist, device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def wrap(self, network):
        """The network under DDP: each backward pass averages the gradients of every process."""
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(network, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def agree(self, verdict: int) -> int:
        """Process 0's verdict, on every process."""
        import torch

        flag = torch.tensor([verdict], dtype=torch.int64, device=self.device)
        self.dist.broadcast(flag, src=0)
        return int(flag.item())

    def totals(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the processes (the epoch's loss and positions)."""
        import torch

        summed = torch.tensor(values, dtype=torch.float64, device=self.device)
        self.dist.all_reduce(summed)
        return tuple(summed.tolist())

    def shared(self, result):
        """Process 0's result on every process. TorchDistributor's torchrun on one machine has all
        processes write their result to the same file, so they must all write the same one."""
        box = [result if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]


ONE_PROCESS = OneProcess()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s dropout: the same run to run, different between processes (each
    process's share of the batch gets its own masks)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
