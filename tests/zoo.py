"""Small configurations of zoo models for tests: same layout, cheaper dense heads, 1 channel, 3 classes."""
from trainsdk.models import create_model, model_entry

# The dense layers of VGG/AlexNet/FCN dominate their cost; shrinking them keeps the conv layout under test.
# FCN's score layers start at zero (as in the paper), which would make output comparisons trivial.
SMALL = {"vgg": dict(hidden_dim=64), "alexnet": dict(hidden_dim=64),
         "fcn": dict(hidden_dim=64, zero_init_scores=False),
         "gans": dict(width=8)}  # every GAN config has a base channel width

# Per model where a family's models differ in fields. RED-Net's residual output needs out == in channels (3 != 1).
SMALL_BY_NAME = {**{f"rednet{n}": dict(width=16, residual=False) for n in (10, 20, 30)},
                 "cross_modality_net": dict(base_width=8), "conv_dae": dict(widths=(16, 16)),
                 "stacked_ae": dict(hidden_sizes=(64, 16)), "stacked_ae_classifier": dict(hidden_sizes=(64, 16))}


def small_model(name: str, **kw):
    per_name = SMALL_BY_NAME.get(name, {})
    return create_model(name, num_classes=3, in_channels=1,
                        **{**SMALL.get(model_entry(name).family, {}), **per_name, **kw})
