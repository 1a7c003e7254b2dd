import numpy as np
import pytest
import torch

from deploysdk.pipeline.preprocess import Preprocessing
from trainsdk.metrics import dice_score
from trainsdk.training import load_training_state
from trainsdk.training.recipes import SegmentRecipe, build_augment, train_segmenter
from trainsdk.training.recipes.segment import crop_to

TINY_UNET = {"base_width": 4, "depth": 2}


def _recipe(**kw) -> SegmentRecipe:
    base = dict(model="unet", model_kwargs=TINY_UNET, data="phantoms", data_kwargs={"n": 12, "size": 32},
                epochs=2, lr=3e-3, batch_size=4, device="cpu", progress=False)
    return SegmentRecipe(**{**base, **kw})


def test_segmenter_metrics_per_class_and_checkpoint_metadata(tmp_path):
    result = train_segmenter(_recipe(out_dir=str(tmp_path), val_fraction=0.2, augment="classic"))
    m = result.test_metrics
    for name in ("dice", "iou", "hd95"):
        assert {name, f"{name}/1", f"{name}/2"} <= set(m)
    for k in (1, 2):  # per case IoU = D / (2 - D) <= D, so the means keep the order
        assert 0.0 <= m[f"iou/{k}"] <= m[f"dice/{k}"] <= 1.0
    assert m["dice"] == pytest.approx((m["dice/1"] + m["dice/2"]) / 2)
    assert "val_dice" in result.history[-1] and result.best_checkpoint is not None

    state = load_training_state(result.checkpoint)
    spec = Preprocessing.from_dict(state["export_metadata"]["preprocessing"])
    assert spec.spacing == (1.0, 1.0) and spec.output == "softmax"
    assert spec.labels == {0: "background", 1: "organ", 2: "lesion"}
    assert state["task"] == "segmentation"


def test_organ_dice_matches_an_independent_computation():
    from trainsdk.data import make_phantoms

    result = train_segmenter(_recipe(epochs=1, seed=2))
    _, test = make_phantoms(n=12, size=(32, 32)).split(0.2, 2)  # data seed 0 (data_kwargs); split by the recipe seed
    with torch.no_grad():
        pred = result.model.eval()(torch.from_numpy(test.images)).argmax(1).numpy()
    per_case = [dice_score(p, t, num_classes=3)[1] for p, t in zip(pred, test.masks)]
    assert result.test_metrics["dice/1"] == pytest.approx(float(np.mean(per_case)))


def test_3d_unet_trains_on_volumes():
    result = train_segmenter(SegmentRecipe(model="unet3d", model_kwargs={"base_width": 2, "depth": 1},
                                           data="phantoms", data_kwargs={"n": 4, "size": 32, "ndim": 3}, epochs=1,
                                           batch_size=2, device="cpu", progress=False, test_fraction=0.25))
    assert result.num_test == 1 and np.isfinite(result.history[-1]["train_loss"])
    assert 0.0 <= result.test_metrics["dice/1"] <= 1.0


def test_crop_to_takes_the_centre():
    y = torch.arange(2 * 6 * 6).reshape(2, 6, 6)
    torch.testing.assert_close(crop_to(y, (2, 4)), y[:, 2:4, 1:5])
    assert crop_to(y, (6, 6)) is y
    with pytest.raises(ValueError, match="does not fit"):
        crop_to(y, (8, 6))


def test_classic_augmentation_moves_image_and_mask_together():
    torch.manual_seed(0)
    pipeline = build_augment("classic", "abdomen_ct")
    mask = torch.zeros(4, 32, 32, dtype=torch.int64)
    mask[:, 10:22, 8:20] = 1
    image = mask[:, None].float()  # the image is its own mask
    out, moved = pipeline(image, mask)
    assert moved.dtype == torch.int64 and not torch.equal(moved, mask)
    agree = ((out[:, 0] > 0.5).long() == moved).float().mean()
    assert agree > 0.98  # nearest vs bilinear differ only along edges


def test_classification_model_is_refused():
    with pytest.raises(ValueError, match="classification model"):
        train_segmenter(_recipe(model="resnet18"))


@pytest.mark.slow
def test_unet_on_phantoms_reaches_dice_090():
    result = train_segmenter(SegmentRecipe(model="unet", model_kwargs={"base_width": 16, "depth": 3},
                                           data="phantoms", data_kwargs={"n": 300, "size": 64}, epochs=25, lr=3e-3,
                                           device="cpu", progress=False))
    assert result.test_metrics["dice"] >= 0.90
