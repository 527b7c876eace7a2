"""The three Stable Diffusion methods pass the contract-test kit (unifybench.testing), on the tiny
pipeline of diffusers' tests: 2 sampling steps, 2 training steps."""
from unifybench.testing import MethodContract

from unifybench_diffusion.method import DreamBoothLoRA, TextualInversion

QUICK = {"model": "tiny", "steps": "2", "gen_batch": "2"}


class TestTextualInversion(MethodContract):
    method = TextualInversion
    args = {**QUICK, "train_steps": "2", "accumulation": "1"}
    tasks = ("gen",)
    bad_args = [({"dtype": "float16"}, "expected bfloat16 or float32"), ({"flip_p": "1.5"}, "<= 1"),
                ({"lr": "nan"}, "finite"), ({"embeds": "/nowhere"}, "folder not found")]


class TestDreamBoothLoRA(MethodContract):
    method = DreamBoothLoRA
    args = {**QUICK, "train_steps": "2"}
    tasks = ("gen",)
    bad_args = [({"prior": "perhaps"}, "expected true or false"), ({"identifier": " "}, "must not be empty"),
                ({"rank": "0"}, ">= 1")]


class TestSDPrompt(MethodContract):
    method = "sd-prompt"  # by its registered name: the entry point a user's run resolves
    args = QUICK
    tasks = ("gen", "attr_gen")
    bad_args = [({"scheduler": "fast"}, "expected one of ddim")]
