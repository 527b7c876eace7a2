"""RAP passes the contract-test kit (unifybench.testing) on a tiny random-init LLaVA, every task it
declares, captions included."""
from unifybench.testing import MethodContract

from unifybench_rap.method import RAP


class TestRAP(MethodContract):
    method = RAP
    args = {"model": "tiny", "max_new_tokens": "4"}
    bad_args = [({"conv": "v2"}, "expected one of v1, v0"), ({"max_new_tokens": "0"}, ">= 1"),
                ({"temperature": "-1"}, ">= 0")]
