"""The compiled extension: it builds (CI fails otherwise), says why when it is not in use, the MEDCNN_NO_EXT opt-out
runs the reference with one warning, a failed build explains itself, and the CUDA sources compile with nvcc."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainsdk import ops
from trainsdk.ops import _extension

ROOT = Path(__file__).resolve().parents[3]


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=300)


def test_extension_is_compiled_unless_opted_out():
    """What CI relies on: without MEDCNN_NO_EXT the build must succeed and be in use."""
    status = ops.extension_status()
    if os.environ.get(_extension.ENV_DISABLE, "") not in ("", "0"):
        assert not status.compiled and _extension.ENV_DISABLE in status.reason
        return
    assert status.compiled, status.reason
    assert status.devices[0] == "cpu" and Path(status.library).is_file()
    assert "in use" in str(status)


def test_cpu_build_never_compiles_cuda_sources():
    cpu = _extension.sources(with_cuda=False)
    assert cpu[0].endswith("ops.cpp") and not any("/cuda/" in s for s in cpu)
    cuda = _extension.sources(with_cuda=True)
    assert any(s.endswith("bindings.cpp") for s in cuda) and any(s.endswith(".cu") for s in cuda)
    bindings = (_extension.CSRC / "cuda" / "bindings.cpp").read_text()
    assert "#ifdef MEDCNN_WITH_CUDA" in bindings  # inert even if a CPU build picked it up


NO_EXT_SCRIPT = """
import json, warnings
import torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from trainsdk import ops
    from trainsdk.models import create_model
    status = ops.extension_status()
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    y = ops.local_response_norm(x, 5) + ops.add_relu(x, x)
    y = ops.batch_norm_act(y, None, None, training=True)
    y.sum().backward()
    torch.manual_seed(0); fused = create_model("resnet18", num_classes=3, in_channels=1, fused=True, base_width=8)
    torch.manual_seed(0); plain = create_model("resnet18", num_classes=3, in_channels=1, base_width=8)
    inp = torch.randn(2, 1, 32, 32)
    diff = (fused.eval()(inp) - plain.eval()(inp)).abs().max().item()
mine = [str(w.message) for w in caught if "medcnn" in str(w.message)]
print(json.dumps(dict(compiled=status.compiled, reason=status.reason, warnings=mine, diff=diff,
                      has_op=hasattr(torch.ops.medcnn, "lrn"))))
"""


def test_no_ext_opt_out_uses_the_reference_with_one_warning():
    res = _run(NO_EXT_SCRIPT, MEDCNN_NO_EXT="1")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["compiled"] is False and "MEDCNN_NO_EXT=1" in out["reason"]
    assert len(out["warnings"]) == 1 and "reference" in out["warnings"][0]
    assert out["diff"] < 1e-5 and out["has_op"] is False  # nothing was loaded


def test_failed_build_explains_itself_and_how_to_opt_out(tmp_path):
    code = ("from trainsdk import ops\n"
            "print('STATUS', ops.extension_status().reason)\n"
            "ops.local_response_norm(__import__('torch').randn(1, 3, 4), 3)\n")
    res = _run(code, MEDCNN_EXT_BUILD_DIR=str(tmp_path), CXX="/bin/false")
    assert "STATUS build failed" in res.stdout
    assert res.returncode != 0 and "ExtensionBuildError" in res.stderr and "MEDCNN_NO_EXT=1" in res.stderr


def test_build_command_reports_status():
    res = subprocess.run([sys.executable, "-m", "trainsdk.ops.build"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert "medcnn extension" in res.stdout


def test_cuda_sources_compile_with_nvcc_for_sm80_and_sm90():
    """The framework-free .cu files must compile with plain nvcc (CUDA headers only) for both architectures."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        pytest.skip("nvcc not found: the CUDA sources cannot be compile-checked on this machine")
    if shutil.which("make") is None:
        pytest.skip("make not found")
    res = subprocess.run(["make", "-s", "cuda-check", f"NVCC={nvcc}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
