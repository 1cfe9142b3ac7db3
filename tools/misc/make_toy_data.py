"""Generate the toy datasets used by the quickstarts and the tests.

    python tools/misc/make_toy_data.py --out data/toy [--seed 0] \
        [--kind coco|ade|all]

writes ``OUT/coco`` (COCO instances, see ``toy_coco.py``) and/or ``OUT/ade``
(ADE20K-style semantic labels, see ``toy_ade.py``). The same seed always
gives the same files.
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from toy_coco import make_coco_toy  # noqa: E402

KINDS = ('coco', 'ade', 'all')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/toy',
                        help='output folder (gets coco/ and/or ade/)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--kind', choices=KINDS, default='all')
    parser.add_argument('--num-train', type=int, default=None,
                        help='training images per dataset (default: each '
                        "generator's own)")
    parser.add_argument('--num-val', type=int, default=None,
                        help='validation images per dataset')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    sizes = {}
    if args.num_train is not None:
        sizes['num_train'] = args.num_train
    if args.num_val is not None:
        sizes['num_val'] = args.num_val
    if args.kind in ('coco', 'all'):
        start = time.perf_counter()
        root = osp.join(args.out, 'coco')
        make_coco_toy(root, seed=args.seed, **sizes)
        print(f'toy COCO instances written to {root} '
              f'({time.perf_counter() - start:.1f} s)')
    if args.kind in ('ade', 'all'):
        # Imported only when asked for: the segmentation toy is optional.
        from toy_ade import make_ade_toy
        start = time.perf_counter()
        root = osp.join(args.out, 'ade')
        make_ade_toy(root, seed=args.seed, **sizes)
        print(f'toy ADE20K segmentation written to {root} '
              f'({time.perf_counter() - start:.1f} s)')


if __name__ == '__main__':
    main()
