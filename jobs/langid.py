"""Language ID: documents -> `lang`, `lang_score`; keeps the languages of the recipe (fastText lid.176).

    python -m jobs.langid --input runs/demo/extract --output runs/demo/langid [--set 'langid.languages=["en","zh"]']
    spark-submit dist/submit.py langid --input ... --output ...
"""

from __future__ import annotations

from pipeline import cli
from stages.language import LanguageId


def main(argv: list[str] | None = None) -> dict:
    return cli.run_record_stage("langid", LanguageId, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
