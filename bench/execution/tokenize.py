"""`bench data tokenize SUITE`: build the token shards of a suite's text variants ahead of
`bench run` (which otherwise builds them on first use), with as many workers as asked."""

import argparse
from pathlib import Path

from bench.config.overrides import add_option as add_override_option
from bench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file of a text family (lm, encoder)")
    add_override_option(parser)
    parser.add_argument("--workers", type=int, help="tokenizing processes (default: every core)")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="only these variants")


def cmd_tokenize(args: argparse.Namespace) -> int:
    """Build each distinct data set of the suite's chosen variants once."""
    from bench.config.suite import load_suite
    from bench.family import get_family, known_families
    from bench.text.shards import CACHE_SUBDIR, prepare_lm_data, shards_fingerprint
    from bench.util.paths import cache_home

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: expected at least 1")
    suite = load_suite(args.suite, overrides=args.override)
    layout = suite.family.text_layout
    if layout is None:
        texts = [name for name in known_families() if get_family(name).text_layout]
        raise UserError(f"{args.suite}: family '{suite.family.name}' reads no text corpus; "
                        f"tokenize applies to the {' and '.join(texts)} families")
    unknown = sorted(set(args.only or []) - set(suite.variants))
    if unknown:
        raise UserError(f"--only {', '.join(unknown)}: no such variant in {args.suite} "
                        f"(variants: {', '.join(suite.variants)})")
    done: set[str] = set()
    for name, variant in suite.variants.items():
        if args.only and name not in args.only:
            continue
        data_cfg = variant.config.data
        key = shards_fingerprint(data_cfg, layout)
        if key not in done:
            data = prepare_lm_data(data_cfg, Path(cache_home()) / CACHE_SUBDIR, layout,
                                   workers=args.workers)
            print(f"{name}: {data.train_tokens} training and {data.val_tokens} validation "
                  f"tokens in {data.folder}", flush=True)
            done.add(key)
        else:
            print(f"{name}: same data as an earlier variant", flush=True)
    return 0
