"""The Qwen encoder on hostile input: one pre-token of 1 MB (text without spaces: base64 blobs, minified
code, long URLs) and other long runs, the fast encoder (stages/tokenize/fast_bpe.py) against tiktoken in the same run.

    python -m bench.bench_encoder_hostile --out runs/bench      # also run by `make bench`

Per input and encoder: wall seconds and CPU seconds (medians of `--runs`), and the peak resident memory
one call adds, measured on Linux in a child process per encoder (its high-water mark reset before each
call through /proc/self/clear_refs; glibc made to return large blocks at once, so one input's freed
memory does not hide the next one's). Both encoders must give the same ids; where tiktoken panics (its
regex overflows on long space runs), the fast encoder's ids must decode back to the input. The inputs
are synthetic: no shared data needed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import string
import subprocess
import sys
import time
from pathlib import Path

from bench.data import save_result
from stages.tokenize.fast_bpe import fast_encoder
from stages.tokenize.tokenizer import QwenTokenizer

MB = 1_000_000
INPUTS = {  # name -> text; the first is the headline ("1 MB without spaces")
    "1 MB of random letters (one pre-token)": lambda: "".join(random.Random(0).choices(string.ascii_letters, k=MB)),
    "1 MB of base64 (random bytes)": lambda: base64.b64encode(random.Random(1).randbytes(MB * 3 // 4)).decode(),
    '"a" * 1 MB': lambda: "a" * MB,
    '"ab" * 500 K': lambda: "ab" * (MB // 2),
    "1 MB of newlines": lambda: "\n" * MB,
    "10 MB of spaces": lambda: " " * (10 * MB),
}


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measure(fn, text: str, runs: int) -> dict:
    """Median wall and CPU seconds of `fn(text)` over `runs` calls and the last result; a BaseException (a
    tiktoken panic) is reported, not raised."""
    wall, cpu, result = [], [], None
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            result = fn(text)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:   # pyo3's PanicException derives from BaseException
            return {"error": f"{type(error).__name__}: {str(error)[:80]}"}
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "ids": result}


def encoders() -> dict:
    tok = QwenTokenizer()
    fast = fast_encoder(tok.path)
    if fast.native is None:
        raise SystemExit("stages.tokenize._qwen_bpe is not built: run `make setup`")
    found = {"fast": fast.encode, "tiktoken": tok.encoding.encode_ordinary}
    for encode in found.values():
        encode("warm up")
    return found


def peak_memory(kind: str) -> dict[str, float | None]:
    """MB that one call of encoder `kind` adds to this process's peak resident memory, per input (None where
    it raises or /proc cannot tell). Run in a child started with MALLOC_MMAP_THRESHOLD_ set."""
    encode, peaks = encoders()[kind], {}
    for name, make in INPUTS.items():
        text = make()
        try:
            Path("/proc/self/clear_refs").write_text("5")   # the high-water mark (VmHWM) := current RSS
            before = _status_kb("VmRSS")
            encode(text)
            after = _status_kb("VmHWM")
            peaks[name] = (after - before) / 1024 if before is not None and after is not None else None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            peaks[name] = None
    return peaks


def child_peaks(kind: str) -> dict[str, float | None]:
    """`peak_memory(kind)` in a fresh process: freed blocks of large size go back to the system at once."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "RUST_BACKTRACE": "0"}
    done = subprocess.run([sys.executable, "-m", "bench.bench_encoder_hostile", "--peak-memory", kind], env=env,
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if done.returncode == 0 and lines else {}


def run(runs: int) -> list[dict]:
    found, rows = encoders(), []
    peaks = {kind: child_peaks(kind) for kind in found}
    for name, make in INPUTS.items():
        text = make()
        ours, theirs = measure(found["fast"], text, runs), measure(found["tiktoken"], text, runs)
        ids = ours.pop("ids").tolist()
        expected = theirs.pop("ids", None)
        if expected is not None and ids != expected:
            raise RuntimeError(f"{name}: the fast encoder's ids differ from tiktoken's")
        if expected is None and QwenTokenizer().encoding.decode_bytes(ids) != text.encode():
            raise RuntimeError(f"{name}: the fast encoder's ids do not decode to the input")
        ours["peak_mb"], theirs["peak_mb"] = peaks["fast"].get(name), peaks["tiktoken"].get(name)
        rows.append({"input": name, "bytes": len(text.encode()), "tokens": len(ids), "fast": ours,
                     "tiktoken": theirs, "ratio": ours["wall_s"] / theirs["wall_s"] if "wall_s" in theirs else None})
    return rows


def _seconds(m: dict) -> str:
    if "error" in m:
        return "panics" if m["error"].startswith("PanicException") else m["error"].split(":")[0]
    return f"{m['wall_s']:.3f} ({m['cpu_s']:.3f})"


def markdown(rows: list[dict], runs: int) -> str:
    lines = [f"### Encoder on hostile input (one process, medians of {runs} calls; fast / tiktoken < 1: we are faster)",
             "", "| input | tokens | fast s (CPU s) | tiktoken s (CPU s) | fast / tiktoken | peak MB fast | "
             "peak MB tiktoken |", "|---|---|---|---|---|---|---|"]
    mb = lambda m: "-" if m.get("peak_mb") is None else f"{m['peak_mb']:.0f}"
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"**{r['ratio']:.2f}x**"
        lines.append(f"| {r['input']} | {r['tokens']:,} | {_seconds(r['fast'])} | {_seconds(r['tiktoken'])} | "
                     f"{ratio} | {mb(r['fast'])} | {mb(r['tiktoken'])} |")
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_encoder_hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peak-memory", choices=("fast", "tiktoken"), help="(internal) the child's measurement")
    args = parser.parse_args(argv)
    if args.peak_memory:
        print(json.dumps(peak_memory(args.peak_memory)))
        return {}
    rows = run(args.runs)
    return save_result(Path(args.out), "encoder_hostile", {"runs": args.runs, "rows": rows}, markdown(rows, args.runs))


if __name__ == "__main__":
    main()
