"""Report: one self-contained HTML page about a run's stage folders (see pipeline/report.py).

    python -m jobs.report --root runs/demo [--out runs/demo/report.html]
    python -m jobs.report --root s3://bucket/runs/demo [--out gs://bucket/reports/demo.html]
"""

from __future__ import annotations

import argparse

from pipeline.report import write_report


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="jobs.report", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the run folder, a path or an s3:// s3a:// gs:// hdfs:// URI")
    parser.add_argument("--out", default=None, help="the page, a path or URI (default: <root>/report.html)")
    args = parser.parse_args(argv)
    path = write_report(args.root, args.out)
    print(f"[report] {path}")
    return str(path)


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
