"""Extract: HTML pages (ingest's `kept/`) -> main text with trafilatura, plus title, date and host.

    python -m jobs.extract --input runs/demo/ingest --output runs/demo/extract [--set extract.favor_recall=true]
    spark-submit dist/submit.py extract --input ... --output ...

Pages with no main text go to `rejected/` (`no_text`, `extract_error`). The input stage folder must
have `_SUCCESS`.
"""

from __future__ import annotations

from pipeline import cli
from stages.extract import Extractor


def main(argv: list[str] | None = None) -> dict:
    return cli.run_record_stage("extract", Extractor, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
