import numpy as np
import pytest
import torch

from trainsdk.data import PhantomConfig, make_phantoms
from trainsdk.data.degradations import downsample, gaussian_noise, upsample_bicubic
from trainsdk.metrics import psnr, ssim
from trainsdk.models import create_model
from trainsdk.training import Callback, TrainerConfig
from trainsdk.training.checkpoint import load_training_state
from trainsdk.training.recipes.autoencode import (EncoderClassifier, PretrainExperiment, RestorationExperiment,
                                                  RestorationResult, degrade_pairs, pair_step, restoration_metrics,
                                                  restore, start_from_input, tile, train_restorer)


def _clean(n=8, size=32, seed=0):
    return make_phantoms(n, (size, size), seed=seed, config=PhantomConfig(noise="none")).images  # (N, 1, S, S)


def test_degrade_pairs_per_task():
    clean = _clean(2)
    noisy = degrade_pairs("denoise", clean, seed=3, sigma=0.2)
    np.testing.assert_array_equal(noisy, gaussian_noise(clean, 0.2, seed=3))
    assert noisy.std() > clean.std()
    np.testing.assert_array_equal(degrade_pairs("denoise", clean, seed=3, sigma=0.2), noisy)  # deterministic
    sr = degrade_pairs("superres", clean, factor=2)
    np.testing.assert_allclose(sr, upsample_bicubic(downsample(clean, 2), 2))
    assert sr.shape == clean.shape
    with pytest.raises(ValueError, match="task must be one of"):
        degrade_pairs("deblur", clean)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        degrade_pairs("denoise", clean[0])


def test_tile_cuts_non_overlapping_patches_row_by_row():
    a = np.arange(2 * 1 * 4 * 6, dtype=np.float32).reshape(2, 1, 4, 6)
    t = tile(a, 2)
    assert t.shape == (12, 1, 2, 2)
    np.testing.assert_array_equal(t[0], a[0, :, 0:2, 0:2])
    np.testing.assert_array_equal(t[1], a[0, :, 0:2, 2:4])
    np.testing.assert_array_equal(t[3], a[0, :, 2:4, 0:2])
    np.testing.assert_array_equal(t[6], a[1, :, 0:2, 0:2])
    with pytest.raises(ValueError, match="patch"):
        tile(a, 5)


def test_restoration_metrics_are_per_image_means():
    clean = _clean(3)
    noisy = gaussian_noise(clean, 0.1, seed=0)
    m = restoration_metrics(noisy, clean)
    assert m["psnr"] == pytest.approx(np.mean([psnr(a, b, data_range=1.0) for a, b in zip(noisy, clean)]))
    assert m["ssim"] == pytest.approx(np.mean([ssim(a[0], b[0], data_range=1.0) for a, b in zip(noisy, clean)]))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        restoration_metrics(noisy[0], clean[0])


def test_start_from_input_makes_a_residual_rednet_the_identity():
    torch.manual_seed(0)
    net = create_model("rednet10", in_channels=1, width=8)
    x = torch.rand(2, 1, 16, 16)
    assert not torch.allclose(net(x), x)
    assert start_from_input(net)
    torch.testing.assert_close(net(x), x)
    assert not start_from_input(create_model("conv_dae", in_channels=1, widths=(4,)))  # not residual: unchanged


def test_pair_step_is_mse_and_refuses_other_batches():
    net = create_model("conv_dae", in_channels=1, widths=(4,))
    x, y = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    assert float(pair_step(net, (x, y)).detach()) == pytest.approx(float(((net(x) - y) ** 2).mean().detach()))
    with pytest.raises(TypeError, match="degraded, clean"):
        pair_step(net, x)


class _Interrupt(Exception):
    pass


class _InterruptAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_batch_end(self, trainer, batch_idx, metrics):
        if trainer.current_epoch == self.epoch and batch_idx == 2:
            raise _Interrupt


def _dae_run(out_dir=None, epochs=6, resume=None, model_seed=0, callbacks=()):
    clean = _clean(16, 32)
    noisy = degrade_pairs("denoise", clean, seed=1, sigma=0.1)
    torch.manual_seed(model_seed)
    net = create_model("conv_dae", in_channels=1, widths=(16,))
    cfg = TrainerConfig(max_epochs=epochs, batch_size=8, lr=1e-2, device="cpu", progress=False, log_every=0,
                        out_dir=out_dir, loggers=())
    trainer = train_restorer(net, tile(noisy, 16), tile(clean, 16), trainer_config=cfg, resume=resume,
                             callbacks=callbacks)
    return trainer, net


def test_denoising_autoencoder_reduces_loss_and_beats_the_noisy_input():
    trainer, net = _dae_run(epochs=10)
    losses = [r["train_loss"] for r in trainer.history]
    assert losses[-1] < 0.3 * losses[0]
    clean = _clean(4, 32, seed=7)  # unseen phantoms, full size (fully convolutional)
    noisy = degrade_pairs("denoise", clean, seed=8, sigma=0.1)
    assert restoration_metrics(restore(net, noisy), clean)["psnr"] > restoration_metrics(noisy, clean)["psnr"] + 3


def test_restorer_resumes_through_the_trainer(tmp_path):
    straight, net_a = _dae_run(str(tmp_path / "a"), epochs=3)
    with pytest.raises(_Interrupt):
        _dae_run(str(tmp_path / "b"), epochs=3, callbacks=[_InterruptAt(3)])
    assert load_training_state(tmp_path / "b" / "last.pt")["epoch"] == 2
    resumed, net_b = _dae_run(str(tmp_path / "b"), epochs=3, resume="auto", model_seed=9)  # other initial weights
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for key, value in net_a.state_dict().items():
        torch.testing.assert_close(net_b.state_dict()[key], value, rtol=0, atol=0)


def test_encoder_classifier_pools_the_code():
    ae = create_model("conv_dae", in_channels=1, widths=(4, 6))
    clf = EncoderClassifier(ae, 3, channels=6)
    assert clf(torch.rand(5, 1, 16, 16)).shape == (5, 3)
    with pytest.raises(TypeError, match="forward_features"):
        EncoderClassifier(torch.nn.Linear(2, 2), 3, 2)


def test_best_baseline_and_config_checks():
    r = RestorationResult("denoise", "conv_dae", {"noisy input": {"psnr": 20.0, "ssim": 0.3},
                                                  "median 3x3": {"psnr": 27.0, "ssim": 0.7},
                                                  "conv_dae": {"psnr": 31.0, "ssim": 0.9}}, [])
    assert r.best_baseline == ("median 3x3", {"psnr": 27.0, "ssim": 0.7})
    with pytest.raises(ValueError, match="task must be one of"):
        RestorationExperiment(task="inpaint")
    with pytest.raises(ValueError, match="labels_per_class"):
        PretrainExperiment(labels_per_class=(0,))


@pytest.mark.slow
def test_results_issue7_script_runs_every_experiment_in_quick_mode(capsys):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "benchmarks", "results_issue7.py")
    spec = importlib.util.spec_from_file_location("results_issue7", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--quick"])
    assert [r[0].split()[0] for r in rows] == ["denoise:", "superres:", "lowdose:", "Anomaly", "Pseudo-labels:",
                                               "Mean", "AE", "Stacked"]
    assert all(isinstance(r[3], bool) for r in rows)
    assert "QUICK: not the claims" in capsys.readouterr().out
