"""Tiny models for tests (a model spec: ``tests.helpers.tiny_models:make_net``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """Conv -> BN -> ReLU -> Conv -> ReLU -> global pool -> Linear; 1x16x16 in, 2 classes out."""

    def __init__(self, in_channels: int = 1, classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def make_net(classes: int = 2) -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(classes=classes).eval()


class NotExportable(nn.Module):
    """Leaves the graph through numpy: tracing cannot export it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.detach().numpy() * 2.0).mean(dim=(2, 3)).repeat(1, 2)


class Divergent(nn.Module):
    """Data-dependent branch: the trace (on zeros) takes a path random inputs do not."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3)).unsqueeze(1)
        if bool(x.abs().sum() > 0):
            return self.lin(m) * 10.0 + 5.0
        return self.lin(m)


class Fragile(nn.Module):
    """Logits are a tiny difference of two huge, nearly equal activations: INT8 destroys it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            v = torch.randn(8) * 50.0
            u = torch.randn(8)
            self.head.weight.copy_(torch.stack([v + 1e-3 * u, v - 1e-3 * u]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


class PreActDense(nn.Module):
    """A dense block in pre-activation order (DenseNet): concat -> BN -> ReLU -> Conv, twice,
    then BN -> ReLU -> pool -> Linear. Its BNs cannot be folded into a preceding Conv."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 4, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 4, 1)
        self.norm3 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, classes)
        g = torch.Generator().manual_seed(0)
        for bn in (self.norm1, self.norm2, self.norm3):  # trained-looking statistics, some a < 0
            c = bn.num_features
            bn.weight.data = torch.randn(c, generator=g) * 0.8
            bn.bias.data = torch.randn(c, generator=g) * 0.3
            bn.running_mean = torch.randn(c, generator=g) * 0.5
            bn.running_var = torch.rand(c, generator=g) * 2 + 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)
        f = torch.cat([f, self.conv1(torch.relu(self.norm1(f)))], 1)
        f = torch.cat([f, self.conv2(torch.relu(self.norm2(f)))], 1)
        return self.head(torch.relu(self.norm3(f)).mean((2, 3)))


def make_preact(classes: int = 2) -> PreActDense:
    torch.manual_seed(0)
    return PreActDense(classes=classes).eval()
