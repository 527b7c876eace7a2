"""The ``icl-vlm`` method: a chat endpoint's vision-language model, the concept in its prompt.

``personalize`` chooses the concept's k reference photos (the first k of its cropped training photos
where the benchmark has them, else of its training photos) and saves a manifest of them (paths,
sha256) and the description: that is the state. ``answer`` builds one chat request per question in
the chosen format (:mod:`.formats`) and sends it through the judges' transport (retries with
backoff, a total deadline per call, ``concurrency`` calls in flight), each reply kept in the
concept's reply cache (``state/<concept>/replies.sqlite``), so a rerun asks nothing twice.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from unifybench.errors import BenchError
from unifybench.kit.args import Arg
from unifybench.kit.files import read_json, write_json_atomic
from unifybench.logs import get_logger
from unifybench.methods import Method
from unifybench.records import file_digest
from unifybench.scoring.answers import is_refusal
from unifybench.scoring.judges import Judge, JudgeConfig, OpenAIBackend
from unifybench.scoring.judges.config import redact_url

from . import formats

_LOG = get_logger("method.icl-vlm")
MANIFEST = "references.json"
REPLY_CACHE = "replies.sqlite"
ENDPOINT_RECORD = "endpoint.json"

class ICLVLM(Method):
    """Any VLM behind an OpenAI-compatible ``/chat/completions`` endpoint, personalized in context."""

    name = "icl-vlm"
    tasks = frozenset({"rec", "vqa", "text_only", "choice", "caption"})  # caption: the question as any other
    arguments = {
        "base_url": Arg(str, None, "the endpoint root, e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1"),
        "model": Arg(str, None, "the model name the endpoint serves (its `model` field)"),
        "api_key_env": Arg(str, "OPENAI_API_KEY", "the environment variable holding the key (the key itself is never recorded)"),
        "k_images": Arg(int, 1, "reference photos in each prompt (0: the description only)", low=0, high=16),
        "use_description": Arg(bool, True, "put the concept's description in the prompt"),
        "format": Arg(str, "plain", "the prompt format (see the method card)", choices=formats.FORMATS),
        "image_max_side": Arg(int, 1024, "longest side of every image sent, in pixels", low=32, high=4096),
        "temperature": Arg(float, 0.0, "sampling temperature", low=0, high=2),
        "seed": Arg(int, None, "the API's sampling seed; none: the run's --seed", low=0),
        "max_tokens": Arg(int, 64, "longest reply asked for", low=1, high=32768),
        "concurrency": Arg(int, 4, "requests in flight at once", low=1, high=256),
        "timeout": Arg(float, 120.0, "seconds a whole request may take before it is retried", above=0, high=3600),
        "retries": Arg(int, 5, "retries per request after the first try", low=0, high=100),
        "backoff": Arg(float, 1.0, "first wait before a retry in seconds, doubled per retry, with jitter", low=0, high=600),
    }

    @classmethod
    def check_arguments(cls, args):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.api_key_env or ""):
            raise BenchError(f"not an environment variable name: {args.api_key_env!r}", where="--method-arg api_key_env")
        if args.base_url is not None:
            url = urlsplit(args.base_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise BenchError(f"expected an http(s) URL, got {redact_url(args.base_url)!r}",
                                 where="--method-arg base_url")
            if url.username or url.password:  # the URL is recorded in run.json: no key in it
                raise BenchError(f"credentials in the URL ({redact_url(args.base_url)}): give the key through "
                                 f"${args.api_key_env} instead", where="--method-arg base_url")
        if args.format == "yochameleon" and args.k_images > 0 and args.use_description:
            raise BenchError("Yo'Chameleon's image-prompt baseline puts no description in the prompt: give "
                             "use_description=false, or k_images=0 for its text-prompt baseline",
                             where="--method-arg format")
        if args.k_images == 0 and not args.use_description:
            raise BenchError("with k_images=0 and use_description=false the prompt holds nothing of the concept",
                             where="--method-arg k_images")

    @classmethod
    def check_run(cls, args, concepts, tasks):
        missing = [name for name in ("base_url", "model") if not args[name]]
        if missing:
            raise BenchError(f"needs --method-arg {' and '.join(f'{m}=...' for m in missing)} (the endpoint and the "
                             f"model it serves; see the method card)", where="method icl-vlm")
        if args.use_description:
            bare = [c.name for c in concepts if not c.description.strip()]
            if bare and args.k_images == 0:
                raise BenchError(f"concept(s) {', '.join(bare)} have no description and k_images=0",
                                 where="method icl-vlm")
        if args.k_images:
            few = [c.name for c in concepts if len(cls.reference_pool(c)) < args.k_images]
            if few:
                raise BenchError(f"concept(s) {', '.join(few)} have fewer than k_images={args.k_images} training photos",
                                 where="method icl-vlm")

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self._backend: OpenAIBackend | None = None

    @property
    def api_seed(self) -> int:
        return self.seed if self.args.seed is None else self.args.seed

    def _config(self) -> JudgeConfig:
        a = self.args
        return JudgeConfig(spec=f"openai:{a.model}", base_url=a.base_url, api_key_env=a.api_key_env,
                           concurrency=a.concurrency, timeout=a.timeout, retries=a.retries, backoff=a.backoff,
                           max_tokens=a.max_tokens, seed=self.api_seed)

    def backend(self) -> OpenAIBackend:
        if self._backend is None:  # one client (and its pooled connections) for every concept
            self._backend = OpenAIBackend(self._config(), temperature=self.args.temperature,
                                          image_max_side=self.args.image_max_side, user_agent="unifybench-icl-vlm")
        return self._backend

    def describe(self):
        a = self.args
        return {"endpoint": a.base_url, "model": a.model, "api_key_env": a.api_key_env, "format": a.format,
                "template_version": formats.TEMPLATE_VERSION, "k_images": a.k_images,
                "use_description": a.use_description, "image_encoding": f"jpeg q90 max{a.image_max_side}",
                "sampling": {"temperature": a.temperature, "seed": self.api_seed, "max_tokens": a.max_tokens},
                "request": "OpenAI chat completions; images as image_url parts holding base64 JPEG data URLs",
                "served": f"per concept in state/<concept>/{ENDPOINT_RECORD} (served model ids, "
                          f"system_fingerprint, refusals)"}

    # ------------------------------------------------------------------ state
    @staticmethod
    def reference_pool(concept) -> list[Path]:
        return list(concept.cropped_train_images or concept.train_images)

    def _manifest(self, concept) -> dict:
        """What the predictions stand for: the chosen photos (resolved paths: a resume from another
        working directory finds them), the token and the description."""
        chosen = [Path(p).resolve() for p in self.reference_pool(concept)[: self.args.k_images]]
        return {"concept": concept.name, "token": concept.token,
                "description": concept.description if self.args.use_description else "",
                "images": [str(p) for p in chosen]}

    def personalize(self, concept, state_dir):
        manifest = self._manifest(concept)
        manifest["images"] = [{"path": p, "sha256": file_digest(Path(p))} for p in manifest["images"]]
        write_json_atomic(Path(state_dir) / MANIFEST, manifest)
        return self.load_state(concept, state_dir)

    def load_state(self, concept, state_dir):
        path = Path(state_dir) / MANIFEST
        manifest = read_json(path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("images"), list) or \
                not all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in manifest["images"]):
            raise BenchError("missing or unreadable reference manifest; move the run directory aside to start "
                             "afresh", path)
        # Photos, token and description come from the concept, never from the run directory (it may come
        # from someone else, and the photos are sent to the endpoint); the file keeps their digests.
        expected = self._manifest(concept)
        if [e["path"] for e in manifest["images"]] != expected["images"] or \
                {k: manifest.get(k) for k in ("concept", "token", "description")} != \
                {k: expected[k] for k in ("concept", "token", "description")}:
            raise BenchError("the reference manifest is not the one this concept and these arguments give (other "
                             "photos, token or description); move the run directory aside to choose again", path)
        for entry in manifest["images"]:  # the predictions stand for these bytes: refuse others
            if not Path(entry["path"]).is_file() or file_digest(Path(entry["path"])) != entry.get("sha256"):
                raise BenchError(f"reference photo {entry['path']} is missing or changed since it was chosen; "
                                 f"move the run directory aside to choose again", path)
        return {"manifest": manifest, "state_dir": Path(state_dir)}

    # ------------------------------------------------------------------ answering
    def requests_for(self, concept, state, requests) -> list:
        manifest = state["manifest"]
        refs = [Path(e["path"]) for e in manifest["images"]]
        out = []
        for r in requests:
            q = formats.Question(r.task, r.question, formats.question_stem(r.question, r.options), tuple(r.options), r.image)
            out.append(formats.build(self.args.format, manifest["token"], manifest["description"], refs, q))
        return out

    def answer(self, concept, state, requests):
        chats = self.requests_for(concept, state, requests)
        client = Judge(self._config(), state["state_dir"] / REPLY_CACHE, backend=self.backend(),
                       template=formats.TEMPLATE_VERSION, what="icl-vlm")
        try:
            replies = client.ask(chats)
        finally:
            client.cache.close()
        self._record_endpoint(state["state_dir"], requests, replies)
        return [r.text for r in replies]

    def _record_endpoint(self, state_dir: Path, requests, replies) -> None:
        """What answered, by request key: served model id, system_fingerprint, refusal. Kept per concept
        (merged across batches and reruns), summed in the file's ``totals``."""
        path = state_dir / ENDPOINT_RECORD
        record = read_json(path)
        if not isinstance(record, dict) or not isinstance(record.get("replies"), dict):
            record = {"replies": {}}  # none yet (or half-written by a kill): these replies start it again
        for req, reply in zip(requests, replies):
            record["replies"][req.key] = {"served_model": reply.model, "system_fingerprint": reply.system_fingerprint,
                                          "refused": is_refusal(reply.text)}
        rows = record["replies"].values()
        record["totals"] = {"replies": len(record["replies"]), "refusals": sum(r["refused"] for r in rows),
                            "served_models": dict(Counter(r["served_model"] for r in rows)),
                            "system_fingerprints": dict(Counter(r["system_fingerprint"] for r in rows))}
        write_json_atomic(path, record)
        if record["totals"]["refusals"]:
            _LOG.info(f"{state_dir.name}: {record['totals']['refusals']} refusal(s) so far (scored as wrong)")
