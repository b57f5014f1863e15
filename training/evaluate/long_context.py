"""Long context: passkey retrieval at chosen lengths and depths, per long-context method (table + heat map).

    python -m training.evaluate --checkpoint runs/demo/train/final --tasks passkey

A prompt of exactly ``length`` tokens hides a 5-digit pass key inside filler sentences at a relative
``depth`` (0 = start, 1 = end) and ends with a question whose answer is the key (the passkey test of
Mohtashami & Jaggi 2023, the needle-in-a-haystack grid of the Qwen2 report, fig. 1). A cell is
retrieved when every answer token is the argmax given the prompt and the key's earlier tokens, which
is what greedy decoding would write (one forward pass instead of one per token; with dynamic NTK the
base then follows prompt + answer length, a difference of a few tokens). ``logprob`` is the mean
log-probability of the answer tokens, a finer signal for small models.

The same weights are evaluated under each variant of ``VARIANTS`` (training length L, longest length
Lmax): ``plain`` RoPE; ``ntk_logn`` (Qwen v1: dynamic NTK + LogN, Qwen 2023 sec. 2.3); ``yarn``
(factor Lmax / L over original length L, Peng et al. 2023); ``dca`` (Dual Chunk Attention with chunk
L, An et al. 2024) and ``dca_yarn`` (the Qwen2 report's combination, sec. 2.2).
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from common.plot import pyplot, save
from training.model.checkpoint import build_model, state_for_saving
from training.model.qwen import ModelConfig

INTRO = "There is a pass key hidden in the long text below. Find it and remember it.\n\n"
FILLER = "Rain fell on the quiet town. The baker opened the shop early. A dog slept by the warm stove. "
NEEDLE = "\nThe pass key is {key}. Remember it: {key} is the pass key.\n"
QUESTION = "\nWhat is the pass key? The pass key is"
VARIANTS = ("plain", "ntk_logn", "yarn", "dca", "dca_yarn")


@dataclass(frozen=True)
class PasskeyConfig:
    train_len: int = 0                   # L; 0 = the model's train_seq_len
    lengths: tuple[int, ...] = ()        # prompt lengths in tokens; empty = L, 2L, 4L
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    variants: tuple[str, ...] = VARIANTS
    trials: int = 2                      # keys per cell
    dca_local_size: int = 0              # w; 0 = L // 32 (Qwen2.5-1M config: chunk 262144, local 8192)
    seed: int = 0


def variant_config(cfg: ModelConfig, name: str, train_len: int, max_len: int, local: int) -> ModelConfig:
    """The model config with one long-context method switched on (and the others off)."""
    plain = dataclasses.replace(cfg, use_dynamic_ntk=False, use_logn_attn=False, rope_type="default",
                                rope_factor=1.0, dca_chunk_size=None, train_seq_len=train_len)
    yarn = dict(rope_type="yarn", rope_factor=max(max_len / train_len, 1.0), rope_original_max_position=train_len)
    dca = dict(dca_chunk_size=train_len, dca_local_size=local or max(train_len // 32, 1))
    options = {"plain": {}, "ntk_logn": dict(use_dynamic_ntk=True, use_logn_attn=True), "yarn": yarn,
               "dca": dca, "dca_yarn": {**dca, **yarn}}
    if name not in options:
        raise ValueError(f"unknown long-context variant {name!r} (known: {', '.join(options)})")
    return dataclasses.replace(plain, **options[name])


def build_prompt(tokenizer, length: int, depth: float, key: str) -> tuple[list[int], list[int], int]:
    """(prompt ids of exactly `length` tokens, answer ids, index where the needle starts)."""
    intro, needle, question = (tokenizer.encode(t) for t in (INTRO, NEEDLE.format(key=key), QUESTION))
    budget = length - len(intro) - len(needle) - len(question)
    if budget < 0:
        raise ValueError(f"length {length} is shorter than the passkey prompt without filler")
    unit = tokenizer.encode(FILLER)
    filler = (unit * (budget // len(unit) + 1))[:budget]
    cut = round(depth * budget / len(unit)) * len(unit)       # at a sentence-group boundary
    cut = min(cut, budget)
    ids = intro + filler[:cut] + needle + filler[cut:] + question
    return ids, tokenizer.encode(" " + key), len(intro) + cut


@torch.no_grad()
def score_cell(model, prompt: list[int], answer: list[int]) -> tuple[bool, float]:
    """(greedy retrieves the answer, mean log-probability of the answer tokens)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + answer[:-1]], device=device)
    logits = model(ids, logits_to_keep=len(answer)).logits[0].float()   # [len(answer), V]
    logp = F.log_softmax(logits, dim=-1)
    target = torch.tensor(answer, device=device)
    return bool((logp.argmax(-1) == target).all()), float(logp.gather(-1, target[:, None]).mean())


