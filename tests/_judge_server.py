"""A small OpenAI-compatible chat-completions server for the judge tests, on 127.0.0.1.

It runs in a thread of the test process on an ephemeral port; the command line under test (a
subprocess) talks to it over a real socket. Behaviour is set per test:

- ``plan``: a list of actions consumed one per request before the default applies:
  ``"429"``, ``"500"``, ``"drop"`` (close the connection without a reply), ``"slow"`` (sleep
  ``slow_s`` before answering), ``"badjson"`` (a 200 whose body is not JSON).
- ``mode``: how requests are answered after the plan: ``"normal"`` ("Score: X" with X chosen from
  the request content), ``"chatty"`` (reasoning around a labelled score), ``"garbage"`` (no score),
  ``"garbage-then-ok"`` (garbage, but a proper score to a re-ask), ``"some-garbage"`` (no score
  for about one request in four, asked again or not), ``"fail"`` (always 500),
  ``"fail-on"`` (500 when the request contains ``fail_marker``, normal otherwise),
  ``"deepjson"`` (a 200 whose body is 100,000 nested JSON arrays),
  ``"out-of-range"`` (a signed or exponent score: ``Score: -1``, ``Score: 1e308``, ``Score: 0.5e1``).
- ``delay_s``: sleep before every answer (a slow judge, for kill-and-resume tests).
- ``mode="trickle"``: a 200 whose body comes one byte every ``trickle_s`` seconds (each read is quick,
  the whole reply is not: only a total deadline bounds it).

- ``responder``: a function of the request body giving the reply text, in place of ``mode``'s
  (a scripted model for the ``icl-vlm`` tests); ``served_model`` and ``system_fingerprint``: what
  the replies say answered (default: the requested model, and no fingerprint).

Everything received is logged (``requests``: headers and parsed bodies), with the number of calls
and the most requests ever in flight at once.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REASK_MARKER = "must be exactly one line"  # a phrase of judge_prompts.REASK_SUFFIX


class _QuietServer(ThreadingHTTPServer):
    """A client that gives up mid-reply (a run stopping on a bad cache, a timeout) is expected here:
    the socketserver's default prints the BrokenPipe traceback into the stderr the tests read."""

    def handle_error(self, request, client_address):
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class JudgeServer:
    def __init__(self, mode: str = "normal"):
        self.mode = mode
        self.plan: list[str] = []
        self.delay_s = 0.0
        self.slow_s = 0.6
        self.trickle_s = 1.0
        self.fail_marker = "FAIL-ME"
        self.responder = None
        self.served_model: str | None = None
        self.system_fingerprint: str | None = None
        self.requests: list[dict] = []
        self.answered = 0  # 200 replies with a chat completion
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "JudgeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @staticmethod
    def content_text(body: dict) -> str:
        parts = []
        for message in body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            else:
                parts.extend(c.get("text", "") for c in content if c.get("type") == "text")
        return "\n".join(parts)

    def digest(self, body: dict) -> bytes:
        """A hash of a request's text (the re-ask marker removed) and its images, so that a re-ask
        is answered like its question, and each image of a prompt on its own."""
        images = [c.get("image_url", {}).get("url", "") for m in body.get("messages", [])
                  if not isinstance(m.get("content"), str) for c in m["content"] if c.get("type") == "image_url"]
        text = self.content_text(body).replace(REASK_MARKER, "")
        return hashlib.sha256("\n".join([text, *images]).encode()).digest()

    def score_for(self, body: dict) -> str:
        return ("0", "0.5", "1")[self.digest(body)[0] % 3]

    def reply_text(self, body: dict) -> str:
        text = self.content_text(body)
        score = self.score_for(body)
        if self.mode == "chatty":
            return (f"Let me compare the two carefully.\nThe candidate mentions the main fact.\n"
                    f"**Score: {score}**\nHope that helps!")
        if self.mode == "garbage":
            return "I would rather talk about the weather."
        if self.mode == "some-garbage":  # about one request in four, re-asks included, gets no score
            return "No idea, sorry." if self.digest(body)[1] % 4 == 0 else f"Score: {score}"
        if self.mode == "out-of-range":
            return ("Score: -1", "Score: 1e308", "Score: 0.5e1")[self.digest(body)[1] % 3]
        if self.mode == "garbage-then-ok":
            return f"Score: {score}" if REASK_MARKER in text else "Hmm, hard to say really."
        return f"Score: {score}"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # one write per response (headers and body apart meet delayed ACKs: 40 ms)

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, payload: bytes, extra: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    action = server.plan.pop(0) if server.plan else None
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    self._answer(action, body)
                finally:
                    with server.lock:
                        server.inflight -= 1

            def _answer(self, action, body):
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": "not found"}')
                    return
                if server.delay_s:
                    time.sleep(server.delay_s)
                if action == "401echo":  # as some proxies do: the request's headers in the error body
                    self._send(401, json.dumps({"error": "bad key", "headers": dict(self.headers)}).encode())
                    return
                if action == "401echo-late":  # the key straddling the 200th character of the body
                    self._send(401, json.dumps({"pad": "x" * 154,
                                                "authorization": self.headers.get("Authorization")}).encode())
                    return
                if action == "429":
                    self._send(429, b'{"error": "rate limited"}', {"Retry-After": "0"})
                    return
                if action == "500" or server.mode == "fail" or (
                        server.mode == "fail-on" and server.fail_marker in server.content_text(body)):
                    self._send(500, b'{"error": "server error"}')
                    return
                if action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if action == "slow":
                    time.sleep(server.slow_s)
                if action == "badjson":
                    self._send(200, b"<html>oops</html>")
                    return
                if server.mode == "deepjson":  # 100,000 nested arrays: a parser that recurses overflows
                    self._send(200, b"[" * 100000 + b"]" * 100000)
                    return
                if server.mode == "trickle":
                    payload = json.dumps({"choices": [{"message": {"content": "Score: 1"}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    try:
                        for i in range(len(payload)):
                            self.wfile.write(payload[i:i + 1])
                            self.wfile.flush()
                            time.sleep(server.trickle_s)
                    except (BrokenPipeError, ConnectionResetError, OSError):
                        pass
                    return
                text = server.responder(body) if server.responder else server.reply_text(body)
                payload = {"id": "cmpl-test", "object": "chat.completion",
                           "model": server.served_model or body.get("model"),
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}
                if server.system_fingerprint is not None:
                    payload["system_fingerprint"] = server.system_fingerprint
                try:
                    self._send(200, json.dumps(payload).encode())
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (timed out) first
                with server.lock:
                    server.answered += 1

        return Handler
