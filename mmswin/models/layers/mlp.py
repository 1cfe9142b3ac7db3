"""The transformer MLP."""
import torch
import torch.nn as nn

from ..cpu_fast_path.linear import Linear


class Mlp(nn.Module):
    """Two-layer MLP with GELU (official names ``fc1``/``fc2``):
    ``drop(fc2(drop(gelu(fc1(x)))))``. The GELU is part of ``fc1``
    (:class:`~mmswin.models.cpu_fast_path.linear.Linear` with
    ``gelu=True``): on CPU oneDNN applies it while the matmul's output is
    in cache, elsewhere it is ``F.gelu``; the state dict is the official
    one.

    Args:
        dim: Input and output channels C.
        hidden_dim: Hidden channels (4C in Swin).
        drop: Dropout after GELU and after fc2.

    Shape: ``(..., C)`` in, ``(..., C)`` out.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim, gelu=True)
        self.fc2 = Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.fc1(x))))
