"""The example plugin's own tests: the contract-test kit, and one number checked by hand."""
import numpy as np
from PIL import Image

from unifybench.testing import MethodContract

from unifybench_retrieval.method import Retrieval, tiny_image


class TestRetrieval(MethodContract):
    method = Retrieval
    bad_args = [({"threshold": "2"}, "expected a number >= -1, <= 1"), ({"side": "many"}, "expected an integer")]


def test_a_photo_is_most_similar_to_itself(tmp_path):
    gradient = np.linspace(0, 255, 16 * 16 * 3).reshape(16, 16, 3).astype("uint8")
    Image.fromarray(gradient).save(tmp_path / "a.png")
    vector = tiny_image(tmp_path / "a.png", 8)
    assert vector.shape == (192,) and np.isclose(vector @ vector, 1.0)
