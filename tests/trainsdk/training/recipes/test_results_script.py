import importlib.util
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "benchmarks", "results_issue5.py")


@pytest.mark.slow
def test_results_script_runs_every_experiment_in_quick_mode(capsys):
    spec = importlib.util.spec_from_file_location("results_issue5", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--quick"])
    assert [r[0].split()[0] for r in rows] == ["LeNet-5", "ResNet-18", "U-Net", "Transfer:", "Augmentation:"]
    assert all(isinstance(r[3], bool) for r in rows)
    assert "QUICK: not the claims" in capsys.readouterr().out
