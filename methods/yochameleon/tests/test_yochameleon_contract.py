"""Yo'Chameleon passes the contract-test kit (unifybench.testing) on a tiny random-init Chameleon,
every task it has, generation included; on the rows layer, also its resume between epochs."""
from unifybench.testing import MethodContract, RowsContract

from unifybench_yochameleon.method import YoChameleon


class TestYoChameleon(RowsContract, MethodContract):
    method = YoChameleon
    args = {"model": "tiny", "epochs": "2", "max_negatives": "2", "gen_repeats": "2", "max_new_tokens": "4",
            "gen_batch": "2"}
    bad_args = [({"latent_tokens": "0"}, ">= 1"), ({"vqgan": "/nowhere/vqgan.ckpt"}, "not found"),
                ({"top_k": "-1"}, ">= 0"), ({"self_prompting": "maybe"}, "self_prompting")]
