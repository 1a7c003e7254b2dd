"""Small configurations of zoo models for tests: same layout, cheaper dense heads, 1 channel, 3 classes."""
from trainsdk.models import create_model, model_entry

# The dense layers of VGG/AlexNet/FCN dominate their cost; shrinking them keeps the conv layout under test.
# FCN's score layers start at zero (as in the paper), which would make output comparisons trivial.
SMALL = {"vgg": dict(hidden_dim=64), "alexnet": dict(hidden_dim=64),
         "fcn": dict(hidden_dim=64, zero_init_scores=False)}


def small_model(name: str, **kw):
    return create_model(name, num_classes=3, in_channels=1, **{**SMALL.get(model_entry(name).family, {}), **kw})
