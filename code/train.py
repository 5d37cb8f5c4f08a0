"""Train any registered method: ``python code/train.py --method NAME [flags]``.

``--help`` together with ``--method NAME`` lists that method's own flags too.
"""
from __future__ import annotations

import sys

from config import build_parser, finalize
from engine import train
from run_folder import Interrupted
from methods import METHODS, get_method


def main(argv=None, method: str | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if method is None:
        pre = build_parser(method_choices=list(METHODS))
        known, _ = pre.parse_known_args([a for a in argv if a not in ("-h", "--help")])
        method = known.method
        parser = build_parser(get_method(method), method_choices=list(METHODS))
    else:
        parser = build_parser(get_method(method))
    cfg = parser.parse_args(argv)
    try:
        cfg = finalize(cfg, get_method(method))
        return train(cfg, get_method(method))
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, OSError, FloatingPointError) as e:
        parser.exit(2, f"error: {e}\n")
    except Interrupted as e:
        parser.exit(143, f"stopped: {e}\n")


if __name__ == "__main__":
    main()
