"""Command line: ``python -m agentflan.cli <stage> --params '<json>'`` (or ``--params @file.json``).

The Snakemake rules call this; ``python -m agentflan.cli --list`` shows the stages."""
from __future__ import annotations

import argparse
import logging
import sys

from .io import DataError


def main(argv: list[str] | None = None) -> int:
    from .stages import STAGES, params_from, run_stage
    ap = argparse.ArgumentParser(prog="agentflan", description=__doc__)
    ap.add_argument("stage", nargs="?", help="stage to run")
    ap.add_argument("--params", default="{}", help="JSON object of keyword arguments, or @path")
    ap.add_argument("--list", action="store_true", help="list the stages")
    args = ap.parse_args(argv)
    if args.list or not args.stage:
        for name, fn in sorted(STAGES.items()):
            print(f"{name:12s} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_stage(args.stage, params_from(args.params))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
