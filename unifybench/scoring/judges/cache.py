"""Every reply in SQLite, keyed by call; each insert is committed before the next is recorded,
so a rerun makes no calls and a killed run loses at most the calls in flight. The judge and the
``icl-vlm`` method each keep their own file."""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import BenchError
from .. import judge_prompts


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    model: str = ""  # the model id the server says answered ('' when it said none)
    system_fingerprint: str = ""  # the server's backend configuration id, where it gives one


class JudgeCache:
    """Replies by call key (see ``Judge.call_key``)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, judge TEXT NOT NULL, "
                            "template TEXT NOT NULL, reply TEXT NOT NULL, prompt_tokens INTEGER, "
                            "completion_tokens INTEGER, created TEXT)")
            # A file damaged past its header opens fine and fails at the first read: check it now.
            verdict = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(verdict)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(calls)")}
            if "served" not in columns:  # a cache from before the served model was kept: same rows, one more column
                self.db.execute("ALTER TABLE calls ADD COLUMN served TEXT")
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: Exception) -> BenchError:
        return BenchError(f"unusable judge cache ({exc}); move it aside to start afresh", self.path)

    def get(self, key: str) -> Reply | None:
        try:
            row = self.db.execute("SELECT reply, prompt_tokens, completion_tokens, served FROM calls WHERE key = ?",
                                  (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None
        if not row:
            return None
        try:
            served = json.loads(row[3]) if row[3] else {}
        except ValueError:
            served = {}
        served = served if isinstance(served, dict) else {}
        return Reply(row[0], row[1] or 0, row[2] or 0, model=str(served.get("model") or ""),
                     system_fingerprint=str(served.get("system_fingerprint") or ""))

    def put(self, key: str, judge: str, reply: Reply, template: str = judge_prompts.TEMPLATE_VERSION) -> None:
        served = json.dumps({"model": reply.model, "system_fingerprint": reply.system_fingerprint})
        try:
            self.db.execute("INSERT OR REPLACE INTO calls (key, judge, template, reply, prompt_tokens, "
                            "completion_tokens, created, served) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (key, judge, template, reply.text, reply.prompt_tokens,
                             reply.completion_tokens, time.strftime("%Y-%m-%dT%H:%M:%S"), served))
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None

    def count(self) -> int:
        try:
            return self.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None

    def close(self) -> None:
        self.db.close()
