"""Helpers of the fused-op tests: tolerances per dtype and the input layouts every op is tried on."""
import torch


def assert_close(actual, expected, rtol=None, atol=None):
    tol = {torch.float32: (2e-5, 2e-6), torch.float64: (1e-10, 1e-12)}.get(expected.dtype, (0, 0))
    torch.testing.assert_close(actual, expected, rtol=tol[0] if rtol is None else rtol,
                               atol=tol[1] if atol is None else atol)


def layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values as contiguous, channels-last, and two non-contiguous views (x: 4-D)."""
    n, c, h, w = x.shape
    wide = torch.zeros(n, c, h, 2 * w, dtype=x.dtype)
    wide[..., ::2] = x
    return {
        "contiguous": x.contiguous(),
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "strided": wide[..., ::2],  # every other column of a wider tensor
        "transposed": x.transpose(2, 3).contiguous().transpose(2, 3),
    }


def leaf(x: torch.Tensor) -> torch.Tensor:
    """A leaf that requires grad and keeps x's strides (clone() preserves the memory format of dense tensors)."""
    return x.detach().clone().requires_grad_(True) if x.is_contiguous() or x.is_contiguous(
        memory_format=torch.channels_last) else x.detach().requires_grad_(True)
