import os

import numpy as np
import pytest
import torch

from trainsdk.augment import AugmentationPolicyError
from trainsdk.training import load_model_checkpoint, load_training_state
from trainsdk.training.recipes import ClassifyRecipe, train_classifier

FAST = dict(model="lenet5_modern", data="digits", train_samples=120, batch_size=32, lr=3e-3, device="cpu",
            progress=False)


def _recipe(**kw) -> ClassifyRecipe:
    return ClassifyRecipe(**{**FAST, **kw})


def test_trains_tests_and_writes_an_exportable_checkpoint(tmp_path):
    result = train_classifier(_recipe(epochs=4, out_dir=str(tmp_path)))
    assert result.num_train == 120 and result.num_test == 359 and len(result.history) == 4
    assert set(result.test_metrics) == {"accuracy", "sensitivity", "specificity", "auroc"}
    assert result.test_metrics["accuracy"] > 0.5  # 10 classes: chance is 0.1

    # the figures are the metrics of the returned model on the test split
    from trainsdk.data import load_digits
    ref = load_digits(size=32, seed=0)
    result.model.eval()
    with torch.no_grad():
        pred = result.model(ref.x_test).argmax(1)
    assert result.test_metrics["accuracy"] == pytest.approx(float((pred == ref.y_test).float().mean()))

    # last.pt: a resumable training state that also rebuilds the model and carries the export metadata
    assert result.checkpoint == os.path.join(str(tmp_path), "last.pt") and os.path.isfile(result.checkpoint)
    state = load_training_state(result.checkpoint)
    meta = state["export_metadata"]
    assert meta["class_labels"] == [str(i) for i in range(10)]
    assert meta["preprocessing"]["intensity"] == "scale" and meta["preprocessing"]["output"] == "softmax"
    model, _ = load_model_checkpoint(result.checkpoint)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ref.x_test[:8]), result.model(ref.x_test[:8]))


def test_resume_from_a_mid_run_checkpoint_matches_the_uninterrupted_run(tmp_path):
    # augmentation draws from torch's global generator, which the Trainer checkpoints: resume is exact
    kw = dict(augment="classic", train_samples=64, seed=5, epochs=3)
    whole = train_classifier(_recipe(out_dir=str(tmp_path / "a"), trainer_kwargs={"keep_last": 3}, **kw))
    resumed = train_classifier(_recipe(out_dir=str(tmp_path / "b"), resume=str(tmp_path / "a" / "epoch_0002.pt"),
                                       **kw))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    np.testing.assert_allclose([h["train_loss"] for h in resumed.history],
                               [h["train_loss"] for h in whole.history], rtol=1e-6)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert resumed.test_metrics == pytest.approx(whole.test_metrics)


def test_resume_auto_on_a_finished_run_returns_at_once(tmp_path):
    first = train_classifier(_recipe(epochs=2, train_samples=32, out_dir=str(tmp_path)))
    again = train_classifier(_recipe(epochs=2, train_samples=32, out_dir=str(tmp_path), resume="auto"))
    assert again.history == first.history
    assert again.test_metrics == pytest.approx(first.test_metrics)


def test_same_seed_same_weights_other_seed_other_weights():
    a = train_classifier(_recipe(epochs=1, train_samples=32, augment="classic"))
    b = train_classifier(_recipe(epochs=1, train_samples=32, augment="classic"))
    c = train_classifier(_recipe(epochs=1, train_samples=32, augment="classic", seed=1))
    wa, wb, wc = (r.model.features.c1.weight for r in (a, b, c))
    torch.testing.assert_close(wa, wb)
    assert not torch.allclose(wa, wc)


@pytest.mark.parametrize("kw, error, match", [
    (dict(model="unet"), ValueError, "segmentation model"),
    (dict(data_kwargs={"size": 28}), ValueError, "28x28.*lenet5_modern"),
    (dict(optimizer="lbfgs"), ValueError, "optimizer must be one of"),
    (dict(model="resnet"), KeyError, "did you mean"),
    (dict(model_kwargs={"num_classes": 5}), ValueError, "num_classes=5 but the data has 10"),
    (dict(loss="dicey"), ValueError, "unknown loss"),
    (dict(trainer_kwargs={"lr": 1.0}), ValueError, "recipe fields"),
])
def test_bad_configurations_name_the_problem(kw, error, match):
    with pytest.raises(error, match=match):
        train_classifier(_recipe(epochs=1, **kw))


def test_augmentation_outside_the_clinical_profile_is_refused_before_training():
    with pytest.raises(AugmentationPolicyError, match="flip_axes"):
        _recipe(augment={"flip_axes": (0,)}, profile="chest_xray")
    _recipe(augment="classic", profile="chest_xray")  # the classic set passes every built-in profile


@pytest.mark.slow
def test_lenet5_on_digits_reaches_98_percent_in_under_two_minutes():
    result = train_classifier(ClassifyRecipe(model="lenet5_modern", data="digits", epochs=30, batch_size=64, lr=2e-3,
                                             augment={"translation": 0.06}, device="cpu", progress=False))
    assert result.test_metrics["accuracy"] >= 0.98
    assert result.seconds < 120
