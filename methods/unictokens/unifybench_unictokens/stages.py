"""UniCTokens' three stages and transition, written against :class:`backend.UnifiedBackend` only.

Rows, in the published order (docs/formats.md §4): the identifier ``<c>``, then ``<token_0>`` ...
``<token_31>``: 16 shared (stage 1), 8 generation (stage 2), 8 understanding (stage 3).

State folder of one concept::

    stage1/ epoch_<N>_embed.pt, epoch_<N>_lm_head_weight.pt, epoch_<N>_lm_head_bias.pt, unictokens.json
    stage2/ ... (25 rows)
    transition/ understanding_init.pt, unictokens.json
    stage3/ ... (33 rows)

A stage is finished when its ``unictokens.json`` says ``"finished": true``; a rerun skips finished
stages and redoes an unfinished one from its start.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from unifybench.kit import rows as kit_rows
from unifybench.errors import BenchError
from unifybench.kit.files import read_json, write_json_atomic
from unifybench.kit.rows import EpochLoop
from unifybench.kit.rows import RowTrainer, checkpoint_epochs, save_rows  # noqa: F401  (re-exported: the stages' files)
from unifybench.seeding import derive_seed

from .backend import TextExample, UnifiedBackend

N_SHARED, N_GEN, N_UND = 16, 8, 8
STAGE_ROWS = {1: 1 + N_SHARED, 2: 1 + N_SHARED + N_GEN, 3: 1 + N_SHARED + N_GEN + N_UND}


TRANSITION_RULES = ("late_change", "lowest_prob")


@dataclass
class TrainConfig:
    """The authors' settings (``train_w_3_stages/``) are the defaults; a tuple holds stages 1, 2, 3."""

    lr: float = 1e-3
    weight_decay: tuple[float, float, float] = (1e-4, 1e-3, 1e-3)
    adam_eps: tuple[float, float, float] = (1e-6, 1e-8, 1e-8)
    epochs_stage1: int = 20
    epochs_stage2: int = 20
    epochs_stage3: int = 20
    stage2_init_epoch: int = 15  # stage 2 starts from stage 1's epoch 15
    image_weight: float = 0.8
    text_weight: float = 0.2
    train_batch: tuple[int, int, int] = (4, 1, 1)  # understanding (and generation) examples per step
    augment: bool = True  # stages 2, 3: a new random crop and flip of the generation photos each epoch
    kmeans_seed: int = 0
    transition_images: int = 20  # images generated for the transition
    # late_change (the paper's: positions whose MaskGIT prediction at transition_step differs from the
    # final code) or lowest_prob (the least probable codes: Janus's stand-in)
    transition_rule: str = "late_change"
    transition_step: int = 35
    transition_fraction: float = 0.25  # lowest_prob: share of each image's positions taken as the least sure
    guidance: float = 5.0
    temperature: float = 1.0
    seed: int = 0


@dataclass
class TokenGroups:
    identifier: str
    shared: list[str] = field(default_factory=lambda: [f"<token_{i}>" for i in range(N_SHARED)])
    generation: list[str] = field(default_factory=lambda: [f"<token_{i}>" for i in range(N_SHARED, N_SHARED + N_GEN)])
    understanding: list[str] = field(default_factory=lambda: [f"<token_{i}>" for i in range(N_SHARED + N_GEN, N_SHARED + N_GEN + N_UND)])

    def rows(self, n_rows: int) -> list[str]:
        """Token strings of the first ``n_rows`` rows, in the published order."""
        return ([self.identifier] + self.shared + self.generation + self.understanding)[:n_rows]

    def understanding_prefix(self, n_rows: int) -> str:
        und = "".join(self.understanding) if n_rows >= STAGE_ROWS[3] else ""
        return f"{self.identifier} is {''.join(self.shared)}{und}."

    def generation_phrase(self, n_rows: int) -> str:
        gen = "".join(self.generation) if n_rows >= STAGE_ROWS[2] else ""
        return f"{''.join(self.shared)}{gen} {self.identifier}"


