"""`inr`: functional representations. A data-conditioned hypernetwork maps an image to the weights
of a small coordinate network that reconstructs it (`hypernet.methods.inr`); PSNR on held-out
images against

* an embedding-conditioned baseline of EQUAL trainable parameters: the same encoder, its output
  concatenated to the coordinates' Fourier features, into one shared coordinate network whose
  width is chosen so that the parameter counts match (`equal_width`);
* one coordinate network (the generated architecture) fitted per image, on the first
  `fit_images` held-out images (its cost: steps and seconds per image).

Two datasets: held-out MNIST digits (`dataset=mnist`, the training split to train, the test split
to evaluate; `--quick` uses scikit-learn's 8x8 digits instead) and scikit-learn's two sample images
(china, flower; shipped with scikit-learn), downsampled to `patch_side x 1.5 patch_side`, RGB (or
grey), cut into `patch x patch` patches, a random `patch_test_fraction` of them held out.
Super-resolution: each model's coordinate function is queried at the pixel centres of a grid twice
as fine (`upsampled_coordinates`) and compared with the same patch cut from the image downsampled to
twice the size (PSNR), beside bicubic upsampling of the low-resolution patch.

PSNR is per image on predictions clamped to [0, 1], averaged over the images; the digits' figure
is averaged over `seeds` seeds (the seed spread is the sample standard deviation), the patches'
over `patch_seeds`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn
from hypernet.data import MNIST_SIZES, check_mnist, load_digits, load_mnist
from hypernet.data.images import ImageFunctions, sample_image_patches, upsampled_coordinates
from hypernet.experiments.inr_figures import learning_curves, reconstruction_grid, super_resolution_figure
from hypernet.experiments.registry import PhaseTimer, RunContext, register
from hypernet.experiments.settings import Relation, no_folder_with_digits, setting
from hypernet.methods.inr import (
    EmbeddingINR,
    INRHyperNetwork,
    coordinate_network,
    equal_width,
    fit_networks,
    mlp_encoder,
    num_trainable,
    psnr,
)
from hypernet.report.table import Table
from hypernet.train import TrainConfig

DIGITS_SIZE = 1797  # scikit-learn's digits
DATASET_NAMES = {"mnist": "MNIST digits", "digits": "scikit-learn digits"}


@dataclass
class InrConfig:
    dataset: Literal["mnist", "digits"] = setting(
        "mnist", "digits to represent: MNIST (data_dir) or scikit-learn's 8x8 digits (no files)"
    )
    data_dir: str = setting(
        "", "folder with the MNIST files (empty: $HYPERNET_DATA or the user cache, downloading)", folder=True
    )
    train_images: int = setting(20000, "training digits (MNIST training split, or a random part of digits)", ge=1)
    test_images: int = setting(500, "held-out digits (MNIST test split, or the rest of digits)", ge=1)
    seeds: int = setting(3, "seeds of the digit models (PSNR averaged, spread reported)", ge=1)
    steps: int = setting(1000, "training steps of each digit model", ge=1)
    batch_size: int = setting(32, "images per training step", ge=1)
    pixels: int = setting(128, "random pixels per image in each training step (at most all of them)", ge=1)
    lr: float = setting(1e-3, "Adam learning rate", gt=0)
    activation: Literal["relu", "sine"] = setting(
        "relu", "coordinate networks: ReLU on Fourier features, or sines with SIREN's initialisation"
    )
    frequencies: int = setting(12, "Fourier frequencies per coordinate (relu)", ge=1)
    w0: float = setting(30.0, "SIREN's frequency factor (sine)", gt=0)
    hidden: tuple[int, ...] = setting((32, 32), "hidden widths of the generated coordinate network", ge=1, min_items=1)
    code: int = setting(32, "encoder output: the hypernetwork's input and the baseline's embedding", ge=1)
    encoder_hidden: tuple[int, ...] = setting((256,), "hidden widths of the (shared design of) encoder", ge=1)
    hyper_hidden: tuple[int, ...] = setting((), "hidden widths of the hypernetwork between code and weights", ge=1)
    fit_images: int = setting(16, "held-out images (the first ones) fitted with one network each", ge=1)
    fit_steps: int = setting(500, "Adam steps of each per-image fit (every pixel each step)", ge=1)
    fit_lr: float = setting(3e-3, "learning rate of the per-image fits", gt=0)
    patch_side: int = setting(128, "sample images are downsampled to patch_side x 1.5 patch_side pixels", ge=4)
    patch: int = setting(16, "side of the square patches cut from the sample images", ge=2)
    patch_test_fraction: float = setting(0.2, "fraction of the patches held out", gt=0, lt=1)
    grayscale: bool = setting(False, "sample images in grey instead of RGB")
    patch_steps: int = setting(1000, "training steps of each sample-patch model", ge=1)
    patch_seeds: int = setting(1, "seeds of the sample-patch models", ge=1)
    eval_every: int = setting(250, "steps between test-PSNR evaluations (first 100 held-out images)", ge=1)
    checkpoint_every: int = setting(250, "steps between checkpoints", ge=1)

    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        no_folder_with_digits("dataset"),
        Relation(
            ("dataset", "train_images", "test_images"),
            lambda c: (
                c.train_images <= MNIST_SIZES["train"] and c.test_images <= MNIST_SIZES["test"]
                if c.dataset == "mnist"
                else c.train_images + c.test_images <= DIGITS_SIZE
            ),
            "train_images <= 60,000 and test_images <= 10,000 (mnist), or their sum <= 1,797 (digits)",
        ),
        Relation(("fit_images", "test_images"), lambda c: c.fit_images <= c.test_images, "fit_images <= test_images"),
        Relation(
            ("patch_side", "patch", "patch_test_fraction", "fit_images"),
            lambda c: (
                c.patch_side % 2 == 0
                and c.patch <= c.patch_side
                and fit_images_ok(c.fit_images, num_patches(c.patch_side, c.patch), c.patch_test_fraction)
            ),
            "an even patch_side >= patch, and at least fit_images held-out patches and one training patch",
        ),
    )


def num_patches(side: int, patch: int) -> int:
    """Patches cut from the two sample images at `side x 1.5 side` pixels."""
    return 2 * (side // patch) * (round(1.5 * side) // patch)


def fit_images_ok(fit: int, total: int, fraction: float) -> bool:
    test = max(1, round(fraction * total))
    return fit <= test < total


def _digits(cfg: InrConfig, seed: int) -> tuple[Tensor, Tensor]:
    """Training and held-out digits `[N, 1, H, W]` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    if cfg.dataset == "digits":
        x = load_digits().x.view(-1, 1, 8, 8)
        order = torch.randperm(len(x), generator=g)
        return x[order[: cfg.train_images]], x[order[cfg.train_images : cfg.train_images + cfg.test_images]]
    train = load_mnist("train", cfg.data_dir or None).x
    test = load_mnist("test", cfg.data_dir or None).x
    train = train[torch.randperm(len(train), generator=g)[: cfg.train_images]]
    test = test[torch.randperm(len(test), generator=g)[: cfg.test_images]]
    return train.view(-1, 1, 28, 28), test.view(-1, 1, 28, 28)


