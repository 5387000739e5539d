"""ANCHOR, NOT GENLAB: a faithful re-implementation of nanoGPT's CPU recipe (karpathy/nanoGPT, MIT licence).

nanoGPT's repository cannot be fetched from this machine, so this file re-implements,
from its model.py, train.py, sample.py and data/shakespeare_char/prepare.py, exactly what
the issue's command runs:

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
        --lr_decay_iters=2000 --dropout=0.0

i.e. GPT-2 blocks (LayerNorm without bias, fused causal attention, GELU MLP, learned
positions, tied head, N(0, 0.02) init with 0.02/sqrt(2 n_layer) for residual projections),
AdamW (betas 0.9/0.99, weight decay 0.1 on matrices only), lr 1e-3 with 100 warm-up
iterations and cosine decay to 1e-4 at 2000, clipping at 1.0, random batches drawn with
replacement from the first 90% of the characters, evaluation every 250 iterations on 20
batches of each split, and `generate` (crop to block_size, full forward per token, softmax,
multinomial). Nothing of genlab is imported. Run it as a script; it prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout, self.resid_dropout = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0,
                                           is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(cfg.n_embd, cfg.bias), CausalSelfAttention(cfg)
        self.ln_2, self.mlp = LayerNorm(cfg.n_embd, cfg.bias), MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd), wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout), h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.n_embd, cfg.bias)))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return self.lm_head(x[:, [-1], :]), None

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)  # fused only on CUDA in nanoGPT

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.cfg.block_size else idx[:, -self.cfg.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            probs = F.softmax(logits, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
        return idx


class Config:
    # config/train_shakespeare_char.py, then the command line overrides of the issue
    block_size, batch_size, n_layer, n_head, n_embd, dropout, bias = 64, 12, 4, 4, 128, 0.0, False
    learning_rate, max_iters, lr_decay_iters, min_lr, warmup_iters = 1e-3, 2000, 2000, 1e-4, 100
    beta1, beta2, weight_decay, grad_clip = 0.9, 0.99, 1e-1, 1.0
    eval_interval, eval_iters = 250, 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/tinyshakespeare.txt")
    parser.add_argument("--max-iters", type=int, default=Config.max_iters)
    parser.add_argument("--gen-tokens", type=int, default=500)
    parser.add_argument("--generate-only", type=int, default=0, metavar="REPEATS",
                        help="skip training: time `generate` REPEATS times with the initial weights (its speed "
                             "does not depend on them) and print tokens/s")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config()
    cfg.max_iters = args.max_iters
    cfg.lr_decay_iters = args.max_iters
    torch.manual_seed(args.seed)

    text = open(args.data).read()  # prepare.py: vocabulary of the whole text, 90/10 split
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = len(data)
    splits = {"train": data[: int(n * 0.9)], "val": data[int(n * 0.9):]}
    cfg.vocab_size = len(chars)

    def get_batch(split):
        d = splits[split]
        ix = torch.randint(len(d) - cfg.block_size, (cfg.batch_size,))
        x = torch.stack([torch.from_numpy(d[i : i + cfg.block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(d[i + 1 : i + 1 + cfg.block_size].astype(np.int64)) for i in ix])
        return x, y

    model = GPT(cfg)
    if args.generate_only:
        model.eval()
        rates = []
        for _ in range(args.generate_only):
            stamp = time.time()
            model.generate(torch.zeros((1, 1), dtype=torch.long), args.gen_tokens, temperature=0.8, top_k=200)
            rates.append(args.gen_tokens / (time.time() - stamp))
        print(json.dumps({"generate_tokens_per_s": max(rates), "generate_tokens_per_s_runs": rates,
                          "parameters": sum(p.numel() for p in model.parameters())}))
        return
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ("train", "val"):
            losses = torch.zeros(cfg.eval_iters)
            for k in range(cfg.eval_iters):
                losses[k] = model(*get_batch(split))[1].item()
            out[split] = losses.mean().item()
        model.train()
        return out

    def get_lr(it):
        if it < cfg.warmup_iters:
            return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
        if it > cfg.lr_decay_iters:
            return cfg.min_lr
        ratio = (it - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)
        return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)

    started = time.time()
    history, best_val = [], 1e9
    x, y = get_batch("train")
    for it in range(cfg.max_iters + 1):
        lr = get_lr(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if it % cfg.eval_interval == 0:
            losses = estimate_loss()
            history.append({"iter": it, "time": round(time.time() - started, 2), **losses})
            best_val = min(best_val, losses["val"])
        _, loss = model(x, y)
        x, y = get_batch("train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    train_seconds = time.time() - started

    model.eval()
    with torch.no_grad():  # not nanoGPT's: the whole val split in windows of block_size, as bench/lm.py scores genlab
        val = torch.from_numpy(splits["val"].astype(np.int64))
        # each token predicted once, from the start of its window; full windows in batches, the last one alone
        n = (len(val) - 1) // cfg.block_size
        windows = val[: n * cfg.block_size + 1].unfold(0, cfg.block_size + 1, cfg.block_size)
        parts = list(windows.split(64)) + (
            [val[n * cfg.block_size :][None]] if len(val) - 1 > n * cfg.block_size else []
        )
        total = sum(float(model(w[:, :-1], w[:, 1:])[1]) * w[:, 1:].numel() for w in parts)
        count = len(val) - 1
    stamp = time.time()
    model.generate(torch.zeros((1, 1), dtype=torch.long), args.gen_tokens, temperature=0.8, top_k=200)
    gen_seconds = time.time() - stamp
    print(
        json.dumps(
            {
                "val_loss": history[-1]["val"],
                "val_loss_full_split": total / count,
                "best_val_loss": best_val,
                "train_seconds": train_seconds,
                "iters": cfg.max_iters,
                "parameters": sum(p.numel() for p in model.parameters()),
                "generate_tokens_per_s": args.gen_tokens / gen_seconds,
                "history": history,
            }
        )
    )


if __name__ == "__main__":
    main()
