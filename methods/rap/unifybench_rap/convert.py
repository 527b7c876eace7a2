"""Original-LLaVA checkpoints (``llava_llama``: RAP-LLaVA) into transformers' ``LlavaForConditionalGeneration``.

The key map is transformers' ``convert_llava_weights_to_hf.py`` (``model.mm_projector.{0,2}`` to the
projector's ``linear_{1,2}``, the language model under ``model.language_model``), written for
transformers 5's names. ``<image>`` and ``<pad>`` are added to the tokenizer where it lacks them, and
the vocabulary is padded to a multiple of 64 rows, as that script does; the added rows are the mean
of the existing rows (the script draws them from a normal around that mean with covariance 1e-5 of
the rows'; the mean makes the conversion deterministic). LLaVA-1.5 checkpoints do not hold the CLIP
vision tower (their shard index says which tensors they hold): it is read from its own repository
(``mm_vision_tower``, CLIP-L/14-336) and merged. The result is written once, into a folder of the
user's cache, and loaded from there.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from unifybench.errors import BenchError
from unifybench.logs import get_logger, quiet_transformers

_LOG = get_logger("method.rap")
ORIGINAL_TYPES = ("llava_llama", "llava")
MARKER = "unifybench-converted.json"
PAD_ROWS_TO = 64
TOWER = "model.vision_tower."  # CLIPVisionModel's tensors (embeddings, encoder, ...) under LLaVA's tower
_CLIP_VISION_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
# Keys of a llava_llama config.json that configure LLaVA's vision side or its training, not Llama.
_NOT_LLAMA = ("mm_", "tune_mm", "freeze_mm", "image_", "use_mm", "unfreeze_mm")


def is_original(folder: Path) -> bool:
    """A folder in the original LLaVA format (``model_type`` llava_llama, an ``mm_projector``)."""
    config = _read_config(folder)
    return config.get("model_type") in ORIGINAL_TYPES and "mm_hidden_size" in config


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def convert_key(key: str) -> str | None:
    """The transformers-5 name of one original tensor (None: not a weight, e.g. rotary ``inv_freq``)."""
    if key.endswith(".inv_freq"):
        return None
    if key.startswith("model.mm_projector."):
        rest = key[len("model.mm_projector."):]
        index, _, name = rest.partition(".")
        layer = {"0": "linear_1", "2": "linear_2"}.get(index)
        if layer is None:
            raise BenchError(f"unexpected projector tensor {key!r} (mlp2x_gelu has layers 0 and 2)",
                             where="--method-arg model")
        return f"model.multi_modal_projector.{layer}.{name}"
    if key.startswith("model.vision_tower.vision_tower.vision_model."):
        return TOWER + key[len("model.vision_tower.vision_tower.vision_model."):]
    if key.startswith("model."):
        return "model.language_model." + key[len("model."):]
    if key.startswith("lm_head."):
        return key
    raise BenchError(f"unexpected tensor {key!r} in an original LLaVA checkpoint", where="--method-arg model")


def read_shards(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint: the shards its index names (safetensors or ``.bin`` read
    ``weights_only``), or the one weights file."""
    folder = Path(folder)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError) as exc:
                raise BenchError(f"unreadable shard index ({exc.__class__.__name__})", index,
                                 "--method-arg model") from None
            break
    else:
        files = [n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()]
    if not files:
        raise BenchError("no weights (a shard index, model.safetensors or pytorch_model.bin)", folder,
                         "--method-arg model")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = folder / name
        if Path(name).name != name or not path.is_file():  # a shard is a file of this folder
            raise BenchError(f"shard {name!r} named by the index is missing", folder, "--method-arg model")
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                state.update(load_file(path))
            else:
                state.update(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - any unreadable shard is bad input
            raise BenchError(f"cannot read weights ({exc.__class__.__name__})", path, "--method-arg model") from None
    return state


def converted_folder(source: Path, vision_tower: Path, cache: Path | None) -> Path:
    """Where the conversion of ``source`` (with ``vision_tower``) lives: one folder per pair."""
    root = Path(cache) if cache is not None else default_cache()
    digest = hashlib.sha256(f"{Path(source).resolve()}\n{Path(vision_tower).resolve()}".encode()).hexdigest()[:12]
    return root / f"{Path(source).resolve().name}-{digest}"


def default_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "unifybench" / "converted"


def ensure_converted(source: Path, vision_tower: Path, cache: Path | None = None) -> Path:
    """The converted folder of ``source``, converting it first when it is not there yet."""
    target = converted_folder(source, vision_tower, cache)
    if (target / MARKER).is_file():
        return target
    _LOG.info(f"converting {source} (original LLaVA format) into {target}, once")
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        convert(source, vision_tower, partial)
        (partial / MARKER).write_text(json.dumps({"source": str(source), "vision_tower": str(vision_tower)}) + "\n",
                                      encoding="utf-8")
        if target.exists():  # another process finished first: keep its folder
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def convert(source: Path, vision_tower: Path, out: Path) -> None:
    """Write ``source`` (original format) as a transformers LLaVA folder: model, tokenizer, image processor."""
    from transformers import (AddedToken, AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig,
                              LlavaConfig, LlavaForConditionalGeneration)

    source, vision_tower = Path(source), Path(vision_tower)
    original = _read_config(source)
    if original.get("model_type") not in ORIGINAL_TYPES:
        raise BenchError("not an original LLaVA checkpoint (config.json model_type llava_llama)", source,
                         "--method-arg model")
    if original.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise BenchError(f"projector {original['mm_projector_type']!r} is not supported (mlp2x_gelu only)", source,
                         "--method-arg model")
    with quiet_transformers():  # "a model of type llava_llama": the tokenizer is Llama's, as intended
        tokenizer = AutoTokenizer.from_pretrained(source)
    if "<image>" not in tokenizer.get_vocab():
        tokenizer.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.unk_token:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    text = LlamaConfig(**{k: v for k, v in original.items()
                          if not k.startswith(_NOT_LLAMA) and k not in ("architectures", "model_type", "_name_or_path")})
    vision = CLIPVisionConfig.from_pretrained(vision_tower)
    state = {}
    for key, value in read_shards(source).items():
        name = convert_key(key)
        if name is not None:
            state[name] = value
    if not any(k.startswith(TOWER) for k in state):  # LLaVA-1.5 keeps the tower apart
        state.update(_vision_tower_state(vision_tower))
    rows = state["model.language_model.embed_tokens.weight"].shape[0]
    wanted = -(-max(rows, len(tokenizer)) // PAD_ROWS_TO) * PAD_ROWS_TO
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        state[name] = _pad_rows(state[name], wanted)
    text.vocab_size = wanted
    text.pad_token_id = tokenizer.pad_token_id
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         projector_hidden_act="gelu",
                         vision_feature_layer=int(original.get("mm_vision_select_layer", -2)),
                         vision_feature_select_strategy="full" if original.get("mm_vision_select_feature") == "cls_patch"
                         else "default", tie_word_embeddings=False)
    config.pad_token_id = tokenizer.pad_token_id
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    own = set(model.state_dict())
    if any(k.startswith(TOWER + "vision_model.") for k in own):  # transformers releases that keep the prefix
        state = {(TOWER + "vision_model." + k[len(TOWER):] if k.startswith(TOWER) else k): v
                 for k, v in state.items()}
    missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
    if missing or unexpected:
        raise BenchError(f"converted weights do not fit LlavaForConditionalGeneration: {len(missing)} missing"
                         f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(unexpected)} unexpected"
                         f"{' (e.g. ' + unexpected[0] + ')' if unexpected else ''}", source, "--method-arg model")
    model.load_state_dict(state, strict=True, assign=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor.from_pretrained(vision_tower).save_pretrained(out)


def _vision_tower_state(vision_tower: Path) -> dict[str, torch.Tensor]:
    """A CLIP model's vision tensors under the LLaVA tower's name: ``vision_model.*`` of a CLIPModel
    (openai/clip-vit-large-patch14-336), or a vision model's own tensors where saved without it."""
    state = {k: v for k, v in read_shards(vision_tower).items() if not k.endswith("position_ids")}
    found = {TOWER + k[len("vision_model."):]: v for k, v in state.items() if k.startswith("vision_model.")}
    if not found:
        found = {TOWER + k: v for k, v in state.items() if k.startswith(_CLIP_VISION_PARTS)}
    if not found:
        raise BenchError("no vision_model tensors in the vision tower's weights", vision_tower,
                         "--method-arg vision_tower")
    return found


def _pad_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    if weight.shape[0] >= rows:
        return weight
    extra = weight.float().mean(dim=0, keepdim=True).to(weight.dtype).expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra], dim=0)
