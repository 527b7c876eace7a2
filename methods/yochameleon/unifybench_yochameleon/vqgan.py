"""Chameleon's VQGAN decoder, as our own module with the official parameter names.

transformers' ``ChameleonVQVAE`` holds the encoder, the codebook and both 1x1 convolutions but no
decoder (its Chameleon answers text only). Image generation needs it: this is the taming-style
decoder of ``facebookresearch/chameleon`` (``chameleon/inference/vqgan.py``, ``Decoder``), the
same module the Yo'Chameleon authors' patched transformers adds as ``ChameleonVQVAEDecoder``. Its
state-dict names and shapes equal theirs (``tests/data/vqgan_decoder_state_dict.txt``), so the
decoder weights a checkpoint stores under ``model.vqmodel.decoder.`` (as ``leloy/Anole-7b-v0.1-hf``
does) or a ``vqgan.ckpt`` under ``decoder.`` load strictly. Decoding is theirs too: codebook
vectors, ``post_quant_conv`` (from transformers' VQ model), the decoder, then their
``postprocess``: ``(x + 1) / 0.0078`` clipped to 0..255 and truncated to bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from unifybench.errors import BenchError
from unifybench.kit.taming import AttnBlock, ResnetBlock, Upsample, group_norm, swish
from unifybench.kit.weights import load_strict as kit_load_strict

CHECKPOINT_PREFIX = "model.vqmodel.decoder."  # transformers-format Chameleon checkpoints (Anole)
VQGAN_PREFIX = "decoder."  # the original vqgan.ckpt
NO_DECODER = ("no VQGAN decoder weights (model.vqmodel.decoder.*) in this checkpoint: transformers' own conversions "
              "drop them; use one that keeps them (leloy/Anole-7b-v0.1-hf) or pass vqgan=PATH to Chameleon's vqgan.ckpt")


class VQGANDecoder(nn.Module):
    """Latents ``[B, latent_channels, s, s]`` to pixels ``[B, 3, s * 2^(levels-1), ...]`` in [-1, 1].
    Sizes from a ``ChameleonVQVAEConfig`` (the checkpoint's ``vq_config``; ``out_channels``, which the
    authors' patched config declares and transformers' does not, defaults to 3)."""

    def __init__(self, vq_config):
        super().__init__()
        out_channels = int(getattr(vq_config, "out_channels", 3) or 3)
        mult = list(vq_config.channel_multiplier)
        self.levels, self.blocks = len(mult), vq_config.num_res_blocks
        base = vq_config.base_channels
        attn_at = set(vq_config.attn_resolutions or [])
        vanilla = vq_config.attn_type == "vanilla"
        dropout = float(vq_config.dropout or 0.0)
        block_in = base * mult[-1]
        res = vq_config.resolution // 2 ** (self.levels - 1)
        self.conv_in = nn.Conv2d(vq_config.latent_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
        self.mid.attn_1 = AttnBlock(block_in) if vanilla else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
        self.up = nn.ModuleList()
        for level in reversed(range(self.levels)):
            up = nn.Module()
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            block_out = base * mult[level]
            for _ in range(self.blocks + 1):
                up.block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if res in attn_at and vanilla:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample = Upsample(block_in)
                res *= 2
            self.up.insert(0, up)  # index = level, as the official module orders them
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(self.levels)):
            up = self.up[level]
            for i in range(self.blocks + 1):
                h = up.block[i](h)
                if len(up.attn) > 0:
                    h = up.attn[i](h)
            if level != 0:
                h = up.upsample(h)
        h = self.norm_out(h)
        return self.conv_out(swish(h))


@torch.no_grad()
def decode_codes(vqmodel, decoder: VQGANDecoder, codes: torch.LongTensor) -> torch.Tensor:
    """VQ codebook indices ``[B, s*s]`` (not BPE ids) to pixels in [-1, 1], ``[B, 3, H, W]`` in the
    decoder's dtype: codebook vectors, ``post_quant_conv``, the decoder (the authors'
    ``ChameleonVQVAE.decode``)."""
    emb = vqmodel.quantize.embedding
    b, n = codes.shape
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"{n} codes do not make a square image")
    z = emb(codes.to(emb.weight.device)).view(b, side, side, -1).permute(0, 3, 1, 2).contiguous()
    z = vqmodel.post_quant_conv(z.to(vqmodel.post_quant_conv.weight.dtype))
    param = next(decoder.parameters())
    return decoder(z.to(param.device, param.dtype))


def to_bytes(pixels: torch.Tensor) -> torch.Tensor:
    """The authors' ``postprocess``: unnormalize (mean 1, std 1), rescale by 1/0.0078, clip, truncate,
    every step in the pixels' own dtype as theirs (bf16 when the decoder runs in bf16: converting to
    float32 first changes about 12% of the bytes by one level)."""
    one = torch.ones(1, pixels.shape[1], 1, 1, dtype=pixels.dtype, device=pixels.device)
    pixels = pixels * one + one
    pixels = pixels * (1.0 / 0.0078)
    return torch.clip(pixels, 0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------- weights


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source, where: str) -> None:
    """Every name and shape matching, or one line naming what differs (the kit's rule)."""
    kit_load_strict(module, state, source, where, what="VQGAN decoder weights")


def _safetensors_files(folder: Path) -> list[Path]:
    """The shards of a hub-layout folder that hold decoder weights (from the index when sharded, so a
    7B checkpoint's other 14 GB are not opened)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"not a readable safetensors index ({exc.__class__.__name__})", index) from exc
        names = sorted({f for k, f in weight_map.items() if k.startswith(CHECKPOINT_PREFIX)})
        return [folder / n for n in names]
    return [p for p in (folder / "model.safetensors",) if p.is_file()]


def has_checkpoint_decoder(folder: Path) -> bool:
    """Whether a checkpoint folder stores decoder weights (safetensors headers only: cheap)."""
    from safetensors import safe_open

    for path in _safetensors_files(Path(folder)):
        try:
            with safe_open(str(path), framework="pt") as f:
                if any(k.startswith(CHECKPOINT_PREFIX) for k in f.keys()):
                    return True
        except Exception:  # noqa: BLE001 - unreadable: loading will name it
            return True
    return False


def read_checkpoint_decoder(folder: Path, where: str) -> dict[str, torch.Tensor]:
    """The decoder weights a transformers-format checkpoint folder stores under ``model.vqmodel.decoder.``."""
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    for path in _safetensors_files(Path(folder)):
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    if key.startswith(CHECKPOINT_PREFIX):
                        found[key[len(CHECKPOINT_PREFIX):]] = f.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            raise BenchError(f"cannot read weights ({exc.__class__.__name__})", path, where) from exc
    if not found:
        raise BenchError(NO_DECODER, folder, where)
    return found


def read_vqgan_file(path: Path, where: str) -> dict[str, torch.Tensor]:
    """The decoder of Chameleon's original ``vqgan.ckpt`` (a Lightning file: ``state_dict`` ->
    ``decoder.*``), or of a ``.safetensors`` file with the same names; loaded without running code."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise BenchError(f"cannot load ({exc.__class__.__name__})", path, where) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BenchError(f"expected a state dict, found {type(state).__name__}", path, where)
    found = {k[len(VQGAN_PREFIX):]: v for k, v in state.items()
             if isinstance(k, str) and k.startswith(VQGAN_PREFIX) and isinstance(v, torch.Tensor)}
    if not found:
        raise BenchError("no decoder.* weights in this file", path, where)
    return found
