"""The command line of every training phase: `python -m training.train` and `python -m training.align.<phase>`
parse the same flags, load the recipe with common.recipe (TOML tables into frozen dataclasses, `base =`,
`--set section.key=value`, errors naming the key), start the process group under torchrun, build the
phase and run it through the one loop (training/loop.py).

    python -m training.train --recipe R.toml --set optim.lr=1e-3 --max-steps 10      # stop at step 10
    python -m training.align.dpo --init runs/demo/sft/final --data runs/demo/mix/preference --resume
    torchrun --nproc_per_node=2 -m training.align.dpo ...                             # DDP (gloo on CPU)

Path flags are overrides: --init (train.init), --data (data.root), --out (train.out), --reward
(train.reward); a recipe named by file name alone is looked up in training/recipes/.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from common.recipe import Recipe
from training import dist
from training.loop import Phase, Trainer

RECIPES = Path(__file__).resolve().parent / "recipes"


def phase_args(prog: str, doc: str | None, recipe: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(RECIPES / f"{recipe}.toml"), help="TOML recipe")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="recipe override")
    p.add_argument("--init", help="checkpoint folder to start from (train.init)")
    p.add_argument("--data", "--prompts", dest="data", help="shards folder (data.root)")
    p.add_argument("--out", help="output folder (train.out)")
    p.add_argument("--reward", help="reward model folder (online DPO, PPO: train.reward)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this step (the lr schedule still spans "
                                                                 "train.steps)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in train.checkpoint_dir (default <out>/checkpoints)")
    return p


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """--set items plus the path flags as train.init / data.root / train.out / train.reward overrides."""
    pairs = (("train.init", args.init), ("data.root", args.data), ("train.out", args.out),
             ("train.reward", args.reward))
    return list(args.set) + [f"{k}={json.dumps(v)}" for k, v in pairs if v]


def load_recipe(path: str | Path | None, schema: dict[str, type], overrides: list[str] = ()) -> Recipe:
    return Recipe.load(path, schema, list(overrides), recipe_dirs=(RECIPES,))


def run_phase(prog: str, doc: str | None, schema: dict[str, type], build: Callable[[Recipe, dist.Env], Phase],
              argv: list[str] | None, recipe: str) -> dict:
    """Parses argv, loads the recipe, builds the phase (seeded with train.seed) and trains it; rank 0
    prints and returns the summary."""
    args = phase_args(prog, doc, recipe).parse_args(argv)
    loaded = load_recipe(args.recipe, schema, cli_overrides(args))
    out = Path(loaded.train.out)
    with dist.distributed(loaded.train.device) as env:
        if env.device.type == "cpu":
            keep_freed_memory()
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "recipe.json").write_text(json.dumps(loaded.to_dict(), indent=2) + "\n")
        env.barrier()
        torch.manual_seed(loaded.train.seed)
        summary = Trainer(build(loaded, env), loaded, env, out).fit(args.max_steps, args.resume)
    if env.is_main:
        print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=2))
    return summary


def keep_freed_memory() -> None:
    """On glibc, serve large blocks from the heap and keep them after free: a CPU step allocates the same
    [B, T, vocab] logits every time, and fresh mmap pages cost more system time than the math (-25% CPU on the
    demo). M_MMAP_MAX = -4, M_TRIM_THRESHOLD = -1 in malloc.h."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-4, 0)
        libc.mallopt(-1, 1 << 30)
    except (OSError, AttributeError):   # not glibc: nothing to tune
        pass
