import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `from tests.golden import ...` without installing the tests
    sys.path.insert(0, ROOT)


def pytest_configure(config):
    # Under pytest-xdist every worker gets one intra-op thread: workers x threads then matches the cores.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield
