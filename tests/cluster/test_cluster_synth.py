"""A synthesis job (a model loaded on executors) through spark-submit on the standalone cluster: the
rejection-sampling job from the code zip gives the samples the test knows and the rows local mode gives.

    pytest -m cluster tests/cluster/test_cluster_synth.py
"""

from __future__ import annotations

import pytest

from stages.tokenize.tokenizer import QwenTokenizer
from tests.cluster.conftest import submit_command, submitted
from tests.synth.test_synth_jobs import MATH_TEXTS, bigram_model, read_parquet, write_jsonl
from training.model.checkpoint import save_model

pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.slow]

RECIPE = "pipeline/recipes/default.toml"
PROBLEMS = [{"id": "p7", "question": "What is 3 + 4?", "answer": "3 + 4 = 7\n#### 7"},
            {"id": "p5", "question": "What is 2 + 3?", "answer": "#### 5"}]


def job_args(ckpt, problems: str, out) -> list[str]:
    return ["--model", str(ckpt), "--input", problems, "--output", str(out), "--recipe", RECIPE,
            "--set", "synth.samples=16", "--set", "synth.max_new_tokens=12", "--set", "synth.batch_size=2"]


def test_rejection_job_through_spark_submit(cluster, dist, spark, tmp_path):
    from synth import rejection
    from tools.dist import build_launcher

    ckpt = tmp_path / "ckpt"
    save_model(bigram_model(QwenTokenizer(), MATH_TEXTS), ckpt)
    problems = write_jsonl(tmp_path / "problems.jsonl", PROBLEMS)
    launcher = build_launcher(tmp_path / "submit.py")
    args = ["synth.rejection", *job_args(ckpt, problems, tmp_path / "c")]
    with submitted(submit_command(cluster.master_url, dist, str(launcher), args), tmp_path / "submit.log") as proc:
        rejection.main(job_args(ckpt, problems, tmp_path / "local"))   # meanwhile, in local mode
        assert proc.wait(timeout=600) == 0, (tmp_path / "submit.log").read_text(errors="replace")[-4000:]
    kept, = read_parquet(tmp_path / "c" / "samples" / "kept")
    assert kept["id"] == "p7" and len(kept["samples"]) == 16 and kept["kept"] == ["The answer is 7."]
    assert kept["verdicts"] == [s == "The answer is 7." for s in kept["samples"]]
    for folder in ("samples/kept", "samples/rejected", "sft/train", "preference/train"):
        assert read_parquet(tmp_path / "c" / folder) == read_parquet(tmp_path / "local" / folder), folder
