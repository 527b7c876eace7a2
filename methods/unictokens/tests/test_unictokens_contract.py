"""UniCTokens and its prompt row pass the contract-test kit (unifybench.testing) on tiny random-init
models: Janus (fast) for the three-stage training (on the rows layer: also its resume after every
epoch of every stage), Show-o for the untrained row."""
from unifybench.testing import MethodContract, RowsContract

from unifybench_unictokens.method import TextPrompt, UniCTokens


class TestUniCTokensOnJanus(RowsContract, MethodContract):
    method = UniCTokens
    args = {"backend": "janus", "model": "tiny", "epochs": "1", "transition_images": "1", "max_new_tokens": "4"}
    tasks = ("rec", "vqa", "gen")
    bad_args = [({"epochs": "0"}, "expected an integer >= 1"), ({"steps": "10"}, "only the showo backend"),
                ({"transition_rule": "late_change"}, "needs an iterative"), ({"epoch": "3"}, "needs checkpoint")]


class TestTextPromptOnShowo(MethodContract):
    method = TextPrompt
    args = {"model": "tiny", "steps": "2", "max_new_tokens": "4"}
    tasks = ("vqa", "gen")
    bad_args = [({"backend": "chameleon"}, "expected one of showo, janus"), ({"temperature": "0"}, "> 0")]
