"""Data-parallel training across processes: ``torchrun --nproc_per_node N code/train.py ...``.

Each process (rank) trains the same model on different batches; after every backward pass the
gradients are averaged over the ranks, so the weights stay identical (what PyTorch's
DistributedDataParallel does, done here on the parameters an optimiser owns, because a method may
step several networks separately). Rank 0 alone writes the run folder. Without torchrun (no
``WORLD_SIZE`` in the environment) every call below is free and does nothing.

The per-rank batch is ``--batch_size``; the effective batch is ``--batch_size`` x N, with the
learning rate unchanged.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Distributed:
    """This process's place in the job: ``rank`` in ``0..world_size-1``, ``local_rank`` on its
    machine (its GPU index)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = torch.device("cpu")  # where small collectives run (NCCL needs the GPU)

    @classmethod
    def from_env(cls) -> "Distributed":
        """The job torchrun describes in the environment; a single process without it."""
        env = os.environ
        if int(env.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on CUDA, gloo on the CPU); the device this rank uses."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            if device.index is None:
                device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        self.device = device
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=self.rank,
                                    world_size=self.world_size)
        return device

    def barrier(self) -> None:
        """Wait until every rank is here (e.g. before leaving, so that no rank tears down the
        group while another still uses it)."""
        if self.enabled:
            dist.barrier()

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its mean over the ranks (one flat all-reduce);
        parameters without a gradient must lack it on every rank (the same code runs on all)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.enabled or not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast(self, tensors) -> None:
        """Give every rank rank 0's values of ``tensors`` (in place), e.g. a module's
        ``state_dict().values()`` at the start, or its ``buffers()`` (batch-norm statistics)."""
        if self.enabled:
            for t in tensors:
                dist.broadcast(t, 0)

    def check_identical(self, module: torch.nn.Module) -> None:
        """RuntimeError when the ranks' parameters differ (they must, after averaged steps, be
        equal bit for bit); compares a float64 checksum of all parameters."""
        if not self.enabled:
            return
        total = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1)
        sums = [torch.zeros_like(total) for _ in range(self.world_size)]
        dist.all_gather(sums, total)
        if any(s.item() != sums[0].item() for s in sums):
            raise RuntimeError(f"the ranks' weights differ (checksums {[s.item() for s in sums]}); "
                               "every rank must run the same code on the same flags")

    def all(self, flag: bool | torch.Tensor) -> bool:
        """True when ``flag`` is true on every rank."""
        if not self.enabled:
            return bool(flag)
        t = torch.as_tensor(flag).to(self.device, torch.int32).reshape(1)
        dist.all_reduce(t, dist.ReduceOp.MIN)
        return bool(t.item())

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on some rank."""
        return not self.all(not flag)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (the same shape on all), concatenated along dim 0 in rank
        order; ``tensor`` itself in a single process."""
        if not self.enabled:
            return tensor
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor.contiguous())
        return torch.cat(out)

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out
