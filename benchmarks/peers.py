"""Run one peer pipeline (pandas or polars + scikit-learn) as its own process.

Usage: python benchmarks/peers.py {pandas,polars} INPUT.parquet OUT.parquet [--k 5] [--seed 0]
"""

from __future__ import annotations

import argparse

from gpuseg.peers import run_peer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=["pandas", "polars"])
    ap.add_argument("input")
    ap.add_argument("out")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run_peer(f"{args.engine}+sklearn", args.input, args.out, k=args.k, seed=args.seed)


if __name__ == "__main__":
    main()
