"""MAGVIT-v2, Show-o's image tokenizer, as our own module with the official parameter names.

A taming-style VQGAN encoder and decoder around a lookup-free quantizer: z is binarised per channel
(z > 0), and a code is the channels' bits read as a binary number (13 channels: 8,192 codes). At
512 px the encoder downsamples 16x: 32 x 32 = 1,024 codes per image. Written from the structure of
``showlab/Show-o``'s ``models/modeling_magvitv2.py`` and ``models/common_modules.py``; the state-dict
names and shapes equal the official ones (``tests/data/magvitv2_state_dict.txt``), so the
``showlab/magvitv2`` weights load strictly. diffusers' ``VQModel`` cannot express its per-level
block counts.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn

from unifybench.errors import BenchError
from unifybench.kit.taming import AttnBlock, Downsample, ResnetBlock, Upsample, group_norm, swish
from unifybench.kit.weights import hub_snapshot, load_strict, read_state_dict

DEFAULT_VQ = "showlab/magvitv2"
TINY_HINT = "pass a local folder, or model=tiny for a tiny random-init Show-o"


@dataclass
class MagvitConfig:
    """The official class defaults (its ``config.json`` carries no sizes), plus the image size fed."""

    ch: int = 128
    encoder_ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4)
    encoder_blocks: tuple[int, ...] = (4, 3, 4, 3, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_blocks: tuple[int, ...] = (4, 4, 3, 4, 3)
    z_channels: int = 13
    # Decides where attention blocks would go: the official 256 with attn_resolutions (5,) puts none
    # in the levels (only the middle blocks attend), at any image size.
    resolution: int = 256
    attn_resolutions: tuple[int, ...] = (5,)
    in_channels: int = 3
    out_channels: int = 3
    image_size: int = 512  # Show-o 512x512: the images are resized and cropped to this

    @property
    def codebook_size(self) -> int:
        return 2 ** self.z_channels

    @property
    def codes_per_image(self) -> int:
        side = self.image_size // 2 ** (len(self.encoder_ch_mult) - 1)
        return side * side


def _middle(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels)
    mid.attn_1 = AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels)
    return mid


class Encoder(nn.Module):
    def __init__(self, cfg: MagvitConfig):
        super().__init__()
        self.blocks = list(cfg.encoder_blocks)
        ch_mult = list(cfg.encoder_ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, 1, 1)
        in_mult = (1,) + tuple(ch_mult)
        res = cfg.resolution
        self.down = nn.ModuleList()
        for level, mult in enumerate(ch_mult):
            block_in, block_out = cfg.ch * in_mult[level], cfg.ch * mult
            down = nn.Module()
            down.block, down.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(self.blocks[level]):
                down.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    down.attn.append(AttnBlock(block_in))
            if level != len(ch_mult) - 1:
                down.downsample = Downsample(block_in)
                res //= 2
            self.down.append(down)
        self.mid = _middle(block_in)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, 1, 1)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level, down in enumerate(self.down):
            for i, block in enumerate(down.block):
                h = block(h)
                if len(down.attn):
                    h = down.attn[i](h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.quant_conv(self.conv_out(swish(self.norm_out(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: MagvitConfig):
        super().__init__()
        ch_mult, blocks = list(cfg.decoder_ch_mult), list(cfg.decoder_blocks)
        block_in = cfg.ch * ch_mult[-1]
        res = cfg.resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, 1, 1)
        self.mid = _middle(block_in)
        ups: list[nn.Module] = []
        for level in reversed(range(len(ch_mult))):
            block_out = cfg.ch * ch_mult[level]
            up = nn.Module()
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(blocks[level]):
                up.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample = Upsample(block_in)
                res *= 2
            ups.insert(0, up)  # up[i] is level i, built from the top level down
        self.up = nn.ModuleList(ups)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_channels, 3, 1, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.post_quant_conv(z))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(len(self.up))):
            up = self.up[level]
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class LookupFreeQuantizer(nn.Module):
    """z -> sign(z) per channel (z = 0 counts as negative); code = Σ bit·2^(d-1-c) over channels c."""

    def __init__(self, codebook_dim: int):
        super().__init__()
        self.e_dim = codebook_dim
        indices = torch.arange(2 ** codebook_dim)
        binary = (indices.unsqueeze(1) >> torch.arange(codebook_dim - 1, -1, -1, dtype=torch.long)) & 1
        self.register_buffer("embedding", binary.float() * 2 - 1)  # [codes, d]: each code's ±1 vector
        self.register_buffer("power_vals", 2 ** torch.arange(codebook_dim - 1, -1, -1))

    def codes(self, z: torch.Tensor) -> torch.LongTensor:
        """[B, d, H, W] -> [B, H*W], row-major."""
        bits = (z > 0).to(torch.float32)  # as the official: sign(z) > 0
        return (self.power_vals.reshape(1, -1, 1, 1) * bits).sum(1).long().reshape(z.shape[0], -1)

    def vectors(self, codes: torch.LongTensor) -> torch.Tensor:
        """[B, N] -> [B, d, sqrt(N), sqrt(N)]."""
        b, n = codes.shape
        side = int(math.isqrt(n))
        return self.embedding[codes.reshape(-1)].view(b, side, side, -1).permute(0, 3, 1, 2).contiguous()


class MagvitV2(nn.Module):
    def __init__(self, cfg: MagvitConfig | None = None):
        super().__init__()
        self.config = cfg or MagvitConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quantize = LookupFreeQuantizer(self.config.z_channels)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.LongTensor:
        """Images in [-1, 1], [B, 3, S, S] -> codes [B, (S/16)^2] (1,024 at 512 px)."""
        return self.quantize.codes(self.encoder(pixels))

    @torch.no_grad()
    def decode(self, codes: torch.LongTensor) -> torch.Tensor:
        """Codes [B, N] -> images in about [-1, 1], [B, 3, S, S]."""
        return self.decoder(self.quantize.vectors(codes).to(next(self.decoder.parameters()).dtype))

    def save(self, folder: Path) -> None:
        """``config.json`` (our sizes) and ``pytorch_model.bin`` with the official names."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", **asdict(self.config)}, indent=1))
        torch.save(self.state_dict(), folder / "pytorch_model.bin")


def tiny_magvit_config() -> MagvitConfig:
    """For tests: 3 levels of 32 channels, 6-bit codes (64 of them), 16 px images -> 4 x 4 = 16 codes."""
    return MagvitConfig(ch=32, encoder_ch_mult=(1, 1, 1), encoder_blocks=(1, 1, 1), decoder_ch_mult=(1, 1, 1),
                        decoder_blocks=(1, 1, 1), z_channels=6, image_size=16)


def load_magvit(name: str, *, local_only: bool = False) -> MagvitV2:
    """``tiny`` (random init, tests), ``random`` (the official sizes, random init), a local folder, or a
    hub name (``showlab/magvitv2``)."""
    if name == "tiny":
        return MagvitV2(tiny_magvit_config())
    if name == "random":
        return MagvitV2(MagvitConfig())
    folder = Path(name)
    if not folder.is_dir():
        folder = hub_snapshot(name, "vq_model", local_only, hint=TINY_HINT)
    cfg = MagvitConfig()
    config_file = folder / "config.json"
    if config_file.is_file():
        try:
            raw = json.loads(config_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BenchError(f"malformed JSON ({exc})", config_file) from exc
        known = {f.name for f in fields(MagvitConfig)}
        cfg = MagvitConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known})
    model = MagvitV2(cfg)
    load_strict(model, read_state_dict(folder, "--method-arg vq_model"), folder, "--method-arg vq_model")
    return model
