"""icl-vlm passes the contract-test kit (unifybench.testing) against the scripted local server."""
from _scripted import JudgeServer, scripted_reply
from unifybench.testing import MethodContract

from unifybench_iclvlm.method import ICLVLM


class TestICLVLM(MethodContract):
    method = ICLVLM
    tasks = ("rec", "vqa", "text_only", "choice")
    bad_args = [({"format": "gpt"}, "expected one of"), ({"k_images": "-1"}, ">= 0"),
                ({"base_url": "localhost:8000"}, "expected an http(s) URL")]

    @classmethod
    def setup_class(cls):
        cls._server = JudgeServer().__enter__()
        cls._server.responder = scripted_reply
        cls.args = {"base_url": cls._server.base_url, "model": "test-vlm", "k_images": "2", "backoff": "0.01",
                    "api_key_env": "UNIFYBENCH_NO_KEY_NEEDED"}
        super().setup_class()

    @classmethod
    def teardown_class(cls):
        super().teardown_class()
        cls._server.__exit__(None, None, None)
