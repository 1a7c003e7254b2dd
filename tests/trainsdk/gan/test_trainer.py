"""GANTrainer on tiny models and 16x16 toy data: every game runs with finite losses, checkpoints hold both players,
resume is exact, and bad setups are explained before training."""
import json
import math
import os
import warnings

import pytest
import torch

from trainsdk.gan import GAN_STATE_FORMAT, GANConfig, GANTrainer, NonFiniteGANLossError, PerceptualLoss, \
    load_gan_state, train_gan
from trainsdk.models import create_model
from trainsdk.training import load_model_checkpoint

SIZE = 16


def blobs(n=16, seed=0):
    """Toy images: a bright square at one of two places (two modes) on a dark background, in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1, SIZE, SIZE), -1.0)
    labels = torch.randint(0, 2, (n,), generator=gen)
    for i, k in enumerate(labels.tolist()):
        x[i, :, 2 + 8 * k:6 + 8 * k, 4:10] = 1.0
    return x + 0.1 * torch.randn(x.shape, generator=gen), labels


def pair(kind="dcgan", seed=0, **d_kw):
    torch.manual_seed(seed)
    g_name, d_name = f"{kind}_generator", f"{kind}_discriminator"
    g_kw = dict(num_labels=2) if kind == "acgan" else {}
    d_kw = dict(num_classes=2, **d_kw) if kind == "acgan" else d_kw
    G = create_model(g_name, image_size=SIZE, width=4, latent_dim=8, **g_kw)
    D = create_model(d_name, image_size=SIZE, width=4, **d_kw)
    return G, D


def _finite(history, *keys):
    return all(math.isfinite(r[k]) for r in history for k in keys)


@pytest.mark.parametrize("step", ["minimax", "nonsaturating"])
def test_minimax_games_train_with_finite_losses(step):
    x, _ = blobs()
    G, D = pair()
    before = [p.clone() for p in G.parameters()]
    tr = train_gan(G, D, x, GANConfig(max_epochs=2, batch_size=8, label_smoothing=0.1), step=step)
    assert [r["epoch"] for r in tr.history] == [1, 2] and tr.d_steps == tr.g_steps == 4
    assert _finite(tr.history, "d_loss", "g_loss", "d_real", "d_fake")
    assert 0 < tr.history[-1]["d_real"] < 1
    assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))


def test_wgan_gp_with_n_critic_and_spectral_norm():
    x, _ = blobs()
    torch.manual_seed(0)
    G = create_model("dcgan_generator", image_size=SIZE, width=4, latent_dim=8)
    C = create_model("wgan_critic", width=4, depth=2, spectral_norm=True)
    tr = train_gan(G, C, x, GANConfig(max_epochs=1, batch_size=8, n_critic=2, lr_d=4e-4, lr_g=1e-4), step="wgan_gp")
    rec = tr.history[0]
    assert (tr.d_steps, tr.g_steps) == (2, 1)  # one generator update per two critic updates
    assert _finite(tr.history, "d_loss", "g_loss", "gp", "wasserstein")
    assert tr.opt_d.param_groups[0]["lr"] == 4e-4 and tr.opt_g.param_groups[0]["lr"] == 1e-4  # TTUR
    assert rec["gp"] >= 0


def test_acgan_trains_both_heads(tmp_path):
    x, y = blobs()
    G, D = pair("acgan")
    cfg = GANConfig(step="acgan", max_epochs=1, batch_size=8, out_dir=str(tmp_path), num_samples=4)
    tr = train_gan(G, D, (x, y), cfg)
    assert _finite(tr.history, "d_loss", "g_loss", "d_aux", "g_aux", "class_acc_real", "class_acc_fake")
    grid = tmp_path / "samples" / "epoch_0001.png"
    from PIL import Image
    assert Image.open(grid).size == (2 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)  # one row per class, 2 per row


def test_paired_context_gan_with_gdl_perceptual_and_conditional_critic():
    gen = torch.Generator().manual_seed(0)
    mr = torch.rand(16, 1, SIZE, SIZE, generator=gen)
    ct = 1.0 - mr + 0.05 * torch.randn(mr.shape, generator=gen)  # an invertible "modality" map
    torch.manual_seed(0)
    G = create_model("context_gan_cascade", stages=2, width=4, levels=1, norm=None)  # eval == train mode
    C = create_model("wgan_critic", in_channels=2, width=4, depth=2)  # sees (source, image)
    feat = PerceptualLoss(create_model("lenet5_modern", num_classes=2), ["features.act1"])
    cfg = GANConfig(step="paired", adversarial="wgan_gp", max_epochs=2, batch_size=8, gdl_weight=1.0, lr_g=1e-3,
                    perceptual_weight=0.1, condition_discriminator=True)
    with pytest.raises(ValueError, match="needs a perceptual_loss"):
        GANTrainer(G, C, (mr, ct), cfg)
    pixel = lambda: torch.nn.functional.mse_loss(G.eval()(mr).detach(), ct)  # noqa: E731
    start = pixel()
    tr = train_gan(G, C, (mr, ct), cfg, perceptual_loss=feat)
    assert _finite(tr.history, "d_loss", "g_loss", "pixel", "gdl", "perceptual", "gp")
    assert pixel() < start  # the L2 term pulls G towards the targets
    assert tr.history[1]["pixel"] < tr.history[0]["pixel"]


def test_checkpoint_holds_both_players_and_exports_the_generator(tmp_path):
    x, _ = blobs()
    G, D = pair()
    cfg = GANConfig(max_epochs=2, batch_size=8, out_dir=str(tmp_path), ema_decay=0.5, sample_every=2)
    tr = train_gan(G, D, x, cfg)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["format"] == GAN_STATE_FORMAT and state["epoch"] == 2
    assert state["generator"]["model_name"] == "dcgan_generator"
    assert state["discriminator"]["model_name"] == "dcgan_discriminator"
    assert set(state["optimizer_g"]) == {"state", "param_groups"} and state["optimizer_d"]["state"]
    model, _ = load_model_checkpoint(tmp_path / "last.pt")  # top level: the deployable (EMA) generator
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, tr.ema.state_dict()[k])
    assert not torch.equal(tr.ema.state_dict()["head.weight"], tr.G.state_dict()["head.weight"])
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[1]["d_loss"] == tr.history[1]["d_loss"]
    assert sorted(os.listdir(tmp_path / "samples")) == ["epoch_0002.png"]


def _run(tmp_path, epochs, resume=None):
    x, _ = blobs(16)
    G = create_model("dcgan_generator", image_size=SIZE, width=4, latent_dim=8)
    C = create_model("wgan_critic", width=4, depth=2)
    cfg = GANConfig(step="wgan_gp", max_epochs=epochs, batch_size=8, n_critic=2, ema_decay=0.9, device="cpu",
                    out_dir=str(tmp_path), sample_every=0)  # bitwise: CUDA convolutions need not be deterministic
    torch.manual_seed(123)  # the weights a resumed run starts from do not matter: the checkpoint replaces them
    return train_gan(G, C, x, cfg, resume=resume)


def test_resume_continues_exactly(tmp_path):
    full = _run(tmp_path / "full", 4)
    _run(tmp_path / "cut", 2)
    resumed = _run(tmp_path / "cut", 4, resume="auto")
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in ((full.G, resumed.G), (full.D, resumed.D), (full.ema, resumed.ema)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    for key in ("d_loss", "g_loss", "gp"):
        assert [r[key] for r in full.history] == [r[key] for r in resumed.history]
    assert (resumed.d_steps, resumed.g_steps) == (full.d_steps, full.g_steps) == (8, 4)


def test_resume_warns_about_changed_settings(tmp_path):
    x, _ = blobs()
    G, D = pair()
    train_gan(G, D, x, GANConfig(max_epochs=1, batch_size=8, out_dir=str(tmp_path), sample_every=0))
    with pytest.warns(UserWarning, match="lr_d 0.0002 -> 0.001"):
        train_gan(G, D, x, GANConfig(max_epochs=2, batch_size=8, out_dir=str(tmp_path), sample_every=0,
                                     lr_d=1e-3), resume="auto")
    torch.save({"state_dict": {}}, tmp_path / "model_only.pt")
    with pytest.raises(Exception, match="not a GAN training state"):
        load_gan_state(tmp_path / "model_only.pt")


def test_mismatched_setups_are_explained_before_training():
    x, y = blobs()
    G, D = pair()
    small = GANConfig(batch_size=8)
    with pytest.raises(ValueError, match=r"makes images of shape \(1, 16, 16\) but the data holds \(1, 8, 8\)"):
        GANTrainer(G, D, x[:, :, :8, :8], small)
    three = create_model("dcgan_discriminator", image_size=SIZE, width=4, num_classes=3)
    with pytest.raises(ValueError, match=r"one logit/score per image.*num_classes=1"):
        GANTrainer(G, three, x, small)
    Ga, Da = pair("acgan")
    acgan = GANConfig(step="acgan", batch_size=8)
    with pytest.raises(TypeError, match="needs a discriminator with real/fake and class heads"):
        GANTrainer(Ga, D, (x, y), acgan)
    with pytest.raises(ValueError, match="conditioned on 2 classes.*classifies 3"):
        GANTrainer(Ga, create_model("acgan_discriminator", image_size=SIZE, width=4, num_classes=3), (x, y), acgan)
    with pytest.raises(ValueError, match=r"integer labels in \[0, 2\)"):
        GANTrainer(Ga, Da, (x, y.float()), acgan)
    with pytest.raises(ValueError, match="step must be one of"):
        GANConfig(step="pix2pix")
    with pytest.raises(ValueError, match="adversarial='wgan_gp' is not supported"):
        GANConfig(step="acgan", adversarial="wgan_gp")
    with pytest.raises(ValueError, match="no batch per epoch"):
        GANTrainer(G, D, x[:4], GANConfig(batch_size=8))


def test_non_finite_loss_stops_before_the_update():
    x, _ = blobs()
    G, D = pair()
    x[3] = float("nan")
    before = [p.clone() for p in D.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NonFiniteGANLossError, match="discriminator loss is nan at epoch 1"):
            train_gan(G, D, x, GANConfig(max_epochs=1, batch_size=16))
    assert all(torch.equal(a, b) for a, b in zip(before, D.parameters()))


def test_gradient_penalty_through_a_fused_critic_matches_the_unfused_one():
    from trainsdk.gan import gradient_penalty

    x, _ = blobs()
    G, D = pair()
    torch.manual_seed(0)
    plain = create_model("wgan_critic", width=4, depth=2, fused=False)
    fused = create_model("wgan_critic", width=4, depth=2, fused=True)
    fused.load_state_dict(plain.state_dict())
    real, fake = torch.randn(6, 1, 16, 16), torch.randn(6, 1, 16, 16)
    grads = []
    for critic in (plain, fused):
        gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
        params = list(critic.parameters())
        g = torch.autograd.grad(gp, params, allow_unused=True)  # the last bias does not move the input gradient
        grads.append((gp.detach(), [torch.zeros_like(p) if d is None else d for d, p in zip(g, params)]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    GANTrainer(G, fused, x, GANConfig(step="wgan_gp", batch_size=8))  # accepted
    with pytest.warns(UserWarning, match="critic has batch norm"):
        GANTrainer(G, D, x, GANConfig(step="wgan_gp", batch_size=8))
