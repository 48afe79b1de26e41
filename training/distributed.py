"""Training on PyTorch's own distributed engine: `torchrun --nproc_per_node=N -m training.main ...`.

Each process trains a DDP replica (gloo on CPU, NCCL on CUDA) on its share of every global P x K batch: the
batch's identities are split between the ranks, whole, in order. The embeddings of all ranks are gathered
(differentiably) before mining, so triplets are mined over the global batch exactly as one process would mine
them, and each rank computes the same loss; gradients come back through the gather and DDP averages them, so
an N-process step equals the one-process step of the same global batch. Evaluation and checkpoints: rank 0.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from training.data import PKSampler


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def setup() -> tuple[int, int, torch.device | None]:
    """Join the process group when started by torchrun (RANK/WORLD_SIZE set): NCCL with one GPU per local rank
    where CUDA is present, else gloo. Returns (rank, world size, device or None for the default)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return 0, 1, None
    cuda = torch.cuda.is_available()
    device = None
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def rank_zero_first():
    """Rank 0 runs the block first (e.g. fills a cache), the others after it (and read what it wrote)."""
    rank, size = world()
    if size > 1 and rank != 0:
        dist.barrier()
    yield
    if size > 1 and rank == 0:
        dist.barrier()


class DistributedPKSampler(Sampler[list[int]]):
    """The global P x K batches of `PKSampler` (same seed on every rank), of which this rank takes its
    contiguous share of identities (with their reported negatives): P must divide by the world size."""

    def __init__(self, labels, p: int, k: int, rank: int, world_size: int, **kwargs):
        if p % world_size:
            raise ValueError(f"P={p} identities per batch do not split evenly over {world_size} processes")
        self.inner = PKSampler(labels, p, k, **kwargs)
        self.rank, self.world_size, self.share = rank, world_size, p // world_size

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        lo = self.rank * self.share
        for groups in self.inner.groups():
            yield [i for g in groups[lo:lo + self.share] for i in g]


class _GatherRows(torch.autograd.Function):
    """All ranks' rows concatenated in rank order (ranks may hold different row counts); the backward pass
    sums each row's gradient over the ranks (every rank's loss uses every row) and returns this rank's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]):
        rank = dist.get_rank()
        biggest = max(sizes)
        padded = torch.zeros((biggest, *x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[: len(x)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank, ctx.biggest = sizes, rank, biggest
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (rows) over all ranks in rank order; differentiable when x requires grad."""
    rank, size = world()
    if size == 1:
        return x
    n = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    if x.requires_grad:
        return _GatherRows.apply(x, sizes)
    with torch.no_grad():
        return _GatherRows.forward(_Ctx(), x, sizes)


class _Ctx:  # stands in for autograd's ctx when gathering without gradients
    pass
