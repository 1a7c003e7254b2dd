import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.trainsdk.training import ddp_script
from trainsdk.training import DistInfo, dist_env, load_training_state
from trainsdk.training.distributed import init_process_group

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_dist_env_reads_torchrun_variables():
    assert dist_env({}) == DistInfo(0, 1, 0)
    info = dist_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (1, 2, True, False)
    with pytest.raises(ValueError, match=r"RANK must be in \[0, WORLD_SIZE=2\), got 2"):
        dist_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer.*'two'"):
        dist_env({"WORLD_SIZE": "two"})


def test_without_torchrun_rendezvous_variables_the_error_says_how_to_launch(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="launch with torchrun"):
        init_process_group(DistInfo(0, 2, 0), torch.device("cpu"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_match_one_process_with_the_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), ddp_script.__file__, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert not (tmp_path / "rank1").exists()  # rank 1 wrote nothing
    assert sorted(os.listdir(tmp_path / "rank0")) == ["best.pt", "last.pt", "metrics.csv", "metrics.jsonl",
                                                      "steps.csv"]
    results = [torch.load(tmp_path / f"result_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in results] == [2, 2]
    single = ddp_script.train(None, batch_size=2 * 8)  # one process, the same global batch
    for key, value in single.model.state_dict().items():
        assert torch.equal(results[0]["state_dict"][key], results[1]["state_dict"][key]), key  # ranks in sync
        torch.testing.assert_close(results[0]["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    for dist_rec, one_rec in zip(results[0]["history"], single.history, strict=True):
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):  # averaged across ranks
            assert dist_rec[k] == pytest.approx(one_rec[k], rel=1e-5), k
    last = load_training_state(tmp_path / "rank0" / "last.pt")
    assert (last["epoch"], last["world_size"], len(last["rng_per_rank"])) == (ddp_script.EPOCHS, 2, 2)
