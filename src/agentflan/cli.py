"""Command line: ``python -m agentflan.cli <stage> --params '<json>'`` (or ``--params @file.json``).

The Snakemake rules call this; ``python -m agentflan.cli --list`` shows the stages."""
from __future__ import annotations

import argparse
import logging
import sys

from .io import DataError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # A model-facing stage of a local Snakemake run starts in the warm interpreter when there is one
    # (agentflan.warm: torch and transformers already imported); None: start here as usual.
    from .warm import run_warm
    rc = run_warm(argv)
    if rc is not None:
        return rc
    # First of all, before anything imports torch: the kernel-dispatch, MKL and thread pins that make
    # CPU results bit-for-bit the same on every x86-64 machine of our kind (agentflan.determinism).
    from .determinism import DeterminismError, pin_for_cli
    try:
        pin_for_cli(argv)
    except DeterminismError as exc:
        return _fail(f"determinism: {exc}")
    # Freed blocks stay in the process instead of being unmapped and faulted in again every
    # training step (agentflan.allocator: about 10 % of a miniature step; the same bytes).
    from .allocator import keep_freed_memory
    keep_freed_memory()
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
        params = params_from(args.params)
    except (OSError, ValueError) as exc:  # unreadable @file, invalid JSON
        return _fail(f"--params: {exc}")
    if not isinstance(params, dict):
        return _fail(f"--params: expected a JSON object, got {type(params).__name__}")
    try:
        run_stage(args.stage, params)
    except DataError as exc:  # bad input: one line naming file, line and record; no traceback
        return _fail(str(exc))
    return 0


def _fail(message: str) -> int:
    """Print ``error: <message>`` as exactly one line on stderr; exit status 2."""
    line = " ".join(str(message).splitlines())
    sys.stderr.write("error: " + line.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")
    sys.stderr.flush()
    return 2


if __name__ == "__main__":
    sys.exit(main())