def lengths_of(cfg: PasskeyConfig, train_len: int) -> tuple[int, ...]:
    return cfg.lengths or (train_len, 2 * train_len, 4 * train_len)


def passkey_table(model, tokenizer, cfg: PasskeyConfig) -> list[dict]:
    """One row per (variant, length, depth): accuracy over `trials` keys and the mean answer log-prob."""
    train_len = cfg.train_len or model.cfg.train_seq_len
    lengths = lengths_of(cfg, train_len)
    state, rows = state_for_saving(model), []
    device = next(model.parameters()).device
    for name in cfg.variants:
        vcfg = variant_config(model.cfg, name, train_len, max(lengths), cfg.dca_local_size)
        variant = build_model(vcfg, state).to(device).eval()
        rng = random.Random(cfg.seed)            # the same keys for every variant
        for length in lengths:
            for depth in cfg.depths:
                keys = [str(rng.randint(10000, 99999)) for _ in range(cfg.trials)]
                cells = [score_cell(variant, *build_prompt(tokenizer, length, depth, key)[:2]) for key in keys]
                rows.append({"variant": name, "length": length, "depth": depth,
                             "accuracy": sum(c[0] for c in cells) / len(cells),
                             "logprob": sum(c[1] for c in cells) / len(cells)})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Accuracy per variant (rows) and length (columns), averaged over depths."""
    lengths = sorted({r["length"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines = ["| variant | " + " | ".join(f"{n:,}" for n in lengths) + " |", "|---" * (len(lengths) + 1) + "|"]
    for v in variants:
        cells = []
        for n in lengths:
            sel = [r for r in rows if r["variant"] == v and r["length"] == n]
            acc, lp = (sum(r[k] for r in sel) / len(sel) for k in ("accuracy", "logprob"))
            cells.append(f"{acc:.2f} ({lp:.2f})")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heatmap(rows: list[dict], path, metric: str = "accuracy"):
    """One panel per variant: depth (y) by length (x), coloured by `metric`; saved as PNG."""
    plt = pyplot()
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lengths, depths = sorted({r["length"] for r in rows}), sorted({r["depth"] for r in rows})
    fig, axes = plt.subplots(1, len(variants), figsize=(2.8 * len(variants), 3.4), squeeze=False, sharey=True)
    lo, hi = (0.0, 1.0) if metric == "accuracy" else (min(r[metric] for r in rows), max(r[metric] for r in rows))
    for ax, v in zip(axes[0], variants):
        grid = [[next(r[metric] for r in rows if r["variant"] == v and r["length"] == n and r["depth"] == d)
                 for n in lengths] for d in depths]
        image = ax.imshow(grid, cmap="RdYlGn", vmin=lo, vmax=hi, aspect="auto")
        for (y, x), value in np.ndenumerate(np.asarray(grid)):
            ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(lengths)), [f"{n:,}" for n in lengths], rotation=45)
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_title(v)
        ax.set_xlabel("context length (tokens)")
    axes[0][0].set_ylabel("passkey depth")
    fig.colorbar(image, ax=axes[0].tolist(), label=metric)
    return save(fig, path, dpi=100)
