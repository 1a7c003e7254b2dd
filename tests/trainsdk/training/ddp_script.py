"""Run by ``test_distributed.py`` under torchrun (2 CPU processes, gloo); also imported there for the reference run.

    python -m torch.distributed.run --nproc_per_node 2 --master_port P tests/trainsdk/training/ddp_script.py OUT

Each rank trains with ``out_dir=OUT/rank<r>`` (so a file from a non-zero rank would show up in its own folder) and
saves its final weights and history to ``OUT/result_rank<r>.pt`` for the test to compare.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from deploysdk._atomic import atomic_path  # noqa: E402
from trainsdk.training import Trainer, TrainerConfig  # noqa: E402

N, FEATURES, CLASSES, EPOCHS = 64, 12, 3, 3


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, FEATURES, generator=g)  # (N, F)
    return x, x[:, :CLASSES].argmax(1)


def make_model() -> nn.Module:
    """No batch norm: its statistics are per rank, which would make DDP differ from one process."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, CLASSES))


def train(out_dir: str | None, batch_size: int) -> Trainer:
    cfg = TrainerConfig(max_epochs=EPOCHS, batch_size=batch_size, device="cpu", out_dir=out_dir, log_every=2,
                        progress=False, seed=3)
    data = make_data()
    trainer = Trainer(make_model(), cfg, train_data=data, val_data=data,
                      optimizer=lambda params: torch.optim.SGD(params, lr=0.2, momentum=0.9))
    trainer.fit()
    return trainer


if __name__ == "__main__":
    torch.set_num_threads(1)
    base, rank = sys.argv[1], int(os.environ["RANK"])
    trainer = train(os.path.join(base, f"rank{rank}"), batch_size=8)
    result = {"state_dict": trainer.model.state_dict(), "history": trainer.history,
              "world_size": trainer.dist.world_size, "rank": trainer.dist.rank}
    with atomic_path(os.path.join(base, f"result_rank{rank}.pt")) as tmp:
        torch.save(result, tmp)
