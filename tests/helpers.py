"""Shared test helpers."""
from typing import List, Sequence

import torch


def max_abs_diff(a: Sequence[torch.Tensor],
                 b: Sequence[torch.Tensor]) -> List[float]:
    """Per-output max |a - b| after checking that the shapes match."""
    assert len(a) == len(b), (len(a), len(b))
    diffs = []
    for x, y in zip(a, b):
        assert x.shape == y.shape, (x.shape, y.shape)
        diffs.append((x.float() - y.float()).abs().max().item())
    return diffs


def randomize_(module: torch.nn.Module, std: float = 0.05,
               seed: int = 1234) -> torch.nn.Module:
    """Fill every parameter with random values (LayerNorm weights around 1),
    so parity tests exercise every weight rather than a default init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen) * std
                is_norm_scale = isinstance(m, torch.nn.LayerNorm) and (
                    name == 'weight')
                p.copy_(1 + noise if is_norm_scale else noise)
    return module