def _models(cfg: InrConfig, shape: tuple[int, int, int], seed: int) -> tuple[INRHyperNetwork, EmbeddingINR]:
    """The hypernetwork and the embedding baseline with the same encoder design and (as near as a
    width allows) the same number of trainable parameters."""
    channels = shape[0]

    def encoder() -> nn.Module:
        return mlp_encoder(shape, cfg.encoder_hidden, cfg.code)

    def embedding(width: int) -> EmbeddingINR:
        hidden = (width,) * len(cfg.hidden)
        return EmbeddingINR(encoder(), cfg.code, hidden, channels, cfg.activation, cfg.frequencies, cfg.w0)

    torch.manual_seed(seed)
    hyper = INRHyperNetwork(
        encoder(), cfg.code, cfg.hidden, channels, cfg.activation, cfg.frequencies, cfg.hyper_hidden, cfg.w0
    )
    width = equal_width(num_trainable(hyper), lambda w: num_trainable(embedding(w)))
    torch.manual_seed(seed)
    return hyper, embedding(width)


@torch.no_grad()
def render(model: nn.Module, images: Tensor, coords: Tensor, chunk: int = 100) -> Tensor:
    """`images: [N, C, H, W]`, `coords: [K, 2]` -> the model's values `[N, C, K]` there, clamped to [0, 1]."""
    model.eval()
    out = []
    for s in range(0, len(images), chunk):
        part = images[s : s + chunk]
        out.append(model(part, coords.expand(len(part), -1, -1)).clamp(0, 1).transpose(1, 2))
    return torch.cat(out)


