import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Recipes train real models: one intra-op thread (two threads on a shared 2-core machine run 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