# ----------------------------------------------------------------------------- k-means


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 50) -> torch.Tensor:
    """Seeded k-means (k-means++ start, Lloyd iterations) on CPU float32; returns [k, d] centres."""
    g = torch.Generator().manual_seed(seed)
    x = x.detach().float().cpu().reshape(-1, x.shape[-1])
    if len(x) == 0:
        raise BenchError("k-means needs at least one point", where="unictokens init")
    if len(x) < k:  # too few points: jitter copies so every centre exists
        extra = x[torch.randint(len(x), (k - len(x),), generator=g)]
        x = torch.cat([x, extra + 1e-3 * x.std().clamp(min=1e-6) * torch.randn(extra.shape, generator=g)])
    centres = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).min(1).values.pow(2)
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1 / len(d2))
        centres = torch.cat([centres, x[torch.multinomial(probs, 1, generator=g)]])
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        new = centres.clone()
        for j in range(k):
            members = x[assign == j]
            if len(members):
                new[j] = members.mean(0)
        if torch.allclose(new, centres):
            break
        centres = new
    return centres


# ----------------------------------------------------------------------------- checkpoints


def load_rows(folder: Path, epoch: int | None, width: int, map_location="cpu") -> tuple[dict[str, torch.Tensor], int]:
    """A public-format checkpoint of one of the stages' row counts (17, 25 or 33)."""
    return kit_rows.load_rows(folder, epoch, width, allowed_rows=STAGE_ROWS.values(),
                             rows_help=" (<c> + 16 shared [+ 8 generation [+ 8 understanding]])",
                             map_location=map_location)


def write_json(path: Path, data: dict) -> None:
    write_json_atomic(path, data, indent=1)


def read_meta(folder: Path) -> dict | None:
    meta = read_json(folder / "unictokens.json")
    return meta if isinstance(meta, dict) else None


# ----------------------------------------------------------------------------- training


def _batches(items: list, size: int, rng: random.Random) -> list[list]:
    order = list(items)
    rng.shuffle(order)
    return [order[i:i + size] for i in range(0, len(order), size)]


@dataclass
class ConceptData:
    """What the stages train on, prepared by the method from a concept."""

    identifier: str
    class_noun: str
    kind: str  # human | animal | object
    conversations: list[tuple[str, object, str]]  # (question, image or None, answer), concept named by its token
    train_images: list  # photos (stage 1 k-means)
    cropped_images: list  # generation targets (stage 2)
    face_embedding: torch.Tensor | None = None  # human concepts: mean identity embedding of the photos
    face_note: str = ""  # how it was made, or why there is none


