"""Sample grids (PNG) and latent-space utilities."""
import numpy as np
import pytest
import torch
from PIL import Image

from trainsdk.gan import image_grid, interpolate_latents, latent_arithmetic, save_image_grid


def test_grid_png_is_written_with_the_images_in_place(tmp_path):
    imgs = torch.stack([torch.full((1, 4, 5), v) for v in (-1.0, 0.0, 1.0)])  # (3, 1, 4, 5)
    path = tmp_path / "samples" / "epoch_0001.png"
    grid = save_image_grid(imgs, path, nrow=2, value_range=(-1, 1), padding=1)
    back = np.asarray(Image.open(path))
    np.testing.assert_array_equal(back, grid)
    assert back.shape == (2 * 5 + 1, 2 * 6 + 1)  # 2 rows x 2 columns of 4x5 plus 1-px padding
    assert back[1, 1] == 0 and back[1, 7] == 128 and back[6, 1] == 255 and back[6, 7] == 0  # last cell: padding
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch_0001.png"]  # no temporary file left


def test_grid_rgb_and_errors():
    rgb = image_grid(np.random.default_rng(0).random((4, 3, 2, 2)), nrow=4, padding=0)
    assert rgb.shape == (2, 8, 3) and rgb.min() == 0 and rgb.max() == 255  # auto range: min -> 0, max -> 255
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with N >= 1 and C = 1 or 3"):
        image_grid(np.zeros((2, 2, 4, 4)))


def test_linear_interpolation_endpoints_and_midpoint():
    z0, z1 = torch.zeros(1, 1, 4), torch.ones(1, 1, 4)
    path = interpolate_latents(z0, z1, steps=5)
    assert path.shape == (5, 1, 4)
    torch.testing.assert_close(path[0], z0[0], rtol=0, atol=0)
    torch.testing.assert_close(path[-1], z1[0], rtol=0, atol=0)
    torch.testing.assert_close(path[2], torch.full((1, 4), 0.5))


def test_spherical_interpolation_keeps_the_norm():
    z0 = torch.tensor([3.0, 0.0])
    z1 = torch.tensor([0.0, 3.0])
    path = interpolate_latents(z0, z1, steps=3, method="slerp")
    assert path.shape == (3, 2)
    torch.testing.assert_close(path.norm(dim=1), torch.full((3,), 3.0))
    torch.testing.assert_close(path[1], torch.tensor([3.0, 3.0]) / 2 ** 0.5)
    assert interpolate_latents(z0, z1, steps=3)[1].norm() < 3.0  # the linear midpoint shrinks
    same = interpolate_latents(z0, 2 * z0, steps=3, method="slerp")  # parallel: falls back to linear
    torch.testing.assert_close(same[1], 1.5 * z0)
    batch = interpolate_latents(torch.randn(2, 1, 3), torch.randn(2, 1, 3), steps=4, method="slerp")
    assert batch.shape == (8, 1, 3)
    with pytest.raises(ValueError, match="method must be"):
        interpolate_latents(z0, z1, method="cubic")
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        interpolate_latents(z0, z1, steps=1)


def test_latent_arithmetic_averages_each_group():
    a = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 2.0]])
    c = torch.tensor([[5.0, 5.0]])
    torch.testing.assert_close(latent_arithmetic(a, b, c), torch.tensor([[7.0, 3.0]]))
    with pytest.raises(ValueError, match="codes of one shape"):
        latent_arithmetic(a, b, torch.zeros(1, 3))
