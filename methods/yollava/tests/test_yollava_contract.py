"""Yo'LLaVA and its two reference rows pass the contract-test kit (unifybench.testing) on a tiny
random-init LLaVA; Yo'LLaVA, on the rows layer, also its resume between epochs (RowsContract)."""
from unifybench.testing import MethodContract, RowsContract

from unifybench_yollava.method import LLaVAPrompt, YoLLaVA


class TestYoLLaVA(RowsContract, MethodContract):
    method = YoLLaVA
    args = {"model": "tiny", "epochs": "2", "positives_per_photo": "1", "max_hard": "2", "max_easy": "2",
            "max_new_tokens": "4"}
    tasks = ("rec", "vqa", "choice")
    bad_args = [({"epoch": "3"}, "needs checkpoint=DIR"), ({"epoch": "last"}, "a number or 'best'"),
                ({"weight_decay": "-5"}, ">= 0")]


class TestLLaVAPrompt(MethodContract):
    method = LLaVAPrompt
    args = {"model": "tiny", "max_new_tokens": "4"}
    tasks = ("rec", "text_only")
    bad_args = [({"descriptions": "/nowhere.json"}, "file not found")]
