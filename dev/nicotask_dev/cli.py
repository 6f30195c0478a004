"""`nicotask crds`: the command nicotask-dev adds besides `nicotask dev` (devenv/cli.py).

Both reach the runtime's `nicotask` CLI through the `nicotask.cli` entry point
group (dev/pyproject.toml), so an install without nicotask-dev (the image) has
neither: it has no repository to write generated files into.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option("--check", "check_only", is_flag=True, help="fail (exit 1) when files differ")
@click.option(
    "--dir", "crds_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="CRD directory (default: crds/)",
)  # fmt: skip
@click.option(
    "--docs", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Markdown file with the field reference (default: docs/resource.md)",
)  # fmt: skip
@click.option("--no-docs", is_flag=True, help="leave the docs alone")
@click.option(
    "--chart-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="the Helm chart's CRD directory (default: charts/nicotask/crds with the default --dir)",
)  # fmt: skip
@click.option("--no-chart", is_flag=True, help="leave the chart's CRDs alone")
def crds(
    check_only: bool,
    crds_dir: Path | None,
    docs: Path | None,
    no_docs: bool,
    chart_dir: Path | None,
    no_chart: bool,
) -> None:
    """Generate crds/*.yaml (and the chart's copy, and the field reference) from the models."""
    from nicotask_dev import crdgen

    sys.exit(
        crdgen.crds_main(
            check_only=check_only,
            crds_dir=crds_dir or crdgen.DEFAULT_CRDS_DIR,
            docs=None if no_docs else (docs or crdgen.DEFAULT_DOCS_FILE),
            chart_dir=chart_dir,
            no_chart=no_chart,
        )
    )
