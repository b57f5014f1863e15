"""The safety job on local Spark: a small stage folder of real articles with blocked URLs, bad words, a
toxic text and planted PII; counts, reasons, placeholders, per-kind totals in `_stats.json`, and the same
rows as the stage on a plain list."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from bench.data import article_pages
from jobs import safety
from pipeline import io, runner
from stages.safety import Safety, SafetyConfig
from tests.stages.test_safety_filters import train_toxicity_model, write

pytestmark = pytest.mark.spark

DOCS = pa.schema([pa.field("id", pa.string()), pa.field("url", pa.string()), pa.field("lang", pa.string()),
                  pa.field("text", pa.string())])
PII = ("Write to jane.doe@example.org or call +44 20 7946 0958. Server 8.8.4.4 logged it; "
       "card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, host 2a00:1450:4001:82b::200e.")


def rows(shared_data) -> list[tuple]:
    golds = [(url, gold) for _, url, _, gold in article_pages(shared_data, 12)]
    clean = [(f"clean-{i}", url, "en", gold) for i, (url, gold) in enumerate(golds[:6])]
    return clean + [
        ("domain", "https://cdn.blocked.example/a", "en", golds[6][1]),
        ("ut1", "http://www.casino.example/x", "en", golds[7][1]),
        ("words", golds[8][0], "en", golds[8][1] + "\nWhat a bollocks idea."),
        ("toxic", golds[9][0], "en", "You stupid worthless idiot, such a pathetic loser and a moron."),
        ("pii", golds[10][0], "en", golds[10][1] + "\n" + PII),
        ("too-much-pii", golds[11][0], "en", " ".join(f"user{i}@example.org" for i in range(8))),
    ]


def test_safety_job_counts_reasons_placeholders_and_totals(spark, tmp_path, shared_data):
    lists = tmp_path / "lists"
    ut1 = tmp_path / "ut1"
    write(ut1, "gambling/domains", ["casino.example"])
    settings = {"url_blocklist": write(lists, "domains.txt", ["blocked.example"]), "ut1_dir": str(ut1),
                "ut1_categories": ("gambling",), "badwords": {"en": write(lists, "en.txt", ["bollocks"])},
                "toxicity_model": train_toxicity_model(lists, shared_data), "max_pii": 6}
    docs = io.write_docs(spark, rows(shared_data), str(tmp_path / "docs"), DOCS)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[safety]\n" + "\n".join(f"{k} = {json.dumps(v) if not isinstance(v, dict) else toml(v)}"
                                               for k, v in settings.items()) + "\n")
    stats = safety.main(["--recipe", str(recipe), "--input", docs, "--output", str(tmp_path / "safety")])

    assert stats["docs_in"] == 12 and stats["kept"] == 7
    assert stats["by_reason"] == {"url_blocked": 2, "badwords": 1, "toxic": 1, "pii": 1}
    kept = {r["id"]: r for r in io.read_stage(spark, str(tmp_path / "safety")).collect()}
    rejected = {r["id"]: r for r in io.read_stage(spark, str(tmp_path / "safety"), "rejected").collect()}
    assert rejected["domain"]["drop_detail"] == "domain:blocked.example"
    assert rejected["ut1"]["drop_detail"] == "ut1:gambling:casino.example"
    assert rejected["words"]["drop_detail"] == "en:bollocks" and rejected["toxic"]["toxicity_score"] > 0.5
    assert rejected["too-much-pii"]["drop_detail"] == "8 > 6: email=8" and "@" not in rejected["too-much-pii"]["text"]
    redacted = kept["pii"]["text"]
    assert redacted.endswith("Write to <EMAIL> or call <PHONE_NUMBER>. Server <IP_ADDRESS> logged it; "
                             "card <CREDIT_CARD>, IBAN <IBAN>, host <IP_ADDRESS>.")
    assert all(kept[f"clean-{i}"]["toxicity_score"] < 0.5 for i in range(6))
    assert stats["totals"] == {"pii_email": 9, "pii_iban": 1, "pii_credit_card": 1, "pii_ipv6": 1, "pii_ipv4": 1,
                               "pii_phone": 1}
    written = json.loads((tmp_path / "safety" / "_stats.json").read_text())
    assert written["totals"] == stats["totals"] and written["by_reason"] == stats["by_reason"]
    config = json.loads((tmp_path / "safety" / "_config.json").read_text())
    assert config["config"]["safety"]["max_pii"] == 6 and (tmp_path / "safety" / "_SUCCESS").exists()

    # The same rows on a plain list as through Spark.
    stage = Safety(SafetyConfig(**settings))
    frame = io.read_stage(spark, docs)
    via_spark = sorted((r.asDict() for r in runner.apply(frame, stage).collect()), key=lambda r: r["id"])
    via_list = sorted(stage.run([r.asDict() for r in frame.collect()]), key=lambda r: r["id"])
    assert [(r["drop_reason"], r["text"]) for r in via_spark] == [(r["drop_reason"], r["text"]) for r in via_list]


def toml(table: dict) -> str:
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + "}"
