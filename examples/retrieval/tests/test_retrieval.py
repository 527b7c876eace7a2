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
    Image.fromarray(gradient[::-1]).save(tmp_path / "b.png")  # the same pixels, upside down
    a, b = tiny_image(tmp_path / "a.png", 8), tiny_image(tmp_path / "b.png", 8)
    assert a.shape == (192,) and np.isclose(a @ a, 1.0) and a @ b < 0
    # By hand: a 16 px gradient halved to 8 px is the 8 x 8 block means, centred and normalised.
    by_hand = gradient.astype(np.float64).reshape(8, 2, 8, 2, 3).mean(axis=(1, 3)).reshape(-1)
    by_hand -= by_hand.mean()
    assert np.allclose(a, by_hand / np.linalg.norm(by_hand), atol=0.02)
