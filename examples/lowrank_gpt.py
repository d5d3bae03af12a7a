"""Generated low-rank adapters for a small GPT-style stack, per task or per sample.

Every attention projection (q, k, v, out) and MLP projection (fc, proj) of every block is
`W0 + U V^T`: `W0` trained directly (the hypernetwork's base), the rank-r factors `U, V` generated
from a condition. With one condition per sample, the target applies `x W0^T + (x V) U^T`, so no
per-sample `[B, out, in]` weight is ever formed: memory grows by `B r (out + in)` per projection.

    python examples/lowrank_gpt.py [--per-sample] [--steps 30]

It trains on a toy task (predict the next token of a sequence counting up by a step that depends on
the task) and prints the loss falling.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn

PROJECTIONS = ("q", "k", "v", "out", "fc", "proj")


class Block(nn.Module):
    """Pre-norm transformer block; its six projections are plain `nn.Linear` layers."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        """`x: [B, T, d] -> [B, T, d]`, causal self-attention then the MLP."""
        B, T, d = x.shape
        h = self.ln1(x)
        q, k, v = (p(h).view(B, T, self.heads, d // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(B, T, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """Token + position embeddings, `depth` blocks, a final LayerNorm and a vocabulary head."""

    def __init__(self, vocab: int = 32, d: int = 64, depth: int = 2, heads: int = 4, context: int = 16) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(depth))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        """`ids: [B, T] -> logits [B, T, vocab]`."""
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        out: Tensor = self.head(self.ln(x))
        return out


def adapted(gpt: nn.Module, num_tasks: int, rank: int = 4, hidden: tuple[int, ...] = (32,)) -> hn.HyperModel:
    """A `HyperModel` whose hypernetwork generates rank-`rank` adapters of every block projection
    from a task id (`TaskEmbedding`); everything else in `gpt` is trained directly."""
    target = hn.TargetNetwork(gpt, generate=[f"blocks.*.{p}.weight" for p in PROJECTIONS])
    hyper = hn.LowRankHyperNetwork(16, target.spec, rank=rank, hidden=hidden, theta0=target.initial_weights())
    return hn.HyperModel(target, hyper, hn.TaskEmbedding(num_tasks, 16))


def batch(tasks: Tensor, context: int, vocab: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Sequences counting up (mod vocab) by `task + 1` from a random start: `(inputs, targets)`,
    each `[B, context]` for `tasks: [B]`."""
    start = torch.randint(0, vocab, (tasks.shape[0], 1), generator=g)
    seq = (start + (tasks[:, None] + 1) * torch.arange(context + 1)) % vocab
    return seq[:, :-1], seq[:, 1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-sample", action="store_true", help="a different task in every sample of a batch")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    tasks_n, vocab, context = 4, 32, 16
    model = adapted(TinyGPT(vocab=vocab, context=context), tasks_n)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(args.steps):
        if args.per_sample:
            tasks = torch.randint(0, tasks_n, (32,), generator=g)
            cond = tasks  # [B]: one adapter set per sample
        else:
            cond = torch.randint(0, tasks_n, (), generator=g)  # one task for the whole batch
            tasks = cond.expand(32)
        x, y = batch(tasks, context, vocab, g)
        loss = F.cross_entropy(model(x, cond).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {loss.item():.3f}")
    generated, weights = model.hypernetwork.num_generated, model.target.spec.numel
    print(f"generated per condition: {generated:,} numbers for {weights:,} weights")


if __name__ == "__main__":
    main()
