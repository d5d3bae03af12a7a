"""Functional (implicit neural) representations: a data-conditioned hypernetwork maps an image to
the weights of a coordinate network that reconstructs it (library code; never prints).

* `CoordinateNetwork`-style targets (`coordinate_network`): pixel coordinates `[..., 2]` in [0, 1]
  -> intensities `[..., channels]`, either ReLU on fixed Fourier features of the coordinates, or
  sine activations with SIREN's initialisation (Sitzmann et al., NeurIPS 2020: first layer
  `U(-1/n, 1/n)`, later layers `U(-sqrt(6/n)/w0, sqrt(6/n)/w0)`, activation `sin(w0 z)`).
* `INRHyperNetwork`: `encoder(image) -> code -> MLP hypernetwork -> weights [B, P]`, then the
  coordinate network with one weight set per image, all images of a batch in one per-sample call
  through `hypernet.TargetNetwork` (Ha et al. 2017; Sitzmann et al. 2020 section 4.4).
* `EmbeddingINR`: the baseline that conditions by concatenation: `q([encode(x), encoder(image)])`.
* `fit_networks`: one coordinate network per image, fitted independently (all at once, through
  the same per-sample call: the images' losses are summed, so their gradients do not mix).
* `psnr`: peak signal-to-noise ratio per image.

Shapes: images `[B, C, H, W]` (or `[B, H, W]`, one channel) in [0, 1]; coordinates `[B, M, 2]`
(row, column) scaled as `hypernet.data.images.pixel_coordinates`; outputs `[B, M, C]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

import hypernet as hn
from hypernet.data.images import fourier_features

Activation = Literal["relu", "sine"]
ACTIVATIONS: tuple[str, ...] = ("relu", "sine")


class FourierFeatures(nn.Module):
    """`coords: [..., 2]` -> `[..., 2 + 4 * frequencies]`: the coordinates and their fixed Fourier
    features (`hypernet.data.images.fourier_features`). Nothing to learn or generate."""

    def __init__(self, frequencies: int) -> None:
        super().__init__()
        if frequencies < 1:
            raise ValueError(f"frequencies: must be >= 1, got {frequencies}")
        self.frequencies = frequencies
        self.out_features = 2 + 4 * frequencies

    def forward(self, coords: Tensor) -> Tensor:
        return torch.cat([coords, fourier_features(coords, self.frequencies)], dim=-1)


class CenteredCoordinates(nn.Module):
    """`coords: [..., 2]` in [0, 1] -> `2 coords - 1` in [-1, 1] (SIREN's input range)."""

    out_features = 2

    def forward(self, coords: Tensor) -> Tensor:
        return 2 * coords - 1


class Sine(nn.Module):
    """`sin(w0 z)` (SIREN's activation; `w0` fixed, not trained)."""

    def __init__(self, w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = float(w0)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sin(self.w0 * z)

    def extra_repr(self) -> str:
        return f"w0={self.w0:g}"


def coordinate_network(
    hidden: Sequence[int],
    channels: int = 1,
    activation: Activation = "relu",
    frequencies: int = 16,
    w0: float = 30.0,
) -> nn.Sequential:
    """A coordinate network `coords [..., 2] -> [..., channels]`.

    `"relu"`: Fourier features (`frequencies` per coordinate), then ReLU layers `hidden`.
    `"sine"`: coordinates in [-1, 1], then `Linear + Sine(w0)` layers `hidden` with SIREN's
    initialisation, and a linear output layer.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {activation!r}; choose one of {list(ACTIVATIONS)}")
    if not hidden or any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden: need at least one positive width, got {tuple(hidden)}")
    if channels < 1:
        raise ValueError(f"channels: must be >= 1, got {channels}")
    if activation == "sine" and not w0 > 0:
        raise ValueError(f"w0: the sine frequency must be > 0, got {w0}")
    encode: nn.Module = FourierFeatures(frequencies) if activation == "relu" else CenteredCoordinates()
    layers: list[nn.Module] = [encode]
    d_in = int(encode.out_features)  # type: ignore[arg-type]
    for k, h in enumerate(hidden):
        linear = nn.Linear(d_in, int(h))
        if activation == "sine":
            bound = 1.0 / d_in if k == 0 else math.sqrt(6.0 / d_in) / w0
            with torch.no_grad():
                linear.weight.uniform_(-bound, bound)
        layers += [linear, Sine(w0) if activation == "sine" else nn.ReLU()]
        d_in = int(h)
    out = nn.Linear(d_in, channels)
    if activation == "sine":
        with torch.no_grad():
            out.weight.uniform_(-math.sqrt(6.0 / d_in) / w0, math.sqrt(6.0 / d_in) / w0)
    return nn.Sequential(*layers, out)


def mlp_encoder(in_shape: Sequence[int], hidden: Sequence[int], code: int) -> nn.Sequential:
    """`images: [B, *in_shape] -> [B, code]`: flatten, then ReLU layers `hidden`, then a linear map."""
    if code < 1 or any(int(h) < 1 for h in hidden):
        raise ValueError(f"code and hidden: widths must be >= 1, got code={code}, hidden={tuple(hidden)}")
    d_in = math.prod(int(s) for s in in_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(d_in, int(h)), nn.ReLU()]
        d_in = int(h)
    return nn.Sequential(*layers, nn.Linear(d_in, code))


def _images(images: Tensor) -> Tensor:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"images: expected [B, C, H, W] or [B, H, W], got shape {list(images.shape)}")
    return images


def _check_coords(coords: Tensor, batch: int) -> None:
    if coords.ndim != 3 or coords.shape[0] != batch or coords.shape[-1] != 2:
        raise ValueError(f"coords: expected [{batch}, M, 2] (one set per image), got shape {list(coords.shape)}")


def num_trainable(module: nn.Module) -> int:
    """Trainable numbers of `module` (parameters that require a gradient)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class INRHyperNetwork(nn.Module):
    """Image -> weights of a coordinate network that reconstructs it.

    `encoder: [B, C, H, W] -> [B, code]` (any module; `mlp_encoder` by default in the experiment),
    an `MLPHyperNetwork(code, spec, hyper_hidden)` with a residual output around the target's own
    initial weights (so the generated networks start as `coordinate_network` initialises them:
    SIREN's initialisation for sines), and the target `coordinate_network(hidden, ...)`.

    `forward(images [B, C, H, W], coords [B, M, 2]) -> [B, M, C]` in one per-sample call;
    `weights(images) -> [B, P]`; `network(image [C, H, W]) -> nn.Module` (a plain coordinate network).
    """

    def __init__(
        self,
        encoder: nn.Module,
        code: int,
        hidden: Sequence[int],
        channels: int = 1,
        activation: Activation = "relu",
        frequencies: int = 16,
        hyper_hidden: Sequence[int] = (),
        w0: float = 30.0,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.target = hn.TargetNetwork(coordinate_network(hidden, channels, activation, frequencies, w0))
        hyper = hn.MLPHyperNetwork(
            code, self.target.spec, hidden=tuple(hyper_hidden), residual=True, theta0=self.target.initial_weights()
        )
        if activation == "sine":
            # hyperfan-in draws each generated tensor's spread as He's 2 / fan_in; a sine layer
            # computes sin(w0 z), so SIREN's spread for it is w0 times smaller (2 / (fan_in w0^2))
            head = hyper.head
            assert isinstance(head, nn.Linear)
            with torch.no_grad():
                head.weight.div_(w0)
        self.model = hn.HyperModel(self.target, hyper, hn.DataEncoder(encoder, code))

    @property
    def num_generated(self) -> int:
        """Weights of one generated coordinate network (P)."""
        return self.target.spec.numel

    def weights(self, images: Tensor) -> Tensor:
        """`images: [B, C, H, W]` -> `[B, P]`, one coordinate network per image."""
        return self.model.weights(_images(images))

    def forward(self, images: Tensor, coords: Tensor) -> Tensor:
        """`images: [B, C, H, W]`, `coords: [B, M, 2]` -> `[B, M, channels]`."""
        images = _images(images)
        _check_coords(coords, images.shape[0])
        out: Tensor = self.target(coords, self.weights(images))
        return out

    def network(self, image: Tensor) -> nn.Module:
        """The plain coordinate network generated for one `image: [C, H, W]` (`coords -> values`)."""
        return self.target.materialize(self.weights(_images(image[None]))[0])


class EmbeddingINR(nn.Module):
    """The concatenation baseline: `q([encode(coords), encoder(image)])`, one shared network `q`
    (the same coordinate encoding and activation as `coordinate_network`) for every image.

    `forward(images [B, C, H, W], coords [B, M, 2]) -> [B, M, channels]`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        code: int,
        hidden: Sequence[int],
        channels: int = 1,
        activation: Activation = "relu",
        frequencies: int = 16,
        w0: float = 30.0,
    ) -> None:
        super().__init__()
        self.encoder, self.code, self.channels = encoder, code, channels
        self.width = int(hidden[0]) if hidden else 0
        net = coordinate_network(hidden, channels, activation, frequencies, w0)
        self.encode = net[0]
        first = net[1]
        assert isinstance(first, nn.Linear)
        # the first layer also reads the embedding; its initialisation follows the widened fan-in
        wide = nn.Linear(first.in_features + code, first.out_features)
        if activation == "sine":
            with torch.no_grad():
                bound = 1.0 / wide.in_features
                wide.weight.uniform_(-bound, bound)
        self.q = nn.Sequential(wide, *list(net)[2:])

    def forward(self, images: Tensor, coords: Tensor) -> Tensor:
        images = _images(images)
        _check_coords(coords, images.shape[0])
        emb = self.encoder(images)
        if emb.shape != (images.shape[0], self.code):
            raise ValueError(f"encoder: gave shape {list(emb.shape)}, expected [{images.shape[0]}, {self.code}]")
        x = torch.cat([self.encode(coords), emb[:, None, :].expand(-1, coords.shape[1], -1)], dim=-1)
        out: Tensor = self.q(x)
        return out


def equal_width(budget: int, count: Callable[[int], int], low: int = 1, high: int = 4096) -> int:
    """The width `w` in `[low, high]` whose parameter count `count(w)` (growing with `w`) is closest
    to `budget`: how the experiment gives the embedding baseline as many parameters as the
    hypernetwork."""
    if count(low) > budget:
        return low
    while high - low > 1:
        mid = (low + high) // 2
        if count(mid) <= budget:
            low = mid
        else:
            high = mid
    return low if budget - count(low) <= count(high) - budget else high


def fit_networks(
    target: hn.TargetNetwork,
    init: Tensor,
    coords: Tensor,
    values: Tensor,
    steps: int,
    lr: float = 1e-3,
    pixels: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fit one coordinate network per image, independently; returns the fitted weights `[B, P]`.

    `init: [B, P]` starting weights (one set per image, e.g. `target.initial_weights()` of a fresh
    `coordinate_network` per image, stacked); `coords: [B, N, 2]`, `values: [B, N, C]`
    every pixel of each image. Each step draws `pixels` of the `N` pixels per image (all when None)
    and takes one Adam step on the SUM over images of each image's mean squared error: image `b`'s
    loss depends on row `b` of the weights only, and Adam's update is elementwise, so the rows
    follow exactly the paths that B separate fits would (checked in the tests)."""
    if init.ndim != 2 or init.shape[1] != target.spec.numel:
        raise ValueError(f"init: expected [B, {target.spec.numel}], got shape {list(init.shape)}")
    b = init.shape[0]
    _check_coords(coords, b)
    if values.ndim != 3 or values.shape[:2] != coords.shape[:2]:
        raise ValueError(f"values: expected [{b}, {coords.shape[1]}, C] like coords, got shape {list(values.shape)}")
    out = target(coords[:1, :1], init[:1].detach())  # one pixel: the target's own channel count
    if out.shape[-1] != values.shape[-1]:
        raise ValueError(f"values: the target gives {out.shape[-1]} channel(s), values have {values.shape[-1]}")
    if steps < 0 or not lr > 0 or (pixels is not None and pixels < 1):
        raise ValueError(f"steps >= 0, lr > 0 and pixels >= 1 (or None) expected, got {steps}, {lr}, {pixels}")
    weights = nn.Parameter(init.detach().clone())
    opt = torch.optim.Adam([weights], lr=lr)
    rows = torch.arange(b)[:, None]
    for _ in range(steps):
        if pixels is None:
            x, y = coords, values
        else:
            k = torch.randint(coords.shape[1], (b, pixels), generator=generator)
            x, y = coords[rows, k], values[rows, k]
        loss = (target(x, weights) - y).pow(2).flatten(1).mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return weights.detach()


def psnr(pred: Tensor, true: Tensor, peak: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB: `pred, true: [B, ...]` -> `[B]`,
    `10 log10(peak^2 / mean((pred - true)^2))` over each image's values (an exact match gives inf)."""
    if pred.shape != true.shape or pred.ndim < 1:
        raise ValueError(
            f"psnr: pred and true must have one shape [B, ...], got {list(pred.shape)}, {list(true.shape)}"
        )
    if not peak > 0:
        raise ValueError(f"peak: the largest possible value must be > 0, got {peak}")
    mse = (pred - true).pow(2).flatten(1).mean(1) if pred.ndim > 1 else (pred - true).pow(2)
    return 10 * torch.log10(peak**2 / mse)
