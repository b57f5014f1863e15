"""The pretraining trainer on tiny shards written here: loader coverage, exact resume, gradient
accumulation equal to the large batch (and to a per-document reference), schedules, weight-decay
groups, NaN guard, checkpoints, metrics and HF export. All fp32 on CPU, a few seconds each."""
from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from train_testlib import recipe_args, write_shards
from training.model import checkpoint as ckpt
from training.data import IGNORE, ShardData, StepLoader, encode_rows
from training.metrics import read_metrics
from training.optim import OptimConfig, lr_factor, param_groups
from training.loop import NonFiniteLoss
from training.train import SECTIONS, main


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"))


def all_rows(root: Path, split: str) -> list[tuple[list, list]]:
    """Every row in file order, read with pyarrow alone (the reference for the loader)."""
    rows = []
    for f in sorted((root / split).glob("*.parquet")):
        t = pq.read_table(f)
        rows += list(zip(t.column("input_ids").to_pylist(), t.column("doc_starts").to_pylist()))
    return rows


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_model(out / "final").state_dict()


# ----------------------------------------------------------------------------- data

def test_encode_rows_doc_ids_targets_and_padding():
    batch = encode_rows([([5, 6, 7, 8, 9], [0, 2]), ([1, 2, 3], [0, 1])], row_width=5)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8], [1, 2, 3, 0]]   # the last token is input only
    assert batch.targets.tolist() == [[6, 7, 8, 9], [2, 3, IGNORE, IGNORE]]
    assert batch.doc_ids.tolist() == [[1, 1, 2, 2], [1, 2, -1, -1]]
    assert batch.n_targets == 6


@pytest.mark.parametrize("world", [1, 2, 3])
def test_loader_covers_each_row_once_per_epoch_for_any_world(shards, world):
    data = ShardData(shards, "train")
    reference = all_rows(shards, "train")
    assert data.rows == len(reference) and len(data.groups) > 2
    loaders = [StepLoader(data, 1, 1, r, world, seed=3) for r in range(world)]
    seen = []
    while len(seen) < data.rows:
        seen += [tuple(loader.next_step()[0].input_ids[0].tolist()) for loader in loaders]
    width = data.row_width - 1
    expected = [tuple((ids + [0] * width)[:width]) for ids, _ in reference]
    assert sorted(seen[:data.rows]) == sorted(expected)


def test_loader_is_world_invariant_and_resumes_exactly(shards):
    data = ShardData(shards, "train")
    one = StepLoader(data, micro_batch=2, grad_accum=4, seed=5)
    two = [StepLoader(ShardData(shards, "train"), 2, 2, rank, 2, seed=5) for rank in range(2)]
    for _ in range(7):   # crosses an epoch boundary (the tiny split has ~30 rows)
        big = torch.cat([b.input_ids for b in one.next_step()])
        split = torch.cat([b.input_ids for loader in two for b in loader.next_step()])
        assert torch.equal(big, split)
    resumed = StepLoader(ShardData(shards, "train"), 2, 4, seed=5)
    resumed.load_state_dict(one.state_dict())
    assert torch.equal(torch.cat([b.input_ids for b in resumed.next_step()]),
                       torch.cat([b.input_ids for b in one.next_step()]))


# ----------------------------------------------------------------------------- optimisation

def test_schedules_match_formulas():
    cfg = OptimConfig(warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    assert lr_factor(0, cfg, 110) == pytest.approx(0.1)
    assert lr_factor(9, cfg, 110) == pytest.approx(1.0)
    assert lr_factor(60, cfg, 110) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, cfg, 110) == pytest.approx(0.1)
    linear = OptimConfig(warmup_steps=0, min_lr_ratio=0.0, schedule="linear")
    assert lr_factor(25, linear, 100) == pytest.approx(0.75)
    assert lr_factor(50, OptimConfig(warmup_steps=0, schedule="constant"), 100) == 1.0


