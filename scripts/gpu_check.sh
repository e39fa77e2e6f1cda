#!/usr/bin/env bash
# The one device check (issue 9): run on a lent GPU machine from the repository root,
# in one call that ends within about 7.5 minutes, so that there is time to rerun it.
#
#   phase 1, untimed, overlapped: the 10^8-row log is generated in the background
#            while the tests run: GPU tests (pytest -m gpu), then the rest;
#   phase 2, timed, one thing at a time:
#     - the pipeline benchmark (benchmarks/bench_pipeline_gpu.py): gpuseg segment
#       --backend cupy, --backend cpu and polars + scikit-learn on 10^8 transactions
#       of `gpuseg generate --transactions 1e8 --customers 1e7`, each a fresh process,
#       after one untimed warm-up, then the same on the real CDNOW purchases tiled to
#       10^7 rows (benchmarks/cdnow_log.py, data gpuseg did not generate)
#       -> $OUT/gpu-pipeline-<device>.json;
#     - `gpuseg bench --sizes 1e6,1e7,1e8 --backends cpu,cupy` (peers added; pandas
#       skipped for time) -> $OUT/bench/bench.{json,md,png}; its 10^8 log is the one
#       above (linked into its cache), so it differs from bench's own logs in having
#       no dirty rows;
#     - the Lloyd micro-benchmark (--quick), then (--grid, issue 10) one iteration of the
#       fused step against one of Flash-KMeans over n in {1e7,1e8} x d in {3,8,16,32} x
#       k in {5,16,64}, same data and centres, labels compared -> $OUT/gpu-<device>.json
#       (cases "impl": "fused" and "impl": "flash-kmeans", "timed": "iteration").
#   Everything printed goes to $OUT/check.log as well (at most 8 files come back
#   from $OUT: this script writes 6).
#
# Every step has its own `timeout`, cut further so the whole run stays within
# BUDGET_S seconds (default 450); a step cut short keeps what it wrote (the
# benchmarks rewrite their results as they go; `gpuseg bench` takes the timeout's
# SIGINT as Ctrl-C and writes what it has). At the speeds of device run 4 (cupy 20 s,
# cpu 36 s, generation 66 s at 10^8) the plan is: phase 1 <= 150 s, pipeline ~100 s,
# gpuseg bench what is left less LLOYD_S (its 10^8 runs may be cut), Lloyd + the
# Flash-KMeans grid LLOYD_S = 150 s (the grid starts no case after its budget and keeps
# the cases it finished; the headline shape runs first). Give the device call timeout_s=600.
#
# Polars is not installed on the lent machines: carry its wheels. Once, here:
#   echo /.whl/ >> .git/info/exclude   # already in .gitignore
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl/ polars==2.1.0 polars-runtime-32==2.1.0
#   (plainly `pip download polars polars-runtime-32 --no-deps -d .whl/` on an x86-64 Linux
#   machine; about 55 MB, so the rest of the tree must stay under ~9 MB). Flash-KMeans
#   (issue 10; pure Python on PyTorch and Triton, which the lent machines have, plus tqdm,
#   which its Triton module imports):
#   python3 -m pip download --no-deps -d .whl/ flash-kmeans==0.3.1 tqdm   (about 120 kB)
#   The real CDNOW log comes from the Lifetimes wheel (0.6 MB; only its data file is read):
#   python3 -m pip download --no-deps -d .whl/ lifetimes==0.11.3
#   The device call must carry it: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600).
# Without .whl/ the polars and Flash-KMeans peers are left out (and say so).
#
# Knobs (environment): OUT (default benchmarks/results), BUDGET_S (450), ROWS (1e8;
# 0 skips the pipeline benchmark), RETAIL_ROWS (0; e.g. 2e7 adds the retail log), CDNOW_ROWS
# (1e7: the real CDNOW log, tiled; 0 skips it),
# BENCH_SIZES (1e6,1e7,1e8; empty skips gpuseg bench), LLOYD (1; 0 skips it), LLOYD_S (150:
# the Lloyd benchmark and the Flash-KMeans grid), GRID (1; 0 skips the grid),
# TESTS (tests), DATA (/tmp/gpuseg-bench: generated logs and run outputs), BACKENDS
# (cupy,cpu,polars: the pipeline benchmark's runners) and BENCH_BACKENDS (cpu,cupy). A dry
# run without a GPU: ROWS=2e5 CDNOW_ROWS=2e5 BENCH_SIZES=1e4 BACKENDS=cpu,polars BENCH_BACKENDS=cpu
# LLOYD=0 TESTS=tests/test_peers.py OUT=/tmp/check bash scripts/gpu_check.sh
# With the CuPy emulator (tests/emulator) the cupy runners run too, on the CPU (the results file is then
# named gpu-pipeline-cupy-emulator.json; the Lloyd benchmark needs the real kernel): PYTHONPATH=$PWD/tests/emulator
# ROWS=2e5 CDNOW_ROWS=2e5 BENCH_SIZES=1e4 BACKENDS=cupy,cpu,polars BENCH_BACKENDS=cpu,cupy LLOYD=0
# TESTS=tests/test_peers.py OUT=/tmp/check bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
BUDGET_S=${BUDGET_S:-450}
ROWS=${ROWS:-1e8}
RETAIL_ROWS=${RETAIL_ROWS:-0}
CDNOW_ROWS=${CDNOW_ROWS:-1e7}
BENCH_SIZES=${BENCH_SIZES-1e6,1e7,1e8}
DATA=${DATA:-/tmp/gpuseg-bench}
TESTS=${TESTS:-tests}
BACKENDS=${BACKENDS:-cupy,cpu,polars}
BENCH_BACKENDS=${BENCH_BACKENDS:-cpu,cupy}
mkdir -p "$OUT" "$DATA"
LOG="$OUT/check.log"
{  # everything below also goes to $LOG (the pipe into tee is closed at the end)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=python3
start=$(date +%s)
deadline=$(( start + BUDGET_S ))
stamp() { echo "== $(( $(date +%s) - start ))s: $*"; }
# cap WANT [KEEP]: WANT seconds, or what is left before the deadline less RESERVE (the end) and
# KEEP (for later steps).
RESERVE=15
cap() { local left=$(( deadline - $(date +%s) - RESERVE - ${2:-0} )); echo $(( $1 < left ? $1 : left )); }
# run_capped WANT KEEP CMD...: the command under timeout (SIGINT first, SIGKILL 15 s later); skipped under 20 s.
run_capped() {
  local t; t=$(cap "$1" "$2"); shift 2
  if [ "$t" -lt 20 ]; then echo "skipped (only ${t}s left): $*"; return 124; fi
  timeout -s INT -k 15 "$t" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "!! stopped at its ${t}s limit: $*"
  return $rc
}
tag() { $PY -c "import sys; sys.path.insert(0, 'benchmarks'); from bench_pipeline import tag; print(tag(int(float(sys.argv[1]))))" "$1"; }

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
nproc
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH" || echo "!! could not install the carried wheels"
else
  echo "no .whl/ carried: the polars and Flash-KMeans peers run only if they are installed"
fi
# Byte-compiled as installed packages are, so that no timed run compiles sources at start-up
# (the wheels go in with --no-compile; gpuseg runs from this tree).
$PY -m compileall -q gpuseg /tmp/site >/dev/null 2>&1 || true
$PY -c "
import sys
print(sys.version.split()[0])
for m in ('numpy', 'cupy', 'pyarrow', 'sklearn', 'polars', 'pandas', 'torch', 'triton', 'flash_kmeans'):
    try:
        print(m, __import__(m).__version__)
    except Exception as exc:
        print(m, 'MISSING', exc)
"
$PY -c "import polars" 2>/dev/null || export GPUSEG_SKIP_PEERS="polars+sklearn,pandas+sklearn"
# pandas at 10^8 rows would take the whole budget in gpuseg bench.
export GPUSEG_SKIP_PEERS="${GPUSEG_SKIP_PEERS:-pandas+sklearn}"

# -- phase 1: generate in the background while the tests run (nothing here is timed) --
gen_pid=""
if [ "$ROWS" != "0" ]; then
  rows_tag=$(tag "$ROWS")
  big="$DATA/gpuseg-$rows_tag.parquet"
  if [ ! -f "$big" ]; then
    stamp "generating $big in the background"
    customers=$($PY -c "import sys; print(max(1, int(float(sys.argv[1])) // 10))" "$ROWS")
    ( timeout "$(cap 300)" $PY -m gpuseg.cli generate --transactions "$ROWS" --customers "$customers" \
        --out "$DATA/gpuseg-$rows_tag.part.parquet" -q \
      && mv "$DATA/gpuseg-$rows_tag.part.parquet" "$big" \
      && $PY -m gpuseg.cli generate --transactions 1e6 --customers 1e5 --out "$DATA/gpuseg-1e6.parquet" -q
    ) > "$DATA/generate.log" 2>&1 &
    gen_pid=$!
  fi
fi

stamp "GPU tests (-m gpu)"
run_capped 75 0 $PY -m pytest -q -p no:cacheprovider -rs -m gpu "$TESTS"
echo "pytest -m gpu exit status: $?"

stamp "the other tests (-m 'not gpu')"
xdist=()
$PY -c "import xdist" 2>/dev/null && xdist=(-n 8 --dist loadfile)
run_capped 60 0 $PY -m pytest -q -p no:cacheprovider -rs -m "not gpu" ${xdist[@]+"${xdist[@]}"} "$TESTS"
echo "pytest -m 'not gpu' exit status: $?"

if [ -n "$gen_pid" ]; then
  stamp "waiting for the data"
  wait "$gen_pid"; echo "generate exit status: $?"
  cat "$DATA/generate.log"
fi

# -- phase 2: timed, one at a time --
if [ "$ROWS" != "0" ]; then
  stamp "pipeline on $ROWS transactions: $BACKENDS"
  retail=()
  [ "$RETAIL_ROWS" != "0" ] && retail=(--retail-rows "$RETAIL_ROWS")
  if [ "$CDNOW_ROWS" != "0" ]; then
    if $PY benchmarks/cdnow_log.py --help >/dev/null 2>&1 && \
       $PY -c "import sys; sys.path.insert(0, 'benchmarks'); import cdnow_log; cdnow_log.find_source(None)" 2>/dev/null; then
      retail+=(--cdnow-rows "$CDNOW_ROWS")
    else
      echo "no CDNOW log (carry the Lifetimes wheel in .whl/): the real-data runs are left out"
    fi
  fi
  run_capped 200 0 $PY benchmarks/bench_pipeline_gpu.py --rows "$ROWS" --data "$DATA" --out-dir "$OUT" --backends "$BACKENDS" ${retail[@]+"${retail[@]}"}
  echo "pipeline exit status: $?"
fi

LLOYD_S=${LLOYD_S:-150}
lloyd_keep=0
[ "${LLOYD:-1}" != "0" ] && lloyd_keep=$LLOYD_S
if [ -n "$BENCH_SIZES" ]; then
  stamp "gpuseg bench --sizes $BENCH_SIZES --backends $BENCH_BACKENDS"
  mkdir -p "$DATA/bench-cache"
  # Reuse the pipeline's log for the size it has (bench names its logs tx-<rows>-seed0-v<generator>.parquet).
  if [ "$ROWS" != "0" ] && [ -f "$DATA/gpuseg-$(tag "$ROWS").parquet" ]; then
    ln -sf "$(realpath "$DATA/gpuseg-$(tag "$ROWS").parquet")" "$DATA/bench-cache/$($PY -c "import sys
from gpuseg.generate import GENERATOR_VERSION
print(f'tx-{int(float(sys.argv[1]))}-seed0-v{GENERATOR_VERSION}.parquet')" "$ROWS")"
  fi
  # The Lloyd step after it keeps its LLOYD_S; the bench writes its results after every worker.
  run_capped 200 "$lloyd_keep" $PY -m gpuseg.cli bench --sizes "$BENCH_SIZES" --backends "$BENCH_BACKENDS" --repeats 1 \
    --cache "$DATA/bench-cache" --out "$OUT/bench"
  echo "gpuseg bench exit status: $?"
fi

if [ "${LLOYD:-1}" != "0" ]; then
  stamp "Lloyd micro-benchmark, then fused against Flash-KMeans"
  lloyd_cap=$(cap "$LLOYD_S")
  grid=()
  # The grid starts no case in the last 30 s of the slot (a 10^8 case takes a few seconds).
  [ "${GRID:-1}" != "0" ] && grid=(--grid --budget-s $(( lloyd_cap > 60 ? lloyd_cap - 30 : 30 )))
  run_capped "$LLOYD_S" 0 $PY benchmarks/bench_lloyd_gpu.py --quick ${grid[@]+"${grid[@]}"} --out "$DATA/lloyd.json"
  echo "Lloyd exit status: $?"
  $PY - "$OUT" "$DATA/lloyd.json" <<'PY'
import json, re, subprocess, sys
from pathlib import Path
out, lloyd_path = Path(sys.argv[1]), Path(sys.argv[2])
if not lloyd_path.exists():
    sys.exit("no Lloyd results")
lloyd = json.loads(lloyd_path.read_text())
device = lloyd.get("device") or subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                               capture_output=True, text=True).stdout.strip() or "unknown"
name = re.sub(r"[^a-z0-9]+", "-", device.split("(")[0].strip().lower()).strip("-")
result = {"device": device, **{k: v for k, v in lloyd.items() if k != "device"}}
(out / f"gpu-{name}.json").write_text(json.dumps(result, indent=2))
print(f"wrote {out}/gpu-{name}.json")
for c in result["cases"]:
    if "ms_per_iter" not in c:
        print(f"{c['impl']:12s} n={c['n']:>11,} d={c['d']:>2} k={c['k']:>2} failed: {c.get('error')}")
        continue
    print(f"{c['impl']:12s} n={c['n']:>11,} d={c['d']:>2} k={c['k']:>2} {c['ms_per_iter']:9.3f} ms/"
          + c.get("timed", "step") + (f"  {c['pct_of_floor']:.0f}% of floor" if 'pct_of_floor' in c else "")
          + (f"  fused/flash {c['fused_over_flash']:.2f}, labels differ {c['labels_differ']} "
             f"({c['labels_differ_not_near_tie']} not near-ties)" if 'fused_over_flash' in c else ""))
PY
fi

stamp "done; files under $OUT:"
ls -la "$OUT" "$OUT/bench" 2>/dev/null
} 2>&1 | tee -a "$LOG"
