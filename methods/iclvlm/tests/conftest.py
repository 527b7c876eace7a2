"""The scripted OpenAI-compatible server of the harness's judge tests (tests/_judge_server.py) serves
these tests too: its folder is made importable."""
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[3] / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))
