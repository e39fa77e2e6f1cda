#!/usr/bin/env bash
# The cuDF 26.10 (CUDA 13) wheels for issue 12's device run, in parts that fit one device call each.
#
# Downloads, with pip's default index, the wheels that cuDF needs and the lent machines lack
# (Python 3.12, manylinux x86-64; their image has CuPy 14 for CUDA 13, numba, numba-cuda,
# cuda-bindings, pyarrow and fsspec), packs them into one tar and splits that into parts of
# PART_BYTES (60 MB: with the ~1 MB working tree, under the 64 MiB a call may carry):
#
#   .cudf-parts/wheels/*.whl        the wheels (never carried, never committed)
#   .cudf-parts/part-00 .. part-NN  the tar, split
#   .cudf-parts/SHA256SUMS          of the parts and of the whole tar
#
# .cudf-parts/ is in .gitignore, so the parts travel only when a call's `carry` names them.
# Sizes as downloaded on 2026-11-27: libcudf-cu13 301 MB, nvidia-libnvcomp-cu13 28.5 MB,
# pandas 10.8 MB, pylibcudf-cu13 8.2 MB, librmm-cu13 4.8 MB, libkvikio-cu13 3.2 MB,
# nvtx 3.1 MB, cudf-cu13 2.2 MB, rmm-cu13 1.0 MB, rapids-logger 0.3 MB, cachetools;
# 363 MB in all: 6 parts of 60.6 MB.
#
# Left out: numba-cuda-mlir (71 MB; cuDF imports it only for rolling-window UDFs,
# cudf/core/udf/rolling_utils.py), and numba/numba-cuda/cupy, which the image has
# (gpu_cudf_check.sh prints their versions against cuDF's requirements).
# cuML (libcuml, libraft, libcuvs: well over 1 GB) cannot travel this way.
#
# Then, on a lent machine, back to back (a warm machine keeps the ignored files of earlier
# calls and goes back 30 s after a call), one part per call, the last one running the check:
#   run(command="ls -l .cudf-parts", carry=[".cudf-parts/part-00"], timeout_s=60)
#   ... part-01 .. part-04 likewise ...
#   run(command="bash scripts/gpu_cudf_check.sh", carry=[".cudf-parts/part-05", ".cudf-parts/SHA256SUMS"],
#       timeout_s=420)
# gpu_cudf_check.sh checks every part against SHA256SUMS first and says which are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEST:-.cudf-parts}
MAX_PART_BYTES=${MAX_PART_BYTES:-61000000}
PY=${PYTHON:-python3}
PACKAGES=(
  cudf-cu13==26.10.2 pylibcudf-cu13==26.10.2 libcudf-cu13==26.10.2
  rmm-cu13==26.10.0 librmm-cu13==26.10.0 libkvikio-cu13==26.10.0
  nvidia-libnvcomp-cu13==5.3.0.16 rapids-logger==0.3.0 nvtx==0.2.17 cachetools==8.0.2
  pandas==3.0.6   # cudf-cu13 26.10 requires pandas>=3.0,<3.1
)
mkdir -p "$DEST/wheels"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST/wheels" "${PACKAGES[@]}"
# Only the wheels named above go into the parts (an earlier download may have left others).
wheels=()
for spec in "${PACKAGES[@]}"; do
  name=${spec%%==*}; version=${spec##*==}
  match=("$DEST"/wheels/"${name//-/_}"-"$version"-*.whl)
  [ -f "${match[0]}" ] || { echo "missing wheel for $spec" >&2; exit 1; }
  wheels+=("$(basename "${match[0]}")")
done
rm -f "$DEST"/part-* "$DEST"/SHA256SUMS "$DEST"/cudf-wheels.tar
tar -cf "$DEST/cudf-wheels.tar" -C "$DEST/wheels" "${wheels[@]}"
total=$(stat -c %s "$DEST/cudf-wheels.tar")
parts=$(( (total + MAX_PART_BYTES - 1) / MAX_PART_BYTES ))
split -b $(( (total + parts - 1) / parts )) -d -a 2 "$DEST/cudf-wheels.tar" "$DEST/part-"
(cd "$DEST" && sha256sum part-* cudf-wheels.tar > SHA256SUMS)
rm "$DEST/cudf-wheels.tar"
ls -l "$DEST"/part-* | awk '{print $5, $NF}'
echo "$(ls "$DEST"/part-* | wc -l) parts; wheels: ${wheels[*]}"
