"""A plain Swin stage written from the papers' official code: the
specification that mmswin's layers (plain and CPU fast path) are tested
against, in forward and in gradients.

Deliberately independent of mmswin: its own window partition, its own
shift mask built from the official slices, explicit softmax attention, and
the official parameter names (so ``load_state_dict`` of an mmswin
``SwinStage`` fills it).
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws * ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, ws * ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def official_shift_mask(hp: int, wp: int, ws: int, shift: int) -> torch.Tensor:
    """The official BasicLayer's attn_mask: (nW, N, N) of 0 / -100."""
    img = torch.zeros(1, hp, wp, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    windows = partition(img, ws).squeeze(-1)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class ReferenceAttention(nn.Module):
    """Official WindowAttention (V1) / WindowAttention of SwinV2 (cosine)."""

    def __init__(self, dim: int, ws: int, heads: int, v2: bool,
                 pretrained_ws: int = 0) -> None:
        super().__init__()
        self.ws, self.heads, self.v2 = ws, heads, v2
        self.scale = (dim // heads)**-0.5
        coords = torch.stack(torch.meshgrid(
            torch.arange(ws), torch.arange(ws), indexing='ij')).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        rel = rel + (ws - 1)
        rel[:, :, 0] *= 2 * ws - 1
        self.register_buffer('relative_position_index', rel.sum(-1),
                             persistent=False)
        if v2:
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(
                heads, 1, 1)))
            self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(),
                                         nn.Linear(512, heads, bias=False))
            r = torch.arange(-(ws - 1), ws, dtype=torch.float32)
            table = torch.stack(torch.meshgrid(r, r, indexing='ij'),
                                -1)[None]
            table /= (pretrained_ws if pretrained_ws > 0 else ws) - 1
            table *= 8
            table = torch.sign(table) * torch.log2(table.abs() + 1) / 3
            self.register_buffer('relative_coords_table', table,
                                 persistent=False)
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * ws - 1)**2, heads))
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor,
                mask: Optional[torch.Tensor]) -> torch.Tensor:
        b_, n, c = x.shape
        if self.v2:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias),
                              self.v_bias))
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = self.qkv(x)
        qkv = qkv.reshape(b_, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.v2:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(
                -2, -1)
            attn = attn * torch.clamp(self.logit_scale,
                                      max=math.log(1. / 0.01)).exp()
            table = self.cpb_mlp(self.relative_coords_table).view(
                -1, self.heads)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            table = self.relative_position_bias_table
        bias = table[self.relative_position_index.view(-1)].view(n, n, -1)
        bias = bias.permute(2, 0, 1)
        if self.v2:
            bias = 16 * torch.sigmoid(bias)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.heads, n, n) + mask[None, :,
                                                                    None]
            attn = attn.view(-1, self.heads, n, n)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(x)


class ReferenceBlock(nn.Module):
    """Official SwinTransformerBlock (pre-norm; V2: res-post-norm), with the
    detection code's bottom/right zero padding."""

    def __init__(self, dim: int, heads: int, ws: int, shift: int, v2: bool,
                 pretrained_ws: int = 0) -> None:
        super().__init__()
        self.ws, self.shift, self.v2 = ws, shift, v2
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ReferenceAttention(dim, ws, heads, v2, pretrained_ws)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(4 * dim, dim)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        ws, s = self.ws, self.shift
        x = F.pad(x, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        hp, wp = x.shape[1:3]
        mask = None
        if s:
            x = torch.roll(x, (-s, -s), (1, 2))
            mask = official_shift_mask(hp, wp, ws, s).to(x.device)
        x = reverse(self.attn(partition(x, ws), mask), ws, hp, wp)
        if s:
            x = torch.roll(x, (s, s), (1, 2))
        return x[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.v2:
            x = x + self.norm1(self._attention(x))
            return x + self.norm2(self.mlp(x))
        x = x + self._attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ReferenceStage(nn.Module):
    """``depth`` reference blocks alternating plain and shifted windows.

    Shape: ``(B, H, W, C)`` in and out.
    """

    def __init__(self, dim: int, depth: int, heads: int, ws: int, v2: bool,
                 pretrained_ws: int = 0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            ReferenceBlock(dim, heads, ws, 0 if i % 2 == 0 else ws // 2, v2,
                           pretrained_ws) for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x
