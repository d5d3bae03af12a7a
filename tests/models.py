"""Small reference modules used across the tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2)
        self.norm = nn.GroupNorm(1, 5)
        self.fc = nn.Linear(5 * 2 * 2, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.norm(self.conv2(x)))
        return self.fc(x.flatten(1))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module] = nn.GRU, bidirectional: bool = False) -> None:
        super().__init__()
        self.rnn = cell(3, 5, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(5 * (2 if bidirectional else 1), 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.rnn(x)[0]
        return self.out(y[:, -1])


def transformer() -> nn.Module:
    return nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)


INPUTS = {
    "mlp": lambda b: torch.randn(b, 6),
    "cnn": lambda b: torch.randn(b, 2, 6, 6),
    "gru": lambda b: torch.randn(b, 4, 3),
    "lstm": lambda b: torch.randn(b, 4, 3),
    "transformer": lambda b: torch.randn(b, 5, 8),
}

BUILDERS = {
    "mlp": mlp,
    "cnn": SmallCNN,
    "gru": lambda: Recurrent(nn.GRU),
    "lstm": lambda: Recurrent(nn.LSTM, bidirectional=True),
    "transformer": transformer,
}
