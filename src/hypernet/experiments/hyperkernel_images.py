"""`hyperkernel-images`: image completion and representation by kernel regression with the
hyperkernel, against a finite trained hypernetwork and the plain NTK of `g` (PSNR table).

* MNIST completion (the official code's task): `z` is a digit's top half (rows 0-13, the rest
  zeroed), `x` a pixel coordinate, the target that pixel's intensity. Training: `train_digits`
  digits x `pixels_per_digit` random pixels; test: every pixel of the bottom half of held-out digits.
* scikit-learn's two sample images (china, flower; grey, downsampled): `z` the image identity
  (one-hot), `x` a pixel coordinate; fit a random `observed_fraction` of pixels, predict the rest.

Pixel coordinates enter every method through the same fixed Fourier features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

import hypernet as hn
from hypernet.data import MNIST_SIZES, check_mnist, load_mnist
from hypernet.experiments.registry import RunContext, register
from hypernet.experiments.settings import Relation, setting
from hypernet.kernels import hyper_ntk, mlp_ntk
from hypernet.report.table import Table


@dataclass
class HyperkernelImagesConfig:
    train_digits: int = setting(300, "MNIST training digits (contexts)", ge=1)
    pixels_per_digit: int = setting(30, "random pixels observed per training digit", ge=1, le=784)
    test_digits: int = setting(30, "held-out digits whose bottom half is predicted", ge=1)
    data_dir: str = setting(
        "", "folder with the MNIST test files (empty: $HYPERNET_DATA or the user cache, downloading)", folder=True
    )
    image_side: int = setting(32, "sample images are downsampled to image_side x 1.5 image_side pixels", ge=4)
    observed_fraction: float = setting(0.3, "fraction of each sample image's pixels observed", gt=0, lt=1)
    frequencies: int = setting(4, "Fourier frequencies per pixel coordinate", ge=1)
    f_depth: int = setting(1, "hidden layers of the hypernetwork f (kernels)", ge=0)
    g_depth: int = setting(2, "hidden layers of the primary network g (kernels)", ge=0)
    weight_var: float = setting(2.0, "weight variance sigma_w^2 of the kernels", gt=0)
    bias_var: float = setting(0.1, "bias variance sigma_b^2 of the kernels", ge=0)
    diag_reg: float = setting(1e-4, "ridge added to the kernel diagonal, relative to its mean", gt=0)
    hyper_steps: int = setting(1500, "Adam steps of the finite hypernetwork", ge=1)
    hyper_width: int = setting(256, "hidden width of the finite hypernetwork", ge=1)
    primary_width: int = setting(64, "hidden width of the finite primary network", ge=1)

    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        Relation(
            ("train_digits", "test_digits"),
            lambda c: c.train_digits + c.test_digits <= MNIST_SIZES["test"],
            f"train_digits + test_digits <= {MNIST_SIZES['test']:,} (the MNIST test split)",
        ),
        Relation(
            ("image_side", "observed_fraction"),
            lambda c: (
                1
                <= int(c.observed_fraction * c.image_side * int(c.image_side * 1.5))
                < c.image_side * int(c.image_side * 1.5)
            ),
            "at least one observed and one hidden pixel per sample image",
        ),
    )


def fourier(coords: Tensor, frequencies: int) -> Tensor:
    """`coords: [N, 2]` in [0, 1] -> `[N, 4 * frequencies]` fixed Fourier features."""
    k = torch.arange(1, frequencies + 1, dtype=coords.dtype) * math.pi
    ang = coords[:, :, None] * k
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1).flatten(1)


def psnr(pred: Tensor, true: Tensor) -> float:
    mse = float((pred.clamp(0, 1) - true).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _block_predict(
    kernel: Any, train: tuple[Tensor, ...], test: tuple[Tensor, ...], alpha: Tensor, block: int = 4096
) -> Tensor:
    n = test[0].shape[0]
    out = torch.empty(n, dtype=alpha.dtype)
    for s in range(0, n, block):
        r = slice(s, min(n, s + block))
        out[r] = kernel(*[t[r] for t in test], *train) @ alpha
    return out


def _kernel_regression(
    kernel: Any, train: tuple[Tensor, ...], y: Tensor, test: tuple[Tensor, ...], diag_reg: float
) -> Tensor:
    k = kernel(*train, *train)
    k = k + diag_reg * k.diagonal().mean() * torch.eye(k.shape[0], dtype=k.dtype)
    alpha = torch.cholesky_solve(y[:, None].double(), torch.linalg.cholesky(k))[:, 0]
    return _block_predict(kernel, train, test, alpha)


def _train_hypernetwork(cfg: HyperkernelImagesConfig, x: Tensor, z: Tensor, y: Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    primary = nn.Sequential(nn.Linear(x.shape[1], cfg.primary_width), nn.ReLU(), nn.Linear(cfg.primary_width, 1))
    target = hn.TargetNetwork(primary)
    model = hn.HyperModel(target, hn.MLPHyperNetwork(z.shape[1], target.spec, hidden=(cfg.hyper_width,)))
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(cfg.hyper_steps):
        idx = torch.randint(x.shape[0], (256,), generator=g)
        loss = (model(x[idx], z[idx])[:, 0] - y[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _predict_model(model: nn.Module, x: Tensor, z: Tensor, block: int = 8192) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s : s + block], z[s : s + block])[:, 0] for s in range(0, x.shape[0], block)])


def _methods(
    cfg: HyperkernelImagesConfig, train: tuple[Tensor, Tensor, Tensor], test: tuple[Tensor, Tensor], seed: int
) -> dict[str, Tensor]:
    """Predictions of the three methods for test pairs `(x, z)` from training triples `(x, z, y)`."""
    x, z, y = train
    xt, zt = test
    wv, bv = cfg.weight_var, cfg.bias_var

    def hyper(xa: Tensor, za: Tensor, xb: Tensor, zb: Tensor) -> Tensor:
        return hyper_ntk(xa, za, xb, zb, f_depth=cfg.f_depth, g_depth=cfg.g_depth, weight_var=wv, bias_var=bv)

    def plain(xa: Tensor, xb: Tensor) -> Tensor:
        return mlp_ntk(xa, xb, depth=cfg.g_depth, weight_var=wv, bias_var=bv)

    model = _train_hypernetwork(cfg, x.float(), z.float(), y.float(), seed)
    return {
        "hyperkernel (NTK of h)": _kernel_regression(hyper, (x, z), y, (xt, zt), cfg.diag_reg),
        "finite hypernetwork (trained)": _predict_model(model, xt.float(), zt.float()).double(),
        "plain NTK of g (x only)": _kernel_regression(plain, (x,), y, (xt,), cfg.diag_reg),
    }


def _mnist(cfg: HyperkernelImagesConfig, ctx: RunContext) -> tuple[dict[str, float], plt.Figure]:
    data = load_mnist("test", cfg.data_dir or None)
    g = torch.Generator().manual_seed(ctx.seed)
    order = torch.randperm(len(data), generator=g)
    train_imgs = data.x[order[: cfg.train_digits]].double().view(-1, 28, 28)
    test_imgs = data.x[order[cfg.train_digits : cfg.train_digits + cfg.test_digits]].double().view(-1, 28, 28)

    def context(imgs: Tensor) -> Tensor:
        top = imgs.clone()
        top[:, 14:] = 0
        return top.flatten(1)

    rows, cols = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], 1).double() / 27
    feats = fourier(coords, cfg.frequencies)
    pix = torch.stack([torch.randperm(784, generator=g)[: cfg.pixels_per_digit] for _ in range(cfg.train_digits)])
    x = feats[pix.flatten()]
    z = context(train_imgs).repeat_interleave(cfg.pixels_per_digit, 0)
    y = train_imgs.flatten(1).gather(1, pix).flatten()
    bottom = torch.arange(14 * 28, 784)
    xt = feats[bottom].repeat(cfg.test_digits, 1)
    zt = context(test_imgs).repeat_interleave(len(bottom), 0)
    yt = test_imgs.flatten(1)[:, bottom].flatten()
    preds = _methods(cfg, (x, z, y), (xt, zt), ctx.seed)
    scores = {name: psnr(p, yt) for name, p in preds.items()}
    show = min(6, cfg.test_digits)
    fig, axes = plt.subplots(len(preds) + 1, show, figsize=(1.6 * show, 1.7 * (len(preds) + 1)), squeeze=False)
    for j in range(show):
        axes[0, j].imshow(test_imgs[j].numpy(), cmap="gray", vmin=0, vmax=1)
        for i, p in enumerate(preds.values(), start=1):
            img = test_imgs[j].clone().flatten()
            img[bottom] = p.view(cfg.test_digits, -1)[j].clamp(0, 1)
            axes[i, j].imshow(img.view(28, 28).numpy(), cmap="gray", vmin=0, vmax=1)
    for i, name in enumerate(["original", *preds]):
        axes[i, 0].set_ylabel(name.split(" (")[0], fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("MNIST completion: bottom half predicted from the top half")
    return scores, fig


def _sample_images(cfg: HyperkernelImagesConfig, ctx: RunContext) -> tuple[dict[str, float], plt.Figure]:
    from sklearn.datasets import load_sample_images

    h, w = cfg.image_side, int(cfg.image_side * 1.5)
    imgs = []
    for im in load_sample_images().images:
        grey = torch.tensor(im, dtype=torch.float64).mean(-1)[None, None] / 255.0
        imgs.append(nn.functional.interpolate(grey, size=(h, w), mode="area")[0, 0])
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([rows.flatten() / (h - 1), cols.flatten() / (w - 1)], 1).double()
    feats = fourier(coords, cfg.frequencies)
    g = torch.Generator().manual_seed(ctx.seed)
    n_obs = int(cfg.observed_fraction * h * w)
    train_parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    test_parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    for i, img in enumerate(imgs):
        perm = torch.randperm(h * w, generator=g)
        onehot = torch.zeros(len(imgs), dtype=torch.float64)
        onehot[i] = 1
        for part, idx in ((train_parts, perm[:n_obs]), (test_parts, perm[n_obs:])):
            part.append((feats[idx], onehot.expand(len(idx), -1), img.flatten()[idx], idx))
    x, z, y = (torch.cat([p[k] for p in train_parts]) for k in range(3))
    xt, zt, yt = (torch.cat([p[k] for p in test_parts]) for k in range(3))
    preds = _methods(cfg, (x, z, y), (xt, zt), ctx.seed)
    scores = {name: psnr(p, yt) for name, p in preds.items()}
    fig, axes = plt.subplots(len(imgs), len(preds) + 1, figsize=(2.4 * (len(preds) + 1), 1.8 * len(imgs)))
    offset = 0
    for i, img in enumerate(imgs):
        idx = test_parts[i][3]
        axes[i, 0].imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
        for j, p in enumerate(preds.values(), start=1):
            rec = img.clone().flatten()
            rec[idx] = p[offset : offset + len(idx)].clamp(0, 1)
            axes[i, j].imshow(rec.view(h, w).numpy(), cmap="gray", vmin=0, vmax=1)
        offset += len(idx)
    for j, name in enumerate(["original", *preds]):
        axes[0, j].set_title(name.split(" (")[0], fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Sample images from {cfg.observed_fraction:.0%} of the pixels")
    return scores, fig


@register(
    "hyperkernel-images",
    "image completion/representation: hyperkernel vs trained hypernetwork vs NTK of g",
    HyperkernelImagesConfig,
    quick={
        "train_digits": 40,
        "pixels_per_digit": 10,
        "test_digits": 4,
        "image_side": 12,
        "hyper_steps": 150,
        "hyper_width": 64,
    },
    headline=lambda summary: headline(summary),
    captions={
        "mnist_completion": "MNIST completion: held-out digits (top row) and their bottom halves as predicted "
        "by each method from the top half.",
        "sample_images": "scikit-learn's two sample images (left) and each method's reconstruction of the pixels "
        "it did not observe.",
    },
    prepare=lambda cfg: check_mnist("test", cfg.data_dir or None),
)
def run(cfg: HyperkernelImagesConfig, ctx: RunContext) -> dict[str, Any]:
    mnist_scores, fig = _mnist(cfg, ctx)
    ctx.save_figure(fig, "mnist_completion")
    print("MNIST completion PSNR: " + ", ".join(f"{k} {v:.2f}" for k, v in mnist_scores.items()), flush=True)
    sample_scores, fig = _sample_images(cfg, ctx)
    ctx.save_figure(fig, "sample_images")
    print("sample images PSNR: " + ", ".join(f"{k} {v:.2f}" for k, v in sample_scores.items()), flush=True)
    table = {
        name: {"mnist_completion_psnr_db": mnist_scores[name], "sample_images_psnr_db": sample_scores[name]}
        for name in mnist_scores
    }
    return {"psnr": table}


def headline(summary: dict[str, Any]) -> Table:
    """PSNR of each method on both tasks."""
    rows = [[name, r["mnist_completion_psnr_db"], r["sample_images_psnr_db"]] for name, r in summary["psnr"].items()]
    return Table(
        "Hyperkernel images: PSNR in dB (higher is better)",
        ["method", "MNIST completion", "sample images"],
        rows,
    )
