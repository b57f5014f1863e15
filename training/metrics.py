"""Training observability: `metrics.jsonl`, a progress bar, MFU, and a loss-curve PNG.

    log = MetricsLog(out_dir, resume_step=0, total=1000)   # rank 0 only; truncates steps after a resume point
    log.step({"step": 1, "loss": 2.3, "lr": 1e-4, ...})     # one JSON object per line
    log.close(); plot_losses(out_dir / "metrics.jsonl", out_dir / "loss.png")

Every line of metrics.jsonl is one optimizer step (`step`, `loss`, `lr`, `grad_norm`, `tokens_per_s`,
`mfu`, ...) or one validation (`step`, `val_loss`, `val_ppl`). MFU is model FLOPs (6N per token plus
attention, PaLM appendix B) over the device's dense bf16 peak where it is known, else null.

    python -m training.metrics runs/demo/train/metrics.jsonl      # redraw loss.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common.plot import Panel, plot_panels, with_val

# Dense bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets (SXM parts).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def peak_flops(device) -> float | None:
    """The known bf16 peak of a CUDA device, or None (CPU, unknown GPU)."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def flops_per_token(n_params: int, n_embedding: int, num_layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 x non-embedding params (plus the lm_head matmul) + 6 x 2 L H T attention."""
    return 6 * (n_params - n_embedding) + 12 * num_layers * hidden * seq_len


class MetricsLog:
    """Appends JSON lines and drives a tqdm bar; a fresh run replaces the file, a resumed one drops the lines
    past its resume step. Every line also goes to `trackers` (training/tracking.py: TensorBoard, W&B, MLflow)."""

    def __init__(self, out_dir: Path, resume_step: int, total: int, enabled: bool = True, trackers: list = ()):
        self.enabled, self.trackers = enabled, list(trackers)
        self.path = Path(out_dir) / "metrics.jsonl"
        if not enabled:
            return
        # a fresh run (step 0) starts an empty file; a resumed one keeps the lines up to its step
        kept = [line for line in self._lines() if json.loads(line)["step"] <= resume_step] if resume_step else []
        self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=resume_step, unit="step", dynamic_ncols=True, file=sys.stderr)

    def _lines(self) -> list[str]:
        return [ln for ln in self.path.read_text().splitlines() if ln.strip()] if self.path.exists() else []

    def step(self, record: dict, write: bool = True) -> None:
        if write:
            self.write(record)
        if self.enabled:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")

    def write(self, record: dict) -> None:
        if self.enabled:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        for tracker in self.trackers:
            tracker.log(record)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.file.close()
        for tracker in self.trackers:
            tracker.close()


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def plot_losses(metrics: Path, png: Path) -> Path:
    """Training loss per step and validation loss, on one figure (common.plot, no display)."""
    panel = Panel("loss", with_val("loss"), ylabel="cross-entropy (nats/token)")
    return plot_panels(read_metrics(metrics), [panel], png, dpi=120)


if __name__ == "__main__":
    src = Path(sys.argv[1])
    print(plot_losses(src, src.with_name("loss.png")))
