"""CLI: ``python -m agentflan.miniworld OUT_DIR [--seed 0] [--scale key=value ...]``."""
from __future__ import annotations

import argparse
import sys

from . import DEFAULT_SCALE, generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agentflan.miniworld",
                                 description="Write the offline mini-world raw sources.")
    ap.add_argument("out_dir", help="raw-source root (files go to OUT_DIR/<repo_id>/<path>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", action="append", default=[], metavar="KEY=N",
                    help=f"override a count; keys: {', '.join(DEFAULT_SCALE)}")
    args = ap.parse_args(argv)
    scale = {}
    for item in args.scale:
        key, sep, val = item.partition("=")
        if not sep or not val.strip().isdigit():
            ap.error(f"--scale expects KEY=N, got {item!r}")
        scale[key.strip()] = int(val)
    try:
        manifest = generate(args.out_dir, seed=args.seed, scale=scale)
    except ValueError as exc:
        ap.error(str(exc))
    width = max(len(k) for k in manifest)
    for rel, info in manifest.items():
        print(f"{rel:<{width}}  {info['rows']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