def _psnr_of(model: nn.Module, images: Tensor) -> Tensor:
    """Per-image PSNR `[N]` of `model`'s reconstruction of `images` at every pixel."""
    funcs = ImageFunctions(images)
    return psnr(render(model, images, funcs.coords), images.flatten(2))


def _train(
    ctx: RunContext,
    timer: PhaseTimer,
    cfg: InrConfig,
    name: str,
    model: nn.Module,
    train: Tensor,
    test: Tensor,
    steps: int,
    seed: int,
) -> float:
    """Train `model` to reconstruct `train` from random pixels; returns the seconds it took (over a
    killed run and its resume: the time is kept in the run folder).

    On several processes (DDP) every process draws the same global batch (images and their
    pixels, from the one seeded generator) and keeps its strided part: every image has `pixels`
    values, so the mean over the processes of their parts' means is the whole batch's mean, and
    the models draw nothing random of their own. Rank 0 alone evaluates (the training loop's rule)."""
    funcs = ImageFunctions(train)
    pixels = min(cfg.pixels, funcs.height * funcs.width)
    probe = test[:100]
    trained = ctx.distribute(model)

    def step(_: int, g: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        idx = torch.randint(len(funcs), (cfg.batch_size,), generator=g)
        coords, values = funcs.sample(idx, pixels, g)
        images, coords, values = ctx.shard(train[idx], coords, values)
        return (trained(images, coords) - values).pow(2).mean(), {}

    def evaluate() -> dict[str, float]:
        out = {"test_psnr": float(_psnr_of(model, probe).mean())}
        model.train()
        return out

    config = TrainConfig(
        steps=steps,
        lr=cfg.lr,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        log_every=max(1, cfg.eval_every // 5),
    )
    generator = torch.Generator().manual_seed(seed)
    cost = timer.train(name, lambda: ctx.train(name, trained, model.parameters(), step, config, evaluate, generator))
    return float(cost["wall_s"])


def _fit_per_image(cfg: InrConfig, images: Tensor, seed: int) -> tuple[nn.Module, Tensor, float]:
    """One coordinate network fitted to each of `images: [n, C, H, W]`: the target, the weights
    `[n, P]` and the seconds of all the fits (done together in one batched call)."""
    torch.manual_seed(seed)
    make = lambda: coordinate_network(cfg.hidden, images.shape[1], cfg.activation, cfg.frequencies, cfg.w0)  # noqa: E731
    target = hn.TargetNetwork(make())
    init = torch.stack([hn.TargetNetwork(make()).initial_weights() for _ in range(len(images))])
    funcs = ImageFunctions(images)
    coords, values = funcs.all_pixels(torch.arange(len(images)))
    start = time.perf_counter()
    weights = fit_networks(target, init, coords, values, cfg.fit_steps, cfg.fit_lr)
    return target, weights, time.perf_counter() - start


class _Fitted(nn.Module):
    """Fitted per-image networks behind the `(images, coords)` call of the other models (the images
    are ignored: row `b` of the weights belongs to image `b` of the fitted subset)."""

    def __init__(self, target: nn.Module, weights: Tensor) -> None:
        super().__init__()
        self.target, self.fitted = target, weights

    def forward(self, images: Tensor, coords: Tensor) -> Tensor:
        out: Tensor = self.target(coords, self.fitted[: len(images)])
        return out


def _stats(values: list[float]) -> dict[str, Any]:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0, "per_seed": values}


def _experiment(
    ctx: RunContext, timer: PhaseTimer, cfg: InrConfig, label: str, train: Tensor, test: Tensor, seeds: int, steps: int
) -> tuple[dict[str, Any], dict[str, nn.Module]]:
    """Both conditioned models over `seeds` seeds and the per-image fits on `test[:fit_images]`."""
    shape = (int(train.shape[1]), int(train.shape[2]), int(train.shape[3]))
    fit = test[: cfg.fit_images]
    res: dict[str, Any] = {"train_images": len(train), "test_images": len(test), "image_shape": list(shape)}
    models: dict[str, nn.Module] = {}
    for method in ("hypernetwork", "embedding"):
        scores, subset, seconds = [], [], []
        for k in range(seeds):
            seed = ctx.seed + k
            model = _models(cfg, shape, seed)[0 if method == "hypernetwork" else 1]
            seconds.append(_train(ctx, timer, cfg, f"{label}-{method}-seed{seed}", model, train, test, steps, seed))
            scores.append(float(_psnr_of(model, test).mean()))
            subset.append(float(_psnr_of(model, fit).mean()))
            if k == 0:
                models[method] = model
        res[method] = {
            "psnr_db": _stats(scores),
            "fit_subset_psnr_db": _stats(subset),
            "train_seconds": _stats(seconds),
            "trainable_parameters": num_trainable(models[method]),
            "steps": steps,
        }
    hyper = models["hypernetwork"]
    assert isinstance(hyper, INRHyperNetwork)
    res["hypernetwork"]["generated_weights"] = hyper.num_generated
    embedding = models["embedding"]
    assert isinstance(embedding, EmbeddingINR)
    res["embedding"]["width"] = embedding.width
    start = time.perf_counter()
    with torch.no_grad():
        hyper.weights(fit)
    res["hypernetwork"]["seconds_to_generate_fit_subset"] = time.perf_counter() - start
    target, weights, fit_seconds = _fit_per_image(cfg, fit, ctx.seed)
    fitted = _Fitted(target, weights)
    models["per-image fit"] = fitted
    res["per_image_fit"] = {
        "images": len(fit),
        "fit_subset_psnr_db": float(_psnr_of(fitted, fit).mean()),
        "steps_per_image": cfg.fit_steps,
        "seconds_all_images": fit_seconds,
        "seconds_per_image": fit_seconds / len(fit),
        "weights_per_image": int(weights.shape[1]),
    }
    return res, models


def _super_resolution(
    test_low: Tensor, test_high: Tensor, models: dict[str, nn.Module], fit_images: int
) -> dict[str, Any]:
    """PSNR of each model's coordinate function at the 2x grid against the 2x patches, and of
    bicubic upsampling: `psnr_db` over every held-out patch (the per-image fits: over their subset
    only), `fit_subset_psnr_db` over the first `fit_images` (the per-image fits' subset) for all."""
    h, w = test_low.shape[-2:]
    coords = upsampled_coordinates(h, w, 2)
    scores: dict[str, Tensor] = {}
    for name, model in models.items():
        n = len(getattr(model, "fitted", test_low))  # the per-image fits exist for their subset only
        scores[name] = psnr(render(model, test_low[:n], coords), test_high[:n].flatten(2))
    bicubic = F.interpolate(test_low, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    scores["bicubic"] = psnr(bicubic, test_high)
    return {
        name: {
            "images": len(s),
            "psnr_db": float(s.mean()),
            "fit_subset_images": fit_images,
            "fit_subset_psnr_db": float(s[:fit_images].mean()),
        }
        for name, s in scores.items()
    }


def _prepare(cfg: InrConfig) -> None:
    if cfg.dataset == "mnist":
        check_mnist("train", cfg.data_dir or None)
        check_mnist("test", cfg.data_dir or None)


@register(
    "inr",
    "functional representations: image -> weights of its coordinate network, vs embedding and per-image fits",
    InrConfig,
    quick={
        "dataset": "digits",
        "train_images": 1400,
        "test_images": 200,
        "seeds": 1,
        "steps": 300,
        "frequencies": 4,
        "encoder_hidden": (64,),
        "code": 16,
        "fit_images": 8,
        "fit_steps": 200,
        "patch_side": 32,
        "patch": 8,
        "patch_test_fraction": 0.25,
        "patch_steps": 100,
        "eval_every": 100,
        "checkpoint_every": 100,
    },
    headline=lambda summary: headline(summary),
    captions={
        "reconstructions": "Held-out digits (top row) and their reconstructions by the generated coordinate "
        "network, the equal-parameter embedding baseline and one network fitted per image.",
        "patches": "Held-out patches of scikit-learn's sample images and their reconstructions.",
        "super_resolution": "Super-resolution: each model's coordinate function queried at twice the "
        "resolution, beside bicubic upsampling and the patch cut from the image downsampled to twice the size.",
        "learning_curves": "Test PSNR (first 100 held-out images) during training, first seed.",
    },
    prepare=_prepare,
    distributed=True,
    global_batch=lambda cfg: cfg.batch_size,
)
def run(cfg: InrConfig, ctx: RunContext) -> dict[str, Any]:
    train, test = _digits(cfg, ctx.seed)
    timer = PhaseTimer(ctx)
    digits, digit_models = _experiment(ctx, timer, cfg, cfg.dataset, train, test, cfg.seeds, cfg.steps)
    low = sample_image_patches(cfg.patch_side, cfg.patch, cfg.grayscale)
    high = sample_image_patches(2 * cfg.patch_side, 2 * cfg.patch, cfg.grayscale)
    order = torch.randperm(len(low), generator=torch.Generator().manual_seed(ctx.seed))
    n_test = max(1, round(cfg.patch_test_fraction * len(low)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    patches, patch_models = _experiment(
        ctx, timer, cfg, "patches", low[train_idx], low[test_idx], cfg.patch_seeds, cfg.patch_steps
    )
    patches["super_resolution"] = _super_resolution(low[test_idx], high[test_idx], patch_models, cfg.fit_images)
    patches["patch_side"], patches["patch"], patches["grayscale"] = cfg.patch_side, cfg.patch, cfg.grayscale

    n_show = min(8, cfg.fit_images)
    ctx.save_figure(reconstruction_grid(test[:n_show], digit_models, render, digits), "reconstructions")
    ctx.save_figure(reconstruction_grid(low[test_idx][:n_show], patch_models, render, patches), "patches")
    ctx.save_figure(
        super_resolution_figure(
            low[test_idx][:n_show],
            high[test_idx][:n_show],
            patch_models,
            test[:n_show],
            digit_models["hypernetwork"],
            render,
            patches["super_resolution"],
        ),
        "super_resolution",
    )
    ctx.save_figure(
        learning_curves(
            ctx.metrics(), [f"{cfg.dataset}-hypernetwork-seed{ctx.seed}", f"{cfg.dataset}-embedding-seed{ctx.seed}"]
        ),
        "learning_curves",
    )
    return {"dataset": cfg.dataset, "digits": digits, "patches": patches}


def headline(summary: dict[str, Any]) -> Table:
    """PSNR (dB) of each method on held-out digits and sample patches, 2x super-resolution, parameters."""
    d, p = summary["digits"], summary["patches"]
    sr = p["super_resolution"]
    rows: list[list[Any]] = []
    for key, name in (("hypernetwork", "hypernetwork"), ("embedding", "embedding (equal parameters)")):
        rows.append(
            [
                name,
                d[key]["psnr_db"]["mean"],
                d[key]["psnr_db"]["std"],
                d[key]["fit_subset_psnr_db"]["mean"],
                p[key]["psnr_db"]["mean"],
                p[key]["fit_subset_psnr_db"]["mean"],
                sr[key]["fit_subset_psnr_db"],
                d[key]["trainable_parameters"],
                d[key]["train_seconds"]["mean"],
            ]
        )
    fit_d, fit_p = d["per_image_fit"], p["per_image_fit"]
    rows.append(
        [
            "per-image fit",
            "-",
            "-",
            fit_d["fit_subset_psnr_db"],
            "-",
            fit_p["fit_subset_psnr_db"],
            sr["per-image fit"]["fit_subset_psnr_db"],
            fit_d["weights_per_image"],
            fit_d["seconds_all_images"],
        ]
    )
    rows.append(["bicubic upsampling", "-", "-", "-", "-", "-", sr["bicubic"]["fit_subset_psnr_db"], 0, 0.0])
    seeds = len(d["hypernetwork"]["psnr_db"]["per_seed"])
    return Table(
        f"INR: PSNR (dB) on held-out {DATASET_NAMES[summary['dataset']]} and sample-image patches",
        [
            "method",
            f"digits ({seeds} seeds)",
            "seed std",
            f"digits, first {fit_d['images']}",
            "patches",
            f"patches, first {fit_p['images']}",
            f"patches 2x, first {fit_p['images']}",
            "trainable parameters (digits)",
            "train seconds (digits)",
        ],
        rows,
        note=f"per-image fit: one network per image, {fit_d['steps_per_image']} steps each, on the first "
        f"{fit_d['images']} held-out digits / {fit_p['images']} patches (parameters: per image; seconds: all)",
    )
