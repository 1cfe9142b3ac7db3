"""The transformer MLP."""
import torch
import torch.nn as nn


class Mlp(nn.Module):
    """Two-layer MLP with GELU (official names ``fc1``/``fc2``):
    ``drop(fc2(drop(gelu(fc1(x)))))``.

    Args:
        dim: Input and output channels C.
        hidden_dim: Hidden channels (4C in Swin).
        drop: Dropout after GELU and after fc2.

    Shape: ``(..., C)`` in, ``(..., C)`` out.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
