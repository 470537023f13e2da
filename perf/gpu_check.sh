#!/usr/bin/env bash
# The device check of the gpu backend, in under 5 minutes on a machine with an NVIDIA GPU and
# CuPy (so that it fits twice in a task's 15 minutes of device time).  Nothing is fetched there:
# what is missing comes from wheels in .whl/.
#
#   perf/gpu_check.sh fetch         here, with PyPI: put the wheels the GPU machine lacks into .whl/
#                                   (cryptography, cffi, pycparser for CPython 3.12)
#   perf/gpu_check.sh [OUTDIR]      there: python -m ipsec_plugins.gpu.check OUTDIR, then the
#                                   CUDA tests of tests/crypto/test_gpu_backend.py; writes into
#                                   OUTDIR (default $OUT, else perf/results/gpu-DATE):
#                                     gpu_check.json  every figure as soon as it is measured
#                                                     (full-size correctness against
#                                                     `cryptography`, kernel-only, end to end,
#                                                     aesni on one core), then the summary
#                                     gpu_tests.log   pytest output
#                                     summary.json    per target: figure, target, met or not
#   perf/gpu_check.sh --cpu [OUTDIR]  the same code paths on the CPU build of the kernels, small
#                                   batches (any machine with g++; the figures mean nothing)
# Environment: PYTHON (default python3), GPU_BATCH (65536), GPU_JUMBO_BATCH (2048),
# GPU_REPEATS (5), GPU_CHECK_SECONDS (230), GPU_TESTS_SECONDS (50).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}

if [ "${1:-}" = "fetch" ]; then
    mkdir -p .whl
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl 'cryptography>=42' 'cffi>=1.14' pycparser
fi

CPU=()
if [ "${1:-}" = "--cpu" ]; then
    CPU=(--cpu)
    shift
fi
OUTDIR=${1:-${OUT:-$ROOT/perf/results/gpu-$(date +%Y%m%d-%H%M%S)}}
mkdir -p "$OUTDIR"
SITE=${GPU_SITE:-/tmp/site}
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .whl/*.whl \
        || echo "warning: installing .whl/*.whl failed; going on with what is installed" >&2
fi
# The registry imports its built-ins as ipsec_plugins.*: the folder plugins/ under that name.
SHIM=$(mktemp -d)
ln -s "$ROOT/plugins" "$SHIM/ipsec_plugins"
trap 'rm -rf "$SHIM"' EXIT
export PYTHONPATH="$ROOT:$SHIM:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

echo "== device check (figures into $OUTDIR/gpu_check.json as they come)" >&2
ARGS=("${CPU[@]}")
[ -n "${GPU_BATCH:-}" ] && ARGS+=(--batch "$GPU_BATCH")
[ -n "${GPU_JUMBO_BATCH:-}" ] && ARGS+=(--jumbo-batch "$GPU_JUMBO_BATCH")
[ -n "${GPU_REPEATS:-}" ] && ARGS+=(--repeats "$GPU_REPEATS")
timeout "${GPU_CHECK_SECONDS:-230}" "$PY" -m ipsec_plugins.gpu.check "$OUTDIR" "${ARGS[@]}" 2>&1 \
    | tee "$OUTDIR/gpu_check.log"
CHECK_RC=${PIPESTATUS[0]}

echo "== CUDA tests" >&2
if [ ${#CPU[@]} -eq 0 ]; then
    timeout "${GPU_TESTS_SECONDS:-50}" "$PY" -m pytest -q -p no:cacheprovider -rs -k cuda \
        tests/crypto/test_gpu_backend.py 2>&1 | tee "$OUTDIR/gpu_tests.log"
    TESTS_RC=${PIPESTATUS[0]}
else
    echo "skipped: --cpu (the CUDA tests need a device)" | tee "$OUTDIR/gpu_tests.log"
    TESTS_RC=0
fi

"$PY" - "$OUTDIR" "$CHECK_RC" "$TESTS_RC" <<'EOF'
import json, os, re, sys
out, check_rc, tests_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    report = json.load(open(os.path.join(out, "gpu_check.json")))
except Exception as exc:
    report = {"error": repr(exc)}
log = open(os.path.join(out, "gpu_tests.log")).read() if os.path.exists(os.path.join(out, "gpu_tests.log")) else ""
last = log.strip().splitlines()[-1] if log.strip() else ""
summary = dict(report.get("summary") or {})
summary.update(check_rc=check_rc, timed_out=check_rc in (124, 137), tests_rc=tests_rc,
               tests={k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)},
               mode=report.get("mode"), figures={k: v.get("value") for k, v in report.get("figures", {}).items()})
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
for name, t in (summary.get("targets") or {}).items():
    print(f"TARGET {name}: {t['figure']} (target {t['target']}): {'MET' if t['met'] else 'NOT MET'}")
if not summary.get("targets"):
    print("TARGETS: no summary (the check did not finish: see gpu_check.log)")
EOF
[ "$CHECK_RC" -eq 0 ] && [ "$TESTS_RC" -eq 0 ]
