"""Run one peer pipeline (polars or pandas + scikit-learn) as its own process.

gpuseg/peers.py is loaded by its path, not as ``gpuseg.peers``, so the
process never imports gpuseg (its package import is pyarrow and more): the
peer's wall clock is what a user's own script would take. Prints one JSON
line: ``{"peer", "import_s", "compute_s", "imports", "n_customers"}``;
``import_s`` is the dataframe library and scikit-learn (``imports``: each),
``compute_s`` the query, transform, fit and write.

Usage: python benchmarks/peers.py {polars,pandas} INPUT OUT.parquet
           [--columns gpuseg|retail] [--col ROLE=NAME ...] [--k 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

PEERS_PY = Path(__file__).resolve().parent.parent / "gpuseg" / "peers.py"


def load_peers():
    """gpuseg/peers.py as a standalone module (it imports nothing from gpuseg)."""
    spec = importlib.util.spec_from_file_location("gpuseg_peers_standalone", PEERS_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=["polars", "pandas"])
    ap.add_argument("input")
    ap.add_argument("out")
    ap.add_argument("--columns", choices=["gpuseg", "retail"], default="gpuseg",
                    help="column names of gpuseg's generator or of benchmarks/retail_log.py")
    ap.add_argument("--col", action="append", default=[], metavar="ROLE=NAME",
                    help="override one role (customer, date, invoice, quantity, price, amount); NAME '' for none")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    peers = load_peers()
    base = peers.RETAIL_COLUMNS if args.columns == "retail" else peers.PeerColumns()
    roles = {f: getattr(base, f) for f in ("customer", "date", "invoice", "quantity", "price", "amount")}
    for item in args.col:
        role, sep, name = item.partition("=")
        if not sep or role not in roles:
            ap.error(f"--col takes ROLE=NAME with ROLE one of {', '.join(roles)}; got {item!r}")
        roles[role] = name or None
    if roles["amount"] and not any(i.startswith(("quantity=", "price=")) for i in args.col):
        roles["quantity"] = roles["price"] = None
    run = peers.run_peer(f"{args.engine}+sklearn", args.input, args.out, k=args.k, seed=args.seed,
                         columns=peers.PeerColumns(**roles))
    print(json.dumps({"peer": f"{args.engine}+sklearn", "import_s": run.import_s, "compute_s": run.compute_s,
                      "imports": run.imports, "n_customers": int(len(run.labels))}), flush=True)


if __name__ == "__main__":
    main()
