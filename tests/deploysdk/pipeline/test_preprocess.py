"""Preprocessing specs: validation, metadata round trip, intensity modes."""
import json

import numpy as np
import pytest

from deploysdk.errors import InputError
from deploysdk.pipeline.preprocess import METADATA_KEY, Preprocessing


def test_metadata_round_trip():
    spec = Preprocessing(spacing=(2.0, 1.0, 1.0), intensity="window", window=(40, 400), output="softmax",
                         labels={0: "background", 1: "liver", 2: "lesion"})
    meta = spec.to_metadata()
    assert json.loads(meta[METADATA_KEY])["labels"] == {"0": "background", "1": "liver", "2": "lesion"}
    assert Preprocessing.from_metadata(meta) == spec
    assert Preprocessing.from_metadata({}) is None


@pytest.mark.parametrize("kw,match", [
    ({"intensity": "hist"}, "intensity must be one of"),
    ({"intensity": "window"}, "window=\\(center, width\\)"),
    ({"intensity": "window", "window": (40, 0)}, "width > 0"),
    ({"intensity": "scale", "scale": (0, 0)}, "divisor"),
    ({"output": "argmax"}, "output must be one of"),
    ({"clip_percentiles": (50, 10)}, "clip_percentiles"),
    ({"spacing": (1.0, -1.0)}, "spacing"),
])
def test_bad_specs_are_named(kw, match):
    with pytest.raises(InputError, match=match):
        Preprocessing(**kw)


def test_bad_metadata():
    with pytest.raises(InputError, match="unknown preprocessing fields"):
        Preprocessing.from_metadata({METADATA_KEY: json.dumps({"spacing": [1, 1], "gamma": 2})})
    with pytest.raises(InputError, match="not a valid preprocessing spec"):
        Preprocessing.from_metadata({METADATA_KEY: "{not json"})


def test_intensity_modes():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0], np.float32)
    np.testing.assert_allclose(Preprocessing(intensity="window", window=(40, 400)).normalize(hu),
                               [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(Preprocessing(intensity="scale", scale=(-1000, 2000)).normalize(hu),
                               (hu + 1000) / 2000)
    z = Preprocessing(intensity="zscore").normalize(hu)
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    mm = Preprocessing(intensity="minmax", clip_percentiles=(0, 100)).normalize(hu)
    assert mm.min() == 0 and mm.max() == 1 and mm.dtype == np.float32
    masked = Preprocessing(intensity="zscore", nonzero=True).normalize(np.array([0, 1, 3], np.float32))
    np.testing.assert_allclose(masked[1:], [-1, 1])
    assert np.all(Preprocessing(intensity="minmax").normalize(np.ones(4)) == 0)
