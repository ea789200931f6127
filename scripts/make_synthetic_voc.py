"""Write a synthetic detection set in PASCAL VOC's layout (data/voc_synthetic.py): shapes on textured backgrounds.

    python scripts/make_synthetic_voc.py <root> [--trainval 1024] [--test 256] [--seed 0] [--year 2007]

Writes <root>/VOC<year>/{Annotations,JPEGImages,ImageSets/Main}; train on it with
``data=voc_synthetic data.root=<parent of root> data.folder=<root's name> data.synthetic=null``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.voc_synthetic import SHAPES, write_synthetic_voc  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--trainval", type=int, default=1024)
    p.add_argument("--test", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--year", type=int, default=2007)
    args = p.parse_args(argv)
    folder = write_synthetic_voc(args.root, {"seed": args.seed, "year": args.year,
                                             "splits": {"trainval": args.trainval, "test": args.test}}, SHAPES)
    print(f"wrote {args.trainval} + {args.test} images to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
