"""Multi-process data parallel training under ``torchrun``: the pieces the Trainer puts together by itself.

``torchrun --nproc_per_node N train.py`` starts N copies of the script with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; a ``Trainer`` that finds them joins the process group
(gloo on CPU, NCCL on CUDA), wraps the model in ``DistributedDataParallel``, gives every rank its shard of each
epoch (``DistributedSampler`` + ``set_epoch``), averages metrics across ranks and lets only rank 0 write. Several
machines are the same with ``--nnodes``/``--rdzv-endpoint``; the output folder must then be shared storage for
resuming (every rank reads the checkpoint rank 0 wrote).

Batch sizes are per process: the global batch is ``batch_size * world_size``. Because the single-process Trainer
draws its epoch order with the same ``DistributedSampler`` (one replica), N processes with batch ``b`` see the same
samples per step as one process with batch ``N * b``, and (without batch norm, whose statistics are per rank) reach
the same weights up to float summation order. When the dataset size is not a multiple of ``world_size``, the
sampler repeats a few samples so every rank gets as many (``drop_last=True`` drops the remainder instead).
Validation shards are disjoint and unpadded, and metrics are averaged by shard size: exact for means.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Dataset, DistributedSampler, Sampler

__all__ = ["DistInfo", "dist_env", "resolve_device", "backend_for", "init_process_group", "cleanup", "wrap_ddp",
           "train_sampler", "ShardSampler", "reduce_weighted_mean", "any_across_ranks", "all_gather_objects",
           "barrier"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer (set by torchrun), got {raw!r}") from None


def dist_env(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; a plain ``python train.py`` gives rank 0 of 1."""
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", rank)
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world}")
    if not 0 <= rank < world:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world}), got {rank}")
    if local < 0:
        raise ValueError(f"LOCAL_RANK must be >= 0, got {local}")
    return DistInfo(rank, world, local)


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_process_group(info: DistInfo, device: torch.device) -> bool:
    """Join the process group torchrun describes; True when this call created it (so ``cleanup`` ends it)."""
    if not info.enabled:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if dist.is_initialized():
        if dist.get_world_size() != info.world_size or dist.get_rank() != info.rank:
            raise RuntimeError(f"a process group is already initialised with rank {dist.get_rank()} of "
                               f"{dist.get_world_size()}, but the environment says rank {info.rank} of "
                               f"{info.world_size}")
        return False
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={info.world_size} but {missing} are not set: launch with torchrun "
                           f"(python -m torch.distributed.run --nproc_per_node N script.py)")
    dist.init_process_group(backend_for(device), rank=info.rank, world_size=info.world_size)
    return True


def cleanup(owned: bool) -> None:
    """End the process group if ``init_process_group`` created it; one a caller set up is theirs to end."""
    if owned and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (already on ``device``); its construction broadcasts rank 0's
    parameters and buffers, so every rank starts from the same weights."""
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return DistributedDataParallel(model, device_ids=[index], output_device=index)
    return DistributedDataParallel(model)


def train_sampler(dataset: Dataset, info: DistInfo, *, seed: int, shuffle: bool = True,
                  drop_last: bool = False) -> DistributedSampler:
    """This rank's share of each epoch; call ``set_epoch(e)`` before each epoch for a new (seeded) order.

    Used with one replica too, so that the order of a single process matches the union of N ranks' orders.
    """
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: disjoint, unpadded shards for evaluation (no sample counted twice)."""

    def __init__(self, length: int, info: DistInfo) -> None:
        self.indices = range(info.rank, length, info.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _collective_device(device: torch.device) -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU ones
    return torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")


def reduce_weighted_mean(metrics: Mapping[str, float], weight: float, info: DistInfo,
                         device: torch.device) -> dict[str, float]:
    """Mean of each metric over all ranks, rank ``r`` counting ``weight_r`` (its sample count): exact for means.

    Every rank must pass the same keys (they run the same code); the keys are sorted so the order agrees.
    """
    if not info.enabled:
        return {k: float(v) for k, v in metrics.items()}
    keys = sorted(metrics)
    buf = torch.tensor([float(metrics[k]) * weight for k in keys] + [float(weight)], dtype=torch.float64,
                       device=_collective_device(device))
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    total = float(buf[-1])
    if total <= 0:
        raise ValueError("reduce_weighted_mean: the weights summed over ranks are zero (no samples anywhere)")
    return {k: float(buf[i]) / total for i, k in enumerate(keys)}


def any_across_ranks(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when it is True on any: ranks that stop must all stop, or the others wait forever."""
    if not info.enabled:
        return bool(flag)
    buf = torch.tensor([1.0 if flag else 0.0], device=_collective_device(device))
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return bool(buf.item() > 0)


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (one entry without a process group)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    """The device a config names ("auto": CUDA when available); under torchrun each process takes the GPU of its
    ``LOCAL_RANK``."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if not spec.startswith("cuda"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} but CUDA is not available (torch {torch.__version__}); "
                         f"use device='cpu' or 'auto'")
    device = torch.device(spec)
    if device.index is None:
        device = torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise ValueError(f"{device} does not exist: {torch.cuda.device_count()} GPU(s) visible")
    torch.cuda.set_device(device)
    return device
