"""Command line: ``dpfocus demo``, ``dpfocus info`` (more sub-commands arrive with the analysis).

Bad input exits with code 2 and one line saying what is wrong and how to fix it (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .io import DPPairError, load_pair

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input from the command line; its message is printed as one line."""


def _cmd_info(args: argparse.Namespace) -> int:
    pair = load_pair(args.left, args.right, black_level=args.black_level, white_level=args.white_level)
    info = dict(pair.metadata(), shape=list(pair.shape))
    info["has_combined"] = pair.combined is not None
    info["has_target"] = pair.target is not None
    print(json.dumps(info, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import display_available, run_headless, run_interactive
    from .samples import sample_names

    if args.sample not in sample_names():
        raise UsageError(f"unknown sample {args.sample!r}; choose one of {', '.join(sample_names())}")
    if not args.headless and display_available():
        run_interactive(args.sample)
        return 0
    out = Path(args.output or "dpfocus-demo")
    if not args.headless:
        print(f"no display found: running headless, writing pictures to {out}/")
    written = run_headless(out, args.sample, screenshot=not args.no_screenshot)
    for key, path in written.items():
        print(f"{key}: {path}")
    if "screenshot" not in written and not args.no_screenshot:
        print("screenshot: skipped (no X display and no Xvfb; install the xvfb package for a viewer screenshot)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpfocus", description="Dual-pixel defocus analysis and refocusing.")
    parser.add_argument("--version", action="version", version=f"dpfocus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="validate a DP pair and print what was found")
    p.add_argument("left", help="left view, either view (partner found by name), or a folder with one pair")
    p.add_argument("right", nargs="?", help="right view, when both files are given")
    p.add_argument("--black-level", type=float, help="raw black level (single-channel 16-bit data)")
    p.add_argument("--white-level", type=float, help="raw white level (single-channel 16-bit data)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="open napari with a sample pair (or write the pictures headless)")
    p.add_argument("--headless", action="store_true", help="no window: write PNGs (and a viewer screenshot under Xvfb)")
    p.add_argument("-o", "--output", help="output folder for --headless (default: dpfocus-demo)")
    p.add_argument("--sample", default="garden", help="which bundled sample (default: garden)")
    p.add_argument("--no-screenshot", action="store_true", help="skip the napari viewer screenshot")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DPPairError, UsageError) as exc:
        print(f"dpfocus {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
