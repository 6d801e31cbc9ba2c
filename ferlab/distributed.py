"""What the training loop needs to run as N processes under ``torchrun``; one process otherwise.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``setup()`` reads
them and joins the process group (NCCL on CUDA, gloo on CPU).  Without them every helper here is
the single-process identity, so the loop has one path.

* Data: ``DistributedSampler`` (PyTorch's) deals each epoch's permutation out to the ranks, so the
  union of the ranks' k-th batches is the single-process k-th batch (global batch fixed, per-rank
  batch = global / N).  Augmentation draws are seeded per image and epoch (``sample_seed``), so an
  image is augmented the same way whichever rank sees it.
* BatchNorm: ``sync_batchnorm`` normalizes with the statistics of the global batch, as one process
  does.  torch's ``nn.SyncBatchNorm`` runs only on GPUs; on CPU ``GlobalBatchNorm`` does the same
  with differentiable all-reduces.  State-dict keys stay those of BatchNorm.
* Results: validation is sharded and gathered, training sums are all-reduced, and only rank 0
  writes (``is_main``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: torch.device | None = None) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; returns the context and this process's
    device (its own GPU, ``cuda:<LOCAL_RANK>``, when there are GPUs)."""
    from .checkpoints import pick_device
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(), device or pick_device()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = device or pick_device()
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # N processes share the machine's cores (torchrun sets OMP_NUM_THREADS=1 unless told otherwise)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return Context(rank, world, local), device


def launched_as_rank0() -> bool:
    """Whether this process speaks for the run: rank 0 under torchrun, or not launched by it."""
    return int(os.environ.get("RANK", "0")) == 0


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one image's augmentation in one epoch: the same on any rank, in any process count."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


def all_sum(ctx: Context, *values: float) -> list[float]:
    """Sum scalars over the ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64)
    if ctx.distributed:
        dist.all_reduce(t)
    return t.tolist()


def gather_rows(ctx: Context, rows: np.ndarray) -> np.ndarray:
    """Concatenate each rank's rows in rank order (the ranks hold contiguous shards)."""
    if not ctx.distributed:
        return rows
    parts = [None] * ctx.world
    dist.all_gather_object(parts, rows)
    return np.concatenate(parts)


def shard(ctx: Context, n: int) -> slice:
    """This rank's contiguous share of ``n`` items (the first ``n % world`` ranks get one more)."""
    base, extra = divmod(n, ctx.world)
    start = ctx.rank * base + min(ctx.rank, extra)
    return slice(start, start + base + (ctx.rank < extra))


def broadcast_buffers(ctx: Context, module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics, which each rank updates
    from its own shard unless they are synchronized), as DDP does before each forward pass."""
    if ctx.distributed:
        for b in module.buffers():
            dist.broadcast(b, 0)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of a sum shared by all ranks is the sum of
    the ranks' gradients (each rank's loss depends on it)."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks, on any device (``nn.SyncBatchNorm`` is
    GPU-only): mean, then variance, each summed over the ranks with a differentiable all-reduce,
    so gradients flow through the shared statistics as they do in one process."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D)")

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        dist.all_reduce(count)
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (count / (count - 1)), alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` normalizing over the global batch (in place; weights kept)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new.to(device))
        else:
            sync_batchnorm(child, device)
    return module