class Personalizer:
    """Runs (or resumes) stage 1, stage 2, the transition and stage 3 for one concept."""

    def __init__(self, backend: UnifiedBackend, cfg: TrainConfig, base_model: str,
                 log: Callable[[str], None] | None = None, progress: Callable[[str, int, int], None] | None = None):
        self.b = backend
        self.cfg = cfg
        self.base_model = base_model
        self.log = log or (lambda msg: None)
        # progress(what, done, total): the epochs of the three stages and the transition, as they finish
        self._progress = progress or (lambda what, done, total: None)
        self._total = cfg.epochs_stage1 + cfg.epochs_stage2 + cfg.epochs_stage3 + 1
        self._done = 0

    def _step_done(self, what: str) -> None:
        self._done += 1
        self._progress(what, self._done, self._total)

    # ---------------------------------------------------------------- helpers
    def text_examples(self, data: ConceptData, groups: TokenGroups, n_rows: int) -> list[TextExample]:
        prefix = groups.understanding_prefix(n_rows)
        return [TextExample(self.b.understanding_prompt(prefix, q, training=True), img, a)
                for q, img, a in data.conversations]

    def image_examples(self, data: ConceptData, groups: TokenGroups, n_rows: int, codes: torch.Tensor):
        prompt = f"A photo of {groups.generation_phrase(n_rows)}."
        return [(prompt, codes[i]) for i in range(len(codes))]

    def _meta(self, stage: str, groups: TokenGroups, n_rows: int, **extra) -> dict:
        return {"format": "unictokens-rows/1", "stage": stage, "base_model": self.base_model,
                "backend": self.b.describe(), "rows": groups.rows(n_rows),
                "groups": {"identifier": groups.identifier, "shared": groups.shared,
                           "generation": groups.generation if n_rows >= STAGE_ROWS[2] else [],
                           "understanding": groups.understanding if n_rows >= STAGE_ROWS[3] else []},
                "lm_head_bias": ("trained" if self.b.has_head_bias() else
                                 "zeros: the base model's text head has no bias"),
                "train_args": asdict(self.cfg), **extra}

    def _train(self, stage: int, folder: Path, groups: TokenGroups, train_tokens: list[str], epochs: int,
               init_rows: dict[str, torch.Tensor], data: ConceptData, codes: torch.Tensor | None,
               init_note: dict) -> dict[str, torch.Tensor]:
        tokens = groups.rows(STAGE_ROWS[stage])
        with self.b.new_tokens(tokens, init_rows) as ids:  # this concept's rows exist only while it trains
            return self._train_rows(stage, folder, groups, tokens, ids, train_tokens, epochs, init_rows, data,
                                    codes, init_note)

    def _train_rows(self, stage, folder, groups, tokens, ids, train_tokens, epochs, init_rows, data, codes,
                    init_note) -> dict[str, torch.Tensor]:
        cfg, n_rows = self.cfg, STAGE_ROWS[stage]
        trained_at = [tokens.index(t) for t in train_tokens]
        train_ids = [ids[i] for i in trained_at]
        texts = self.text_examples(data, groups, n_rows)
        images = self.image_examples(data, groups, n_rows, codes) if stage >= 2 else []
        rng = random.Random(f"{cfg.seed}/{stage}/{groups.identifier}")
        draws = torch.Generator().manual_seed(derive_seed(cfg.seed, stage, groups.identifier, "draws"))
        augment = stage >= 2 and cfg.augment and self.b.augments_generation_data
        batch_size = cfg.train_batch[stage - 1]
        # The masters start from init_rows themselves: the model holds them rounded to its dtype.
        trainer = RowTrainer(self.b, train_ids, lr=cfg.lr, weight_decay=cfg.weight_decay[stage - 1],
                             eps=cfg.adam_eps[stage - 1], init={k: v[trained_at] for k, v in init_rows.items()})
        try:
            # resumable after any epoch: the trainer, both generators and the record so far
            loop = EpochLoop(folder, {"stage": stage, "tokens": tokens, "train_tokens": list(train_tokens),
                                      "train_args": asdict(cfg), "base_model": self.base_model}, epochs,
                             trainer=trainer, generators={"order": rng, "draws": draws},
                             record={"losses": [], "steps": 0}, first=1)
            losses = loop.record["losses"]
            for epoch in loop:
                if augment:  # a new random crop and flip of every generation photo, as the authors' loader
                    fresh = self.b.encode_images(data.cropped_images or data.train_images, augment=draws)
                    images = self.image_examples(data, groups, n_rows, fresh)
                tb = _batches(texts, batch_size, rng) if texts else []
                ib = _batches(images, batch_size, rng) if images else []
                n_steps = max(len(tb), len(ib)) if stage >= 2 else len(tb)
                sums = {"loss": 0.0, "text": 0.0, "image": 0.0}
                for s in range(n_steps):
                    loss = torch.zeros((), device=self.b.device)
                    if tb:
                        lt = self.b.text_loss(tb[s % len(tb)])
                        sums["text"] += float(lt.detach())
                        loss = loss + (cfg.text_weight if ib else 1.0) * lt
                    if ib:
                        batch = ib[s % len(ib)]
                        li = self.b.image_loss([p for p, _ in batch], torch.stack([c for _, c in batch]),
                                               generator=draws)
                        sums["image"] += float(li.detach())
                        loss = loss + (cfg.image_weight if tb else 1.0) * li
                    sums["loss"] += trainer.step(loss)
                    loop.record["steps"] += 1
                row = {"epoch": epoch, **{k: v / max(n_steps, 1) for k, v in sums.items()}}
                losses.append(row)
                rows = trainer.exact_rows(ids, init_rows)
                save_rows(folder, epoch, rows)
                self.log(f"stage {stage} epoch {epoch}/{epochs}: loss {row['loss']:.4f}")
                self._step_done(f"stage {stage} epoch {epoch}/{epochs}")
                loop.epoch_done(epoch)
            rows = trainer.exact_rows(ids, init_rows)  # the last epoch's (also when resumed after it)
        finally:
            trainer.close()
        loop.finish(folder / "unictokens.json", self._meta(
            f"stage{stage}", groups, n_rows, epochs=epochs, steps=loop.record["steps"], losses=losses,
            trained=[groups.identifier] + [t for t in train_tokens if t != groups.identifier],
            seconds=loop.seconds(), init=init_note))
        return rows

    def _finished(self, folder: Path, groups: TokenGroups, stage: int) -> dict[str, torch.Tensor] | None:
        meta = read_meta(folder)
        if not meta or not meta.get("finished"):
            return None
        rows, _ = load_rows(folder, meta.get("epochs"), self.b.hidden_size)
        if rows["embed"].shape[0] != STAGE_ROWS[stage]:
            return None
        return rows

    # ---------------------------------------------------------------- the stages
    def run(self, data: ConceptData, state_dir: Path) -> tuple[TokenGroups, dict[str, torch.Tensor]]:
        cfg = self.cfg
        groups = TokenGroups(data.identifier)
        state_dir = Path(state_dir)
        cropped = data.cropped_images or data.train_images
        codes = None

        # Stage 1: understanding warm-up.
        s1 = state_dir / "stage1"
        rows1 = self._finished(s1, groups, 1)
        if rows1 is not None:
            self._skip(cfg.epochs_stage1, "stage 1 (finished before)")
        if rows1 is None:
            self.log("stage 1: understanding warm-up")
            ident = self.b.word_embedding(data.class_noun)
            train_codes = self.b.encode_images(data.train_images)
            shared = kmeans(self.b.code_embeddings(train_codes).detach(), N_SHARED, cfg.kmeans_seed)
            embed = torch.cat([ident[None], shared])
            init = {"embed": embed, "head_weight": embed.clone(), "head_bias": torch.zeros(len(embed))}
            rows1 = self._train(1, s1, groups, [groups.identifier] + groups.shared, cfg.epochs_stage1, init,
                                data, None, {"identifier": f"embedding of the class word {data.class_noun!r}",
                                             "shared": f"k-means k={N_SHARED} seed={cfg.kmeans_seed} over the "
                                                       f"image-code embeddings of {len(data.train_images)} photos"})

        # Stage 2: generation bootstrapped from understanding.
        s2 = state_dir / "stage2"
        rows2 = self._finished(s2, groups, 2)
        if rows2 is not None:
            self._skip(cfg.epochs_stage2, "stage 2 (finished before)")
        if rows2 is None:
            self.log("stage 2: generation from understanding")
            start_epoch = max(1, min(cfg.stage2_init_epoch, cfg.epochs_stage1))
            base, _ = load_rows(s1, start_epoch, self.b.hidden_size)
            codes = self.b.encode_images(cropped)
            gen, gen_note = self._generation_init(data, codes)
            init = {k: torch.cat([base[k], v]) for k, v in
                    {"embed": gen, "head_weight": gen.clone(), "head_bias": torch.zeros(N_GEN)}.items()}
            rows2 = self._train(2, s2, groups, [groups.identifier] + groups.shared + groups.generation,
                                cfg.epochs_stage2, init, data, codes,
                                {"from": f"stage 1 epoch {start_epoch}", "generation": gen_note})

        # Transition: generation as perception.
        tr = state_dir / "transition"
        meta = read_meta(tr)
        if meta and meta.get("finished") and (tr / "understanding_init.pt").is_file():
            und = torch.load(tr / "understanding_init.pt", weights_only=True, map_location="cpu")
            self._skip(1, "transition (finished before)")
        else:
            self.log("transition: least-sure image positions")
            start = time.time()
            und, info = self.transition(groups, rows2, data.kind)
            tr.mkdir(parents=True, exist_ok=True)
            torch.save(und, tr / "understanding_init.pt")
            write_json(tr / "unictokens.json", self._meta("transition", groups, STAGE_ROWS[2], finished=True,
                                                          seconds=round(time.time() - start, 3), **info))
            self._step_done("transition")

        # Stage 3: understanding deepened from generation.
        s3 = state_dir / "stage3"
        rows3 = self._finished(s3, groups, 3)
        if rows3 is None:
            self.log("stage 3: understanding from generation")
            if codes is None:
                codes = self.b.encode_images(cropped)
            init = {k: torch.cat([rows2[k], v]) for k, v in
                    {"embed": und, "head_weight": und.clone(), "head_bias": torch.zeros(N_UND)}.items()}
            rows3 = self._train(3, s3, groups, [groups.identifier] + groups.understanding, cfg.epochs_stage3,
                                init, data, codes, {"understanding": f"k-means over the transition's codes "
                                                                     f"({cfg.transition_rule})"})
        return groups, rows3

    def _skip(self, steps: int, what: str) -> None:
        self._done += steps
        self._progress(what, self._done, self._total)

    def _generation_init(self, data: ConceptData, codes: torch.Tensor) -> tuple[torch.Tensor, str]:
        """Human concepts with a face embedding: as the authors' stage 2, the mean identity embedding
        (512-d) viewed as [8, 64] and each row linearly interpolated to the model's width. Otherwise
        (and as the fallback): k-means (k=8) over the cropped photos' code embeddings."""
        cfg = self.cfg
        if data.kind == "human" and data.face_embedding is not None:
            face = data.face_embedding.detach().float().cpu().flatten()
            if face.numel() % N_GEN == 0:
                rows = face.view(N_GEN, -1)
                resized = torch.nn.functional.interpolate(rows[None], size=self.b.hidden_size, mode="linear")[0]
                return resized, (f"face identity embedding ({data.face_note}), {face.numel()}-d as "
                                 f"[{N_GEN}, {face.numel() // N_GEN}], interpolated to [{N_GEN}, {self.b.hidden_size}]")
            note = f"face embedding of {face.numel()} values does not split into {N_GEN} rows; "
        else:
            note = f"human concept without a face embedding ({data.face_note}); " if data.kind == "human" else ""
        centres = kmeans(self.b.code_embeddings(codes).detach(), N_GEN, cfg.kmeans_seed + 1)
        return centres, note + f"k-means k={N_GEN} over the image-code embeddings of the cropped photos"

    def transition_prompt(self, groups: TokenGroups, kind: str) -> str:
        """The authors' transition prompts (``stage_2_to_3_v1.py``)."""
        phrase = groups.generation_phrase(STAGE_ROWS[2])
        if kind == "human":
            return f"A photo of {phrase}'s face in detail."
        return f"A photo of {phrase} in the middle of the photo."

    @torch.no_grad()
    def transition(self, groups: TokenGroups, rows2: dict[str, torch.Tensor], kind: str = "object"
                   ) -> tuple[torch.Tensor, dict]:
        """Generation as perception: images of the concept from stage 2's rows; the positions its
        sampler was least settled on; the understanding tokens start from k-means (k=8) over those
        positions' final codes' embeddings.

        ``late_change`` (the paper's, on MaskGIT): positions whose prediction at ``transition_step``
        differs from the final code. ``lowest_prob`` (autoregressive samplers): each image's
        ``transition_fraction`` least probable codes."""
        cfg = self.cfg
        if cfg.transition_rule not in TRANSITION_RULES:
            raise BenchError(f"unknown transition_rule {cfg.transition_rule!r} (known: {', '.join(TRANSITION_RULES)})",
                             where="--method-arg transition_rule")
        prompt = self.transition_prompt(groups, kind)
        n = max(1, cfg.transition_images)
        keep = (cfg.transition_step,) if cfg.transition_rule == "late_change" else ()
        with self.b.new_tokens(groups.rows(STAGE_ROWS[2]), rows2):
            gen = self.b.generate_codes([prompt] * n, [cfg.seed * 1000 + i for i in range(n)],
                                        guidance=cfg.guidance, temperature=cfg.temperature, keep_steps=keep)
        info: dict = {"rule": cfg.transition_rule, "images": n, "prompt": prompt}
        if cfg.transition_rule == "late_change":
            if not gen.steps or cfg.transition_step not in gen.steps:
                raise BenchError(f"the sampler kept no step {cfg.transition_step} (it runs fewer steps?)",
                                 where="--method-arg transition_step")
            changed = gen.steps[cfg.transition_step] != gen.codes
            picked = gen.codes[changed]
            info.update(step=cfg.transition_step, positions=int(changed.sum()),
                        positions_per_image=float(changed.float().sum(1).mean()))
            if picked.numel() == 0:  # nothing changed after that step: every final code stands in
                picked = gen.codes.flatten()
                info["fallback"] = "no position changed after the step: k-means over every final code"
        else:
            T = gen.codes.shape[1]
            m = max(1, int(math.ceil(cfg.transition_fraction * T)))
            pos = gen.probs.argsort(1)[:, :m]  # lowest-probability positions of each image
            picked = gen.codes.gather(1, pos)
            info.update(positions_per_image=m, mean_prob_picked=float(gen.probs.gather(1, pos).mean()),
                        mean_prob_all=float(gen.probs.mean()))
        emb = self.b.code_embeddings(picked.reshape(1, -1)).reshape(-1, self.b.hidden_size)
        return kmeans(emb, N_UND, cfg.kmeans_seed + 2), info
