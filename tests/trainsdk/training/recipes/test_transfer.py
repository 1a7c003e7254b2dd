import numpy as np
import pytest
import torch

from trainsdk.models import create_model
from trainsdk.models.weights import WeightsError
from trainsdk.training.recipes import (ClassifyRecipe, FeatureExtractorRegime, FineTuneRegime, FrozenFeaturesRegime,
                                       TruncateRegime, extract_features, head_name, load_pretrained, load_truncated,
                                       make_regime, stage_param_groups, train_classifier, truncate_model,
                                       with_input_channels)


def _resnet(**kw):
    torch.manual_seed(0)
    return create_model("resnet18", **{"base_width": 8, **kw})


@pytest.mark.parametrize("name, head", [("resnet18", "fc"), ("lenet5", "classifier.output"), ("unet", "head")])
def test_head_name_is_the_layer_that_makes_the_logits(name, head):
    kw = {"base_width": 4, "depth": 2} if name == "unet" else {"base_width": 8} if name == "resnet18" else {}
    assert head_name(create_model(name, **kw)) == head


def test_torchvision_style_rgb_weights_load_into_a_grey_model(tmp_path):
    source = _resnet()  # 3 channels, 1000 classes: the layout of torchvision's ImageNet state_dict
    path = tmp_path / "rgb.pth"
    torch.save(source.state_dict(), path)
    model = _resnet(in_channels=1, num_classes=2)
    report = load_pretrained(model, path, verbose=False)
    assert report.ok and report.adapted == {"conv1.weight": "3->1 channels"}
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.layer3[0].conv1.weight, source.layer3[0].conv1.weight)


def test_missing_and_unexpected_keys_are_reported_and_strict_refuses(tmp_path, capsys):
    state = _resnet(num_classes=2).state_dict()
    state["extra.weight"] = torch.zeros(3)
    del state["layer4.1.bn2.running_mean"]
    model = _resnet(num_classes=2)
    with pytest.raises(WeightsError, match=r"missing keys \['layer4.1.bn2.running_mean'\].*extra.weight"):
        load_pretrained(model, state, verbose=False)
    report = load_pretrained(model, state, strict=False)
    assert report.missing == ["layer4.1.bn2.running_mean"] and report.unexpected == ["extra.weight"]
    assert "missing=['layer4.1.bn2.running_mean']" in capsys.readouterr().out


def test_with_input_channels_gives_a_grey_image_the_colour_response():
    rgb = _resnet(num_classes=3).eval()
    grey = with_input_channels(rgb, 1).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


def test_stage_param_groups_decay_towards_the_input():
    model = _resnet(num_classes=2)
    groups = stage_param_groups(model, lr=1.0, decay=0.5)
    assert [g["lr"] for g in groups] == [0.0625, 0.125, 0.25, 0.5, 1.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    assert any(p is model.conv1.weight for p in groups[0]["params"])  # the stem goes with layer1
    assert [id(p) for p in groups[-1]["params"]] == [id(model.fc.weight), id(model.fc.bias)]
    with pytest.raises(ValueError, match="layer_lr_decay"):
        stage_param_groups(model, 1.0, 0.0)


def _lesion_subset():
    from trainsdk.data import make_lesion_classification
    return make_lesion_classification(n_per_class=8, size=32, seed=0)


def test_frozen_features_regime_trains_only_the_head():
    model = _resnet(in_channels=1, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = _lesion_subset()
    prepared = FrozenFeaturesRegime().prepare(model, 1e-2, 3)
    from trainsdk.training import Trainer, TrainerConfig
    from trainsdk.training.recipes.classify import _make_step
    trainer = Trainer(model, TrainerConfig(max_epochs=1, batch_size=8, device="cpu", progress=False),
                      train_data=(torch.from_numpy(s.images), torch.from_numpy(s.labels)),
                      step_fn=_make_step(torch.nn.CrossEntropyLoss(), None, prepared.frozen),
                      optimizer=lambda _: torch.optim.SGD(prepared.param_groups, lr=1e-2))
    trainer.fit()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc.weight", "fc.bias"}  # batch-norm running statistics included


def test_truncate_cuts_after_the_stage_and_rebuilds_from_its_checkpoint(tmp_path):
    base = _resnet(in_channels=1, num_classes=10)
    net = truncate_model(base, "layer2", num_classes=3)
    assert net.fc.in_features == 16 and net.model_name == "resnet18@layer2"
    keys = set(net.state_dict())
    assert "body.layer2.1.conv2.weight" in keys and not any(k.startswith("body.layer3") for k in keys)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_features(x), base.layer2(base.layer1(base.maxpool(base.relu(
            base.bn1(base.conv1(x)))))))
    from trainsdk.training import save_model_checkpoint
    save_model_checkpoint(net, tmp_path / "t.pt")
    again = load_truncated(tmp_path / "t.pt")
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), net.eval()(x))
    with pytest.raises(ValueError, match=r"stage 'layer9' is not called.*\['layer1', 'layer2', 'layer3', 'layer4'\]"):
        truncate_model(base, "layer9", 3)


def test_truncate_inside_a_sequential_stage():
    net = truncate_model(create_model("lenet5"), "features.s4", num_classes=2)
    assert net(torch.randn(3, 1, 32, 32)).shape == (3, 2) and net.fc.in_features == 16


def test_feature_extractor_folds_the_logistic_regression_into_the_head():
    s = _lesion_subset()
    train, test = s.split(0.25, 0)
    recipe = ClassifyRecipe(model="resnet18", model_kwargs={"base_width": 8}, data=train.dataset(),
                            test_data=test.dataset(), transfer="features", device="cpu", progress=False)
    result = train_classifier(recipe)
    x_te, y_te = extract_features(result.model, test.dataset())
    expected = result.classifier.predict_proba(x_te)
    with torch.no_grad():
        folded = torch.softmax(result.model.eval()(torch.from_numpy(test.images)).double(), 1).numpy()
    np.testing.assert_allclose(folded, expected, atol=1e-5)
    assert result.test_metrics["accuracy"] == pytest.approx(float((expected.argmax(1) == y_te).mean()))
    assert result.history == []


def test_feature_extractor_with_an_svm_keeps_the_head():
    s = _lesion_subset()
    recipe = ClassifyRecipe(model="resnet18", model_kwargs={"base_width": 8}, data=s.dataset(), device="cpu",
                            transfer=FeatureExtractorRegime("svm"), progress=False, test_fraction=0.25)
    result = train_classifier(recipe)
    assert type(result.classifier[-1].estimator).__name__ == "SVC" and result.checkpoint is None
    assert 0.0 <= result.test_metrics["auroc"] <= 1.0


def test_make_regime_names_and_errors():
    assert make_regime("finetune", layer_lr_decay=0.5) == FineTuneRegime(0.5)
    assert make_regime(None) is None
    with pytest.raises(ValueError, match="unknown transfer regime 'fine'"):
        make_regime("fine")
    with pytest.raises(TypeError, match="accepted: \\['stage', 'freeze'\\]"):
        make_regime("truncate", depth=2)
    with pytest.raises(ValueError, match="stage must name"):
        TruncateRegime()
    with pytest.raises(ValueError, match="classifier must be one of"):
        FeatureExtractorRegime("forest")
