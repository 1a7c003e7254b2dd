"""``trainsdk`` command line: ``train`` end to end (train -> ``deploysdk export`` -> ``deploysdk.Runtime``) and its
one-line errors."""
import os

import numpy as np
import pytest
import torch

from deploysdk import Runtime
from deploysdk import cli as deploy_cli
from deploysdk.pipeline.preprocess import Preprocessing
from trainsdk import cli

TINY_SEGMENT = ["train", "--model", "unet", "--task", "segment", "--data", "phantoms", "--data-arg", "n=8",
                "--data-arg", "size=32", "--model-arg", "base_width=4", "--model-arg", "depth=2", "--epochs", "1",
                "--device", "cpu", "--quiet", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_train_then_export_then_run_in_the_runtime(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(TINY_SEGMENT + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    ckpt = out / "last.pt"
    assert f"deploysdk export {ckpt}" in printed and "dice/2" in printed

    onnx_path = str(tmp_path / "unet.onnx")
    assert deploy_cli.main(["export", str(ckpt), onnx_path]) == 0
    with Runtime(onnx_path, backend="onnxruntime", device="cpu") as rt:
        spec = Preprocessing.from_metadata(rt.metadata)
        assert spec is not None and spec.labels == {0: "background", 1: "organ", 2: "lesion"}
        assert spec.output == "softmax" and spec.spacing == (1.0, 1.0)
        from trainsdk.data import make_phantoms
        x = make_phantoms(n=2, size=(32, 32), seed=7).images
        got = rt.run({"input": x})["output"]
    from trainsdk.training import load_model_checkpoint
    model, _ = load_model_checkpoint(ckpt)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_train_classifier_with_transfer_from_a_weights_file(tmp_path, capsys):
    from trainsdk.models import create_model
    torch.manual_seed(0)
    weights = tmp_path / "pre.pt"
    torch.save(create_model("lenet5_modern", num_classes=4).state_dict(), weights)
    args = ["train", "--model", "lenet5_modern", "--task", "classify", "--data", "digits", "--train-samples", "40",
            "--epochs", "1", "--transfer", "finetune", "--layer-lr-decay", "0.5", "--weights", str(weights),
            "--out", str(tmp_path / "ft"), "--device", "cpu", "--quiet", "--threads", "1"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "'classifier.output.weight': 'new head: left as initialised'" in printed
    assert "missing=[], unexpected=[]" in printed and "40 train / 359 test" in printed
    assert os.path.isfile(tmp_path / "ft" / "last.pt")


@pytest.mark.parametrize("extra, message", [
    (["--model", "unett"], "unknown model 'unett'"),
    (["--stage", "layer3"], "--stage need(s) --transfer"),
    (["--transfer", "frozen"], "--transfer frozen needs --weights"),
    (["--transfer", "truncate", "--stage", "down1", "--classifier", "svm"], "--classifier do(es) not apply"),
    (["--data-arg", "sise=32"], "unexpected argument(s) ['sise']"),
    (["--augment", "classic", "--profile", "chest_xrays"], "unknown clinical profile 'chest_xrays'"),
    (["--resume", "nowhere.pt"], "training state not found: nowhere.pt"),
])
def test_errors_are_one_line_with_exit_status_2(tmp_path, capsys, extra, message):
    args = TINY_SEGMENT + ["--out", str(tmp_path / "e")] + extra
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trainsdk train: error: ") and message in err and "\n" not in err


def test_bad_key_value_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(TINY_SEGMENT + ["--data-arg", "n"])
    assert exit_info.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err
