#!/usr/bin/env bash
# Issue 12's device run: install the carried cuDF 26.10 wheels and run gpuseg's cuDF path once.
#
# Needs the parts made by scripts/cudf_wheels.sh, carried one per call into .cudf-parts/
# (see that script for the calls); this is the last call's command. In one call that ends
# within BUDGET_S (default 360 s; give it timeout_s=420, which leaves time for the machine's
# transfers and, with the part calls, fits a 15-minute lease only once: rerun it only if it
# was cut short by a fault of the script, not to retry cuDF):
#   1. the machine, and the versions cuDF 26.10 needs from the image (numba, numba-cuda,
#      cupy, cuda-bindings, pyarrow, numpy) against its requirements;
#   2. every part checked against SHA256SUMS (the missing ones named), joined, and the wheels
#      installed with --no-deps into a target folder put first on PYTHONPATH; the run stops
#      here when cuDF does not import (nothing later could use it);
#   3. tests/test_cudf_reading.py without the slow stand-in test (its gpu tests: real cuDF
#      against the CPU path; the stand-in tests again, under the carried pandas);
#   4. `gpuseg segment` with --backend cupy (cuDF loading: the report must name no cudf
#      fallback) and --backend cpu, both float64, on four inputs: a generated Parquet log
#      (timestamps), the same log as CSV (ISO text dates), a messy input (two files: a CSV
#      with US text dates given by --date-format, non-padded, Feb 30, junk, blanks, NaN
#      amounts; a Parquet written by pandas with a RangeIndex(start=1000) and decimal
#      amounts), and a mixed input (a Parquet file with integer ids and zoned timestamps near
#      midnight, a CSV with integer ids as text and ISO dates), then drop counts, features
#      (relative difference) and assignments compared; every step's timeout is cut so that
#      the comparison still runs before BUDGET_S.
# Results: $OUT/cudf-check.log (everything printed) and $OUT/compare.json (at most 8 files come
# back from $OUT). Knobs: OUT, PARTS (.cudf-parts), SITE, DATA, ROWS (2e5), INSTALL (1),
# BUDGET_S (360), GPU_BACKEND (cupy).
# A dry run here, without a GPU (the parts are checked and joined, not installed; the "gpu"
# runs use the CPU backend; the parts are in the main checkout, which the session shares):
#   INSTALL=0 GPU_BACKEND=cpu PARTS=/path/to/.cudf-parts OUT=/tmp/check bash scripts/gpu_cudf_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpuseg-cudf-check}
PARTS=${PARTS:-.cudf-parts}
SITE=${SITE:-/tmp/cudf-site}
DATA=${DATA:-/tmp/gpuseg-cudf-data}
ROWS=${ROWS:-2e5}
INSTALL=${INSTALL:-1}
GPU_BACKEND=${GPU_BACKEND:-cupy}
BUDGET_S=${BUDGET_S:-360}
PY=python3
mkdir -p "$OUT" "$DATA"
LOG="$OUT/cudf-check.log"
{
start=$(date +%s)
deadline=$(( start + BUDGET_S ))
stamp() { echo "== $(( $(date +%s) - start ))s: $*"; }
# capped WANT KEEP CMD...: CMD under a timeout of WANT seconds, or of what is left before the
# deadline less KEEP (for the steps after it); skipped when under 10 s are left.
capped() {
  local t=$1 left=$(( deadline - $(date +%s) - $2 )); shift 2
  [ "$left" -lt "$t" ] && t=$left
  if [ "$t" -lt 10 ]; then echo "!! skipped (only ${t}s left): $*"; return 124; fi
  timeout -k 5 "$t" "$@"
}
# Peak memory where GNU time is installed (the image need not have it); wall time either way.
if [ -x /usr/bin/time ]; then TIMED=(/usr/bin/time -f "%e s, %M KB"); else TIMED=(); fi
export PYTHONUNBUFFERED=1

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
$PY - <<'PY'
import importlib.metadata as md, sys
print("python", sys.version.split()[0])
# The requirements of cudf-cu13 26.10.2, libcudf-cu13 and libkvikio-cu13 (their METADATA) on
# what the image provides; numba-cuda-mlir is left out (only cudf.core.udf.mlir_backend imports it).
need = {"numba": ">=0.60,<0.65", "numba-cuda": ">=0.22.2,<0.31", "cupy-cuda13x": ">=14.0.1,!=14.1.0",
        "cuda-bindings": ">=13.0.1,<14", "numpy": ">=2.0,<3", "pyarrow": ">=19", "fsspec": ">=0.6",
        "llvmlite": "(numba's)", "cuda-core": "", "packaging": "", "rich": "",
        "cuda-pathfinder": "(libcudf)", "cuda-toolkit": "13.* (libcudf, libkvikio)",
        "nvidia-nvjitlink": ">=13.3,<14 (libcudf)", "nvidia-cuda-nvrtc": "(cuda-toolkit[nvrtc])",
        "nvidia-cufile": "(cuda-toolkit[cufile])", "python-dateutil": ">=2.8.2 (pandas)"}
for name, spec in need.items():
    try:
        print(f"{name} {md.version(name)}  (cudf needs {spec})" if spec else f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} MISSING  (cudf needs {spec})")
PY

stamp "joining and installing the carried wheels"
if [ ! -f "$PARTS/SHA256SUMS" ]; then
  echo "!! no $PARTS/SHA256SUMS: carry it with the last part"; exit 3
fi
missing=$(cd "$PARTS" && grep -o 'part-[0-9]*' SHA256SUMS | while read -r p; do [ -f "$p" ] || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "!! missing parts (the machine went back between calls, or they were not carried):" $missing; exit 3
fi
(cd "$PARTS" && grep 'part-' SHA256SUMS | sha256sum -c --quiet) || { echo "!! a part is corrupt"; exit 3; }
mkdir -p "$DATA/wheels"
cat "$PARTS"/part-* | tar -xf - -C "$DATA/wheels" || { echo "!! the joined parts are no tar"; exit 3; }
ls -l "$DATA"/wheels | awk 'NR > 1 {print $5, $NF}'
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$INSTALL" = "1" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$DATA"/wheels/*.whl || { echo "!! pip install failed"; exit 3; }
  export PYTHONPATH="$SITE:$PYTHONPATH"
  $PY -c "import cudf, pandas; print('cudf', cudf.__version__, 'pandas', pandas.__version__)" 2>&1 \
    || { echo "!! cudf does not import"; exit 4; }
fi

stamp "tests/test_cudf_reading.py (gpu tests included)"
capped 120 200 $PY -m pytest -q -p no:cacheprovider -rs -m "not slow" tests/test_cudf_reading.py
echo "pytest exit status: $?"

stamp "inputs"
capped 60 150 $PY -m gpuseg.cli generate --transactions "$ROWS" \
  --customers "$($PY -c "print(int(float('$ROWS')) // 10)")" --out "$DATA/log.parquet" -q || echo "!! generate failed"
capped 60 140 $PY - "$DATA" <<'PY'
import sys
from decimal import Decimal
from pathlib import Path
import numpy as np, pandas as pd, pyarrow as pa, pyarrow.compute as pc, pyarrow.csv as pacsv, pyarrow.parquet as pq
data = Path(sys.argv[1])
t = pq.read_table(data / "log.parquet")
pacsv.write_csv(t.set_column(t.schema.get_field_index("invoice_date"), "invoice_date",
                             pc.strftime(t["invoice_date"], "%Y-%m-%dT%H:%M:%S")), data / "log.csv")
rng = np.random.default_rng(12)
n = 20000
m, d, h = rng.integers(1, 13, n), rng.integers(1, 29, n), rng.integers(0, 24, n)
dates = np.array([f"{a}/{b}/2025 {c}:05" for a, b, c in zip(m, d, h)], dtype=object)
bad = rng.choice(n, 60, replace=False)
dates[bad[:20]] = "2/30/2025 10:00"
dates[bad[20:40]] = "n/a"
dates[bad[40:]] = [f"{a}/{b}/2025  {c}:05" for a, b, c in zip(m[:20], d[:20], h[:20])]  # two spaces
cust = np.array([f"{c:05d}" for c in rng.integers(1, 3000, n)], dtype=object)  # leading zeros: text ids
cust[rng.choice(n, 25, replace=False)] = None
amount = rng.gamma(2.0, 15.0, n).round(2)
amount[rng.choice(n, 15, replace=False)] = np.nan
messy = pd.DataFrame({"Customer ID": cust, "InvoiceDate": dates, "Invoice": [f"C{i // 4}" for i in range(n)],
                      "Amount": amount})
messy.to_csv(data / "messy-a.csv", index=False)
# Parquet by pandas: a RangeIndex(start=1000) in its metadata, decimal amounts.
part = messy.iloc[:5000].copy().set_axis(pd.RangeIndex(1000, 6000))
part["Invoice"] = [f"P{i // 4}" for i in range(len(part))]
part["Amount"] = [None if np.isnan(a) else Decimal(f"{a:.2f}") for a in part["Amount"]]
table = pa.Table.from_pandas(part, schema=pa.schema([("Customer ID", pa.string()), ("InvoiceDate", pa.string()),
                                                     ("Invoice", pa.string()), ("Amount", pa.decimal128(12, 2))]))
pq.write_table(table, data / "messy-b.parquet")
# Mixed: integer ids in Parquet, the same ids as CSV text (the CPU path: integers); zoned
# timestamps either side of local midnight (days in their own zone); the CSV's dates ISO text.
try:
    pa.array([0], pa.timestamp("s", "America/New_York")).cast(pa.date32())
    pd.Timestamp(0).tz_localize("America/New_York")
    zone = "America/New_York"
except Exception:
    zone = "-05:00"  # no time-zone database on the machine
    print("no tz database: the mixed input's zone is a fixed offset")
k = 6000
local = pd.Timestamp("2025-03-01") + pd.to_timedelta(rng.integers(0, 300, k), unit="D") \
    + pd.to_timedelta(rng.choice([-90, -30, -5, 5, 30, 90], k) + 24 * 60, unit="min")
ids = rng.integers(1, 800, k)
zoned = pd.DataFrame({"Customer ID": ids, "InvoiceDate": local.tz_localize(zone, nonexistent="shift_forward",
                                                                         ambiguous="NaT"),
                      "Invoice": [f"Z{i // 3}" for i in range(k)], "Amount": rng.gamma(2.0, 15.0, k).round(2)})
zoned.to_parquet(data / "mixed-a.parquet")
text = zoned.iloc[: k // 2].assign(**{"Customer ID": [f"{i}" for i in ids[: k // 2]],
                                       "InvoiceDate": local[: k // 2].strftime("%Y-%m-%d %H:%M"),
                                       "Invoice": [f"T{i // 3}" for i in range(k // 2)]})
text.to_csv(data / "mixed-b.csv", index=False)
print("inputs written:", sorted(p.name for p in data.iterdir() if p.is_file()))
PY

stamp "gpuseg segment, cupy (cuDF loading) and cpu"
run_case() {  # name, seconds to keep for the cases after it, then the inputs and options
  local name=$1 keep=$2; shift 2
  for run in "gpu:$GPU_BACKEND" cpu:cpu; do
    local label=${run%%:*} backend=${run#*:} t0=$SECONDS
    capped 90 "$keep" ${TIMED[@]+"${TIMED[@]}"} $PY -m gpuseg.cli segment "$@" --backend "$backend" \
      --precision float64 --k 5 --out "$DATA/out-$name-$label" -q
    echo "$name $backend exit status: $?, $(( SECONDS - t0 )) s"
  done
}
run_case parquet 100 "$DATA/log.parquet"
run_case csv 75 "$DATA/log.csv"
run_case messy 50 "$DATA/messy-a.csv" "$DATA/messy-b.parquet" --date-format "%m/%d/%Y %H:%M"
run_case mixed 25 "$DATA/mixed-a.parquet" "$DATA/mixed-b.csv"

stamp "comparison"
$PY - "$DATA" "$OUT/compare.json" <<'PY'
import json, sys
from pathlib import Path
import numpy as np, pyarrow.parquet as pq
data, out = Path(sys.argv[1]), Path(sys.argv[2])
result = {}
for case in ("parquet", "csv", "messy", "mixed"):
    gpu, cpu = data / f"out-{case}-gpu", data / f"out-{case}-cpu"
    if not (gpu / "report.json").exists() or not (cpu / "report.json").exists():
        result[case] = {"error": "a run wrote no report"}
        continue
    rg, rc = (json.loads((p / "report.json").read_text()) for p in (gpu, cpu))
    fg, fc = (pq.read_table(p / "features.parquet").to_pandas().set_index("customer_id").sort_index() for p in (gpu, cpu))
    ag, ac = (pq.read_table(p / "assignments.parquet").to_pandas().set_index("customer_id").sort_index() for p in (gpu, cpu))
    same_ids = fg.index.equals(fc.index)
    r = {"cudf_loaded": not any(f.startswith("cudf:") for f in rg["fallbacks"]), "fallbacks": rg["fallbacks"],
         "rows_gpu": rg["rows"], "rows_cpu": rc["rows"], "rows_equal": rg["rows"] == rc["rows"],
         "customers": [len(fg), len(fc)], "same_customer_ids": bool(same_ids),
         "load_seconds": [rg["timings"].get("load"), rc["timings"].get("load")]}
    if same_ids:
        # Relative: sums on the device run over all lines, on the host per batch, then across batches.
        diff = {c: float(np.nanmax(np.abs(fg[c].to_numpy(float) - fc[c].to_numpy(float))
                                   / np.maximum(1.0, np.abs(fc[c].to_numpy(float))))) for c in fc.columns}
        r["features_max_rel_diff"] = diff
        r["assignments_equal_share"] = float((ag["segment"] == ac["segment"]).mean())
        r["id_type"] = [str(pq.read_schema(p / "features.parquet").field("customer_id").type) for p in (gpu, cpu)]
        same_kind = len({t.replace("large_", "") for t in r["id_type"]}) == 1  # integers, or text, on both
    r["ok"] = bool(r["cudf_loaded"] and r["rows_equal"] and same_ids
                   and max(r.get("features_max_rel_diff", {"": 1}).values()) < 1e-9
                   and r.get("assignments_equal_share") == 1.0 and same_kind)
    result[case] = r
out.write_text(json.dumps(result, indent=2, default=str))
for case, r in result.items():
    print(case, "OK" if r.get("ok") else "DIFFERS", json.dumps(r, default=str))
PY
stamp "done"
ls -la "$OUT"
} 2>&1 | tee -a "$LOG"