def test_no_weight_decay_on_norms_biases_and_embeddings():
    from training.model.flavors import FLAVORS
    from training.model.qwen import Qwen

    model = Qwen(FLAVORS["debug"].__class__(**{**FLAVORS["debug"].to_dict(), "vocab_size": 64}))
    decay, no_decay = param_groups(model, OptimConfig())
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {
        n for n, p in model.named_parameters() if "norm" in n or n.endswith("bias") or "embed_tokens" in n}
    assert all(p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    with_emb = param_groups(model, OptimConfig(decay_embeddings=True))[0]["params"]
    assert any(p is model.model.embed_tokens.weight for p in with_emb)


# ----------------------------------------------------------------------------- the loop

@pytest.mark.slow
def test_exact_resume(shards, tmp_path):
    main(recipe_args(shards, tmp_path / "straight", "train.steps=20"))
    main(recipe_args(shards, tmp_path / "resumed", "train.steps=20") + ["--max-steps", "10"])
    assert max(losses(tmp_path / "resumed")) == 10
    main(recipe_args(shards, tmp_path / "resumed", "train.steps=20") + ["--resume"])
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(straight) == sorted(resumed) == list(range(1, 21))
    for step in straight:
        assert resumed[step] == pytest.approx(straight[step], abs=1e-6), step
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_init_continues_from_a_checkpoint(shards, tmp_path):
    """Continued pretraining: the run starts from the checkpoint's weights (its first validation loss
    is the first run's last) and its config, whatever the recipe's model table says."""
    main(recipe_args(shards, tmp_path / "base", "train.steps=6"))
    base_end = [r for r in read_metrics(tmp_path / "base" / "metrics.jsonl") if "val_loss" in r][-1]["val_loss"]
    main(recipe_args(shards, tmp_path / "more", "train.steps=3",
                       "model.overrides={vocab_size=256, hidden_size=16, intermediate_size=32, num_layers=3, "
                       "num_heads=2, num_kv_heads=1, max_position_embeddings=64}")
         + ["--init", str(tmp_path / "base" / "final")])
    first = next(r for r in read_metrics(tmp_path / "more" / "metrics.jsonl") if "val_loss" in r)
    assert first["step"] == 0 and first["val_loss"] == pytest.approx(base_end, abs=1e-6)
    assert ckpt.load_model(tmp_path / "more" / "final").cfg == ckpt.load_model(tmp_path / "base" / "final").cfg


def test_a_fresh_run_into_an_old_folder_replaces_its_metrics(shards, tmp_path):
    main(recipe_args(shards, tmp_path / "run", "train.steps=3"))
    first = read_metrics(tmp_path / "run" / "metrics.jsonl")
    main(recipe_args(shards, tmp_path / "run", "train.steps=3"))
    again = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(again) == len(first) and [r["step"] for r in again] == [r["step"] for r in first]


def reference_loss(model, rows) -> float:
    """Mean next-token loss computed document by document (no packing, no mask), for the same rows."""
    total, count = 0.0, 0
    for ids, starts in rows:
        bounds = list(starts) + [len(ids) - 1]
        for s, e in zip(bounds[:-1], bounds[1:]):
            if e <= s:
                continue
            logits = model(torch.tensor([ids[s:e]])).logits[0]            # [e - s, V]
            total += float(F.cross_entropy(logits, torch.tensor(ids[s + 1:e + 1]), reduction="sum"))
            count += e - s
    return total / count


def test_grad_accumulation_equals_large_batch_and_per_document_reference(shards, tmp_path):
    common = ("train.steps=1", "data.shuffle=false")
    main(recipe_args(shards, tmp_path / "accum", *common, "train.micro_batch_size=2", "train.grad_accum_steps=4"))
    main(recipe_args(shards, tmp_path / "big", *common, "train.micro_batch_size=8", "train.grad_accum_steps=1"))
    assert losses(tmp_path / "accum")[1] == pytest.approx(losses(tmp_path / "big")[1], abs=1e-5)
    a, b = final_weights(tmp_path / "accum"), final_weights(tmp_path / "big")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # the logged loss is the loss of the initial weights (same seed) on the first 8 rows in file order
    from training.model.qwen import Qwen
    from training.cli import load_recipe, phase_args
    args = phase_args("training.train", None, "demo").parse_args(recipe_args(shards, tmp_path / "big"))
    recipe = load_recipe(args.recipe, SECTIONS, args.set)
    torch.manual_seed(recipe.train.seed)
    model = Qwen(recipe.model.build_config())
    with torch.no_grad():
        expected = reference_loss(model, all_rows(shards, "train")[:8])
    assert losses(tmp_path / "big")[1] == pytest.approx(expected, abs=1e-5)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(shards, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLoss, match="non-finite") as err:
        main(recipe_args(shards, out, "train.steps=20", "train.save_every=1", "optim.lr=1e30",
                         "optim.warmup_steps=0", "optim.grad_clip=0.0"))
    saved = ckpt.list_checkpoints(out / "checkpoints")
    assert saved and str(saved[-1]) in str(err.value)
    failed_step = int(str(err.value).split("at step ")[1].split()[0])
    assert int(saved[-1].name.split("-")[1]) == failed_step - 1
    assert not list((out / "checkpoints").glob(".*tmp"))


def test_checkpoints_keep_last_and_metrics_and_hf_export(shards, tmp_path):
    out = tmp_path / "run"
    summary = main(recipe_args(shards, out, "train.steps=6", "train.save_every=2", "train.keep_last=2",
                               "train.eval_every=3", "train.export_hf=true"))
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-000004", "step-000006"]
    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(steps[0])
    vals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in vals] == [0, 3, 6]
    assert vals[-1]["val_ppl"] == pytest.approx(math.exp(vals[-1]["val_loss"]))
    assert summary["start_val_loss"] == vals[0]["val_loss"] and (out / "loss.png").stat().st_size > 1000
    state = ckpt.load_training(out / "checkpoints/step-000006")
    assert state["trainer"]["step"] == 6 and state["optim"]["data"]["rows_seen"] == 6 * 4
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    ours = ckpt.load_model(out / "final").eval()
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids).logits, atol=1e-4)


