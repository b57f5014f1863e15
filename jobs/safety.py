"""Safety: URL blocklists, C4 bad words, a toxicity classifier and PII redaction on a finished stage.

    python -m jobs.safety --input runs/demo/quality --output runs/demo/safety \
        [--set safety.url_blocklist=lists/domains.txt --set 'safety.badwords={en = "lists/en.txt"}' \
         --set safety.toxicity_model=runs/toxicity/model.bin --set safety.max_pii=20]
    spark-submit dist/submit.py safety --input ... --output ...

Reads `[safety]` (every step's keys and `steps`, their order). Rejected rows carry `url_blocked`,
`badwords`, `toxic` or `pii`; every row `toxicity_score` and the `pii_<kind>` counts, whose sums over
the run are in `_stats.json` under "totals". The stage: `stages/safety/`.
"""

from __future__ import annotations

from pipeline import cli
from stages.safety import Safety
from stages.safety.pii import COUNT_FIELDS


def main(argv: list[str] | None = None) -> dict:
    return cli.run_record_stage("safety", Safety, __doc__.splitlines()[0], argv,
                                totals=tuple(field.name for field in COUNT_FIELDS))


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
