"""Distributed glue for the trainer: process group from torchrun's environment, DDP or FSDP2 wrapping,
sums across ranks, and full (unsharded) state dicts for checkpoints.

    with distributed() as env:          # torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; else one process
        model = wrap(raw, env, fsdp=False)
        total = env.sum(local_value)

gloo on CPU, NCCL on CUDA. FSDP2 (`torch.distributed.fsdp.fully_shard`, one unit per block plus the
root) is for models that do not fit one device; its checkpoints go through
`torch.distributed.checkpoint.state_dict` with full state dicts gathered on rank 0.
"""
from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch import nn


@dataclass
class Env:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, value: float | torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in float64 so counts and loss sums stay exact."""
        t = torch.as_tensor(value, dtype=torch.float64, device=self.device).clone()
        if self.active:
            td.all_reduce(t)
        return t

    def gather(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            td.barrier()


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


@contextlib.contextmanager
def distributed(device: str = "auto"):
    """An Env for this process; under torchrun, a process group for the run's duration."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    env = Env(rank, world, local, pick_device(device, local))
    if world > 1 and not td.is_initialized():
        td.init_process_group("nccl" if env.device.type == "cuda" else "gloo")
        yield env   # on an error, no teardown: destroying a group while a peer is mid-collective can hang
        close_group()
    else:
        yield env


def close_group() -> None:
    """Tears the process group down once every rank got here, after collecting the FSDP2 state that refers to
    it. Once in CI, a rank that tore down while its peer was still writing the final checkpoint aborted at exit
    with gloo's "terminate called without an active exception"."""
    td.barrier()
    gc.collect()
    td.destroy_process_group()


def wrap(model: nn.Module, env: Env, fsdp: bool, bf16: bool, find_unused: bool = False) -> nn.Module:
    """DDP (several processes), FSDP2 (fsdp=True: one unit per transformer block of every Qwen inside
    `model`, plus the root), or the model itself (one process). find_unused: some parameters may get no
    gradient in a step (MoE experts no token was routed to)."""
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from training.model.qwen import Block

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kw = {"mp_policy": mp} if mp else {}
        for block in [m for m in model.modules() if isinstance(m, Block)]:
            fully_shard(block, **kw)
        return fully_shard(model, **kw)
    if env.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [env.device.index] if env.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=find_unused)
    return model


def no_sync(model: nn.Module, last: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def full_states(model: nn.Module, raw: nn.Module, opt: torch.optim.Optimizer, fsdp: bool) -> tuple[dict, dict]:
    """(model state, optimizer state keyed by parameter name), complete on rank 0 (call on every rank).
    Both layouts are the same with and without FSDP, so a run may resume under the other one."""
    if not fsdp:
        return raw.state_dict(), optim_by_name(raw, opt)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def optim_by_name(raw: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """torch's optimizer state (parameters as indices) -> parameters as names, like DCP's full state."""
    state, order = opt.state_dict(), _param_names(raw, opt)
    return {"state": {order[i]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]]}


def _param_names(raw: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """Names of the optimizer's parameters in its own order (the indices of its state dict)."""
    names = {id(p): n for n, p in raw.named_parameters()}
    return [names[id(p)] for g in opt.param_groups for p in g["params"]]


def load_optimizer(model: nn.Module, raw: nn.Module, opt: torch.optim.Optimizer, state: dict, fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))
        return
    index = {name: i for i, name in enumerate(_param_names(raw, opt))}
    opt.load_state_dict({"state": {index[n]: v for n, v in state["state"].items()},
                         "param_groups": [{**g, "params": [index[n] for n in g["params"]]}
                                          for g in state["param_groups"]]})