def test_single_document_rows_take_the_causal_path_with_equal_logits():
    from training.model.qwen import ModelConfig, Qwen

    single = encode_rows([([3, 4, 5, 6, 7], [0]), ([8, 9, 10], [0])], row_width=5)
    packed = encode_rows([([3, 4, 5, 6, 7], [0, 2])], row_width=5)
    assert single.attention_doc_ids() is None and packed.attention_doc_ids() is packed.doc_ids
    torch.manual_seed(0)
    model = Qwen(ModelConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                             num_kv_heads=1))
    with torch.no_grad():
        masked = model(single.input_ids, doc_ids=single.doc_ids).logits
        causal = model(single.input_ids).logits
    has_target = single.targets != IGNORE
    assert torch.allclose(masked[has_target], causal[has_target], atol=1e-6)


@pytest.mark.parametrize("name", ["demo", "qwen2-0.5b"])
def test_shipped_recipes_load(name):
    from training.model.flavors import FLAVORS
    from training.cli import RECIPES, load_recipe

    recipe = load_recipe(RECIPES / f"{name}.toml", SECTIONS)
    assert recipe.model.build_config() == FLAVORS[recipe.model.flavor]


def test_activation_checkpointing_is_exact_and_the_moe_aux_loss_trains_the_router(shards, tmp_path):
    base = ("train.steps=1", "data.shuffle=false", "model.flavor=\"debug-moe\"", "optim.grad_clip=0.0")  # no global norm coupling
    main(recipe_args(shards, tmp_path / "plain", *base, "train.aux_loss_coef=0.0"))
    main(recipe_args(shards, tmp_path / "ckpt", *base, "train.aux_loss_coef=0.0", "train.activation_checkpointing=true"))
    main(recipe_args(shards, tmp_path / "aux", *base, "train.aux_loss_coef=1.0"))
    plain, recomputed, aux = (final_weights(tmp_path / name) for name in ("plain", "ckpt", "aux"))
    assert all(torch.allclose(plain[k], recomputed[k], atol=1e-6) for k in plain)
    routers = [k for k in plain if k.endswith("mlp.gate.weight")]
    assert routers and all(not torch.allclose(plain[k], aux[k]) for k in routers)  # aux loss reaches every router
    last = f"model.layers.{len(routers) - 1}.mlp.shared_expert.down_proj.weight"  # after the last router: untouched
    assert torch.allclose(plain[last], aux[last], atol=1e-7)
