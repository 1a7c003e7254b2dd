"""deploysdk.io runs on a clinical host without torch: importing it loads no torch, trainsdk or optional reader."""
import subprocess
import sys

import pytest


def test_import_loads_no_torch_and_no_optional_reader():
    code = ("import sys, deploysdk.io; "
            "print(sorted(m for m in ('torch', 'trainsdk', 'pydicom', 'nibabel', 'PIL', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_reading_loads_no_torch(tmp_path):
    code = ("import sys, numpy as np, deploysdk.io as io; "
            f"io.write_dicom_series(np.zeros((2, 3, 3)), {str(tmp_path)!r}); "
            f"v = io.read_dicom_series({str(tmp_path)!r}); "
            f"io.write_nifti(v.array, v.affine, {str(tmp_path / 'v.nii')!r}); "
            "io.resample_to_spacing(v, (0.5, 0.5, 0.5)); "
            "print('torch' in sys.modules, 'trainsdk' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_missing_dependency_names_pip_package(monkeypatch):
    from deploysdk.errors import MissingDependencyError
    from deploysdk.io import _deps, read_nifti

    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install nibabel"):
        read_nifti("x.nii")
    assert issubclass(MissingDependencyError, ImportError) and _deps.require("numpy", "x").__name__ == "numpy"
