"""The DNN acoustic model of the papers: spliced frames -> sigmoid MLP -> softmax.

Input normalisation (global mean / inverse standard deviation of the spliced
input, from training statistics) is a fixed part of the model, like Kaldi
nnet1's feature transform, so a saved model decodes raw features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DNNConfig:
    """Network shape.

    Attributes:
        context: frames of left and right context (input = (2 * context + 1) * feat_dim).
        hidden_dim: units per hidden layer (papers: 1024 BN-50, 2048 SWB-300).
        num_layers: hidden layers (papers: 5-6).
        activation: "sigmoid" (papers) or "relu".
    """

    context: int = 4
    hidden_dim: int = 1024
    num_layers: int = 6
    activation: str = "sigmoid"


_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


class InputNorm(nn.Module):
    """``(x - mean) * inv_std`` with buffers set from training data."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class DNN(nn.Module):
    """``(N, input_dim)`` spliced features -> ``(N, num_pdfs)`` logits.

    The network proper (``self.net``) is an ``nn.Sequential`` of Linear and
    activation layers, the structure the curvature code handles fastest.
    """

    def __init__(self, feat_dim: int, num_pdfs: int, cfg: DNNConfig) -> None:
        super().__init__()
        if cfg.activation not in _ACTIVATIONS:
            raise ValueError(f"activation {cfg.activation!r} not in {sorted(_ACTIVATIONS)}")
        self.cfg = cfg
        self.feat_dim = feat_dim
        self.num_pdfs = num_pdfs
        input_dim = feat_dim * (2 * cfg.context + 1)
        self.norm = InputNorm(input_dim)
        layers: list[nn.Module] = []
        d = input_dim
        for _ in range(cfg.num_layers):
            layers += [nn.Linear(d, cfg.hidden_dim), _ACTIVATIONS[cfg.activation]()]
            d = cfg.hidden_dim
        layers.append(nn.Linear(d, num_pdfs))
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nnet1-style: small uniform weights for sigmoid nets, zero biases.
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def input_dim(self) -> int:
        return self.feat_dim * (2 * self.cfg.context + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
