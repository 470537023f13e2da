#!/usr/bin/env bash
# The gpu backend on a machine with an NVIDIA GPU and CuPy: the GPU tests, then the benchmark,
# as JSON, in a few minutes.  Nothing is fetched there: what is missing comes from wheels in .whl/.
#
#   perf/gpu_check.sh fetch       here, with PyPI: put the wheels the GPU machine lacks into .whl/
#                                 (cryptography, cffi, pycparser, pycryptodome for CPython 3.12)
#   perf/gpu_check.sh [OUTDIR]    there: install .whl/*.whl into /tmp/site, make the checkout
#                                 importable without pip (ipsec_plugins is the folder plugins/),
#                                 run `pytest -k gpu tests/crypto/test_gpu_*.py`, `ipsec perf --backend gpu`
#                                 and, for comparison, `ipsec perf --backend aesni`; write into
#                                 OUTDIR (default $OUT, else perf/results/gpu-DATE):
#                                   env.json        GPU, driver, Python, CuPy, nvcc versions
#                                   gpu_tests.log   pytest output
#                                   gpu_perf.json   kernel_gbps, device_e2e_gbps, e2e_gbps,
#                                                   batch_latency_ms per size x batch x direction
#                                   aesni_perf.json the CPU backend, one core, same sizes
#                                   summary.json    exit codes, test counts, headline figures
# Environment: PYTHON (default python3), GPU_SIZES (64,576,1400,9000), GPU_BATCHES
# (1024,4096,16384,65536), GPU_REPEATS (5), GPU_PROPOSALS (aes128gcm16,aes256gcm16).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}

if [ "${1:-}" = "fetch" ]; then
    mkdir -p .whl
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl 'cryptography>=42' 'cffi>=1.14' pycparser 'pycryptodome>=3.19'
fi

OUTDIR=${1:-${OUT:-$ROOT/perf/results/gpu-$(date +%Y%m%d-%H%M%S)}}
mkdir -p "$OUTDIR"
SITE=${GPU_SITE:-/tmp/site}
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .whl/*.whl \
        || echo "warning: installing .whl/*.whl failed; going on with what is installed" >&2
else
    echo "warning: no .whl/ here (run 'perf/gpu_check.sh fetch' where PyPI is reachable);" \
         "the aesni comparison and differential tests need cryptography" >&2
fi
# The registry imports its built-ins as ipsec_plugins.*: the folder plugins/ under that name.
SHIM=$(mktemp -d)
ln -s "$ROOT/plugins" "$SHIM/ipsec_plugins"
export PYTHONPATH="$ROOT:$SHIM:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

"$PY" - "$OUTDIR/env.json" <<'EOF'
import json, platform, shutil, subprocess, sys
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception as exc:
        return f"unavailable: {exc}"
env = {"python": sys.version, "platform": platform.platform(),
       "nvidia_smi": run("nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                         "--format=csv,noheader"),
       "nvcc": run("nvcc", "--version").splitlines()[-1:] if shutil.which("nvcc") else None}
for name in ("cupy", "numpy", "cryptography", "Crypto", "pluggy", "typer", "rich", "pytest"):
    try:
        module = __import__(name)
        env[name] = getattr(module, "__version__", "present")
    except Exception as exc:
        env[name] = f"missing: {exc.__class__.__name__}: {exc}"
try:
    from ipsec_plugins.gpu import GpuBackend
    env["gpu_probe"] = GpuBackend().probe() or "available"
except Exception as exc:
    env["gpu_probe"] = f"import failed: {exc!r}"
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env, indent=2))
EOF

echo "== GPU tests" >&2
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -rs -k gpu tests/crypto/test_gpu_*.py 2>&1 | tee "$OUTDIR/gpu_tests.log"
TESTS_RC=${PIPESTATUS[0]}

IPSEC=("$PY" -m ipsec_core.cli)
echo "== ipsec perf --backend gpu" >&2
timeout 330 "${IPSEC[@]}" perf --backend gpu --json \
    --proposal "${GPU_PROPOSALS:-aes128gcm16,aes256gcm16}" --size "${GPU_SIZES:-64,576,1400,9000}" \
    --batches "${GPU_BATCHES:-1024,4096,16384,65536}" --repeats "${GPU_REPEATS:-5}" \
    > "$OUTDIR/gpu_perf.json" 2> "$OUTDIR/gpu_perf.err"
PERF_RC=$?
echo "== ipsec perf --backend aesni (one core, for comparison)" >&2
timeout 60 "${IPSEC[@]}" perf --backend aesni --json --proposal aes128gcm16 \
    --size "${GPU_SIZES:-64,576,1400,9000}" --count 20000 --batch 256 --repeats 3 \
    > "$OUTDIR/aesni_perf.json" 2>> "$OUTDIR/gpu_perf.err"
AESNI_RC=$?

"$PY" - "$OUTDIR" "$TESTS_RC" "$PERF_RC" "$AESNI_RC" <<'EOF'
import json, os, re, sys
out, tests_rc, perf_rc, aesni_rc = sys.argv[1], *map(int, sys.argv[2:])
def load(name):
    try:
        with open(os.path.join(out, name)) as fh:
            return json.load(fh)
    except Exception:
        return None
log = open(os.path.join(out, "gpu_tests.log")).read() if os.path.exists(os.path.join(out, "gpu_tests.log")) else ""
counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", log.splitlines()[-1] if log else "")}
rows = load("gpu_perf.json") or []
best = {}
for r in rows:
    key = f"{r['proposal']} {r['size']}B {r['direction']}"
    if key not in best or r["batch"] > best[key]["batch"]:
        best[key] = r
summary = {
    "tests_rc": tests_rc, "tests": counts, "perf_rc": perf_rc, "aesni_rc": aesni_rc,
    "perf_error": open(os.path.join(out, "gpu_perf.err")).read()[-2000:] if perf_rc else "",
    "largest_batch": {k: {f: v[f] for f in ("batch", "kernel_gbps", "device_e2e_gbps", "e2e_gbps",
                                             "batch_latency_ms", "aesni_gbps", "vs_aesni")}
                      for k, v in sorted(best.items())},
}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
EOF
rm -rf "$SHIM"
[ "$TESTS_RC" -eq 0 ] && [ "$PERF_RC" -eq 0 ]
