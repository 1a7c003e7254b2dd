"""Shared fixtures of the fused-op tests: the compiled extension (built once per session, cached on disk)."""
import os

import pytest
import torch

from trainsdk import ops


@pytest.fixture(scope="session")
def ext():
    """The compiled ops. Without MEDCNN_NO_EXT a failed build fails every test that uses this (CI must build);
    with it, those tests are skipped (the reference path has its own tests)."""
    if os.environ.get(ops._extension.ENV_DISABLE, "") not in ("", "0"):
        pytest.skip("MEDCNN_NO_EXT is set: the compiled extension is disabled")
    status = ops.load()
    assert status.compiled, status.reason
    return torch.ops.medcnn

