#!/usr/bin/env bash
# The GPU-host script of the lightning indexer, top-k, RoPE and KV quantise kernels: build
# op-native (Release, CUDA, ninja, 90a) into /tmp/mla-build, run test_gpu_indexer and the CPU
# test of the same ops, the same GPU test under compute-sanitizer memcheck and racecheck on a
# reduced case list, count the tensor-core instructions of the indexer kernels in SASS, then
# bench_indexer and the plain-PyTorch peer, and print one combined table. With OUT set,
# everything also goes to $OUT/indexer_log.txt.
#   op-native/bench/run_gpu_indexer.sh [--quick]   (--quick: the largest shapes only)
# Environment: MLA_BUILD_DIR (default /tmp/mla-build), MLA_CUDA_ARCHS (default 90a).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
build=${MLA_BUILD_DIR:-/tmp/mla-build}
archs=${MLA_CUDA_ARCHS:-90a}
quick=""
[ "${1:-}" = "--quick" ] && quick="--quick"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    exec > >(tee "$OUT/indexer_log.txt") 2>&1
fi
status=0
step() { printf '\n=== %s (%ss)\n' "$*" "$SECONDS"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
nvcc --version 2>&1 | tail -n 1

step "configure and build ($build)"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$src" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMLA4J_CUDA=ON \
    -DMLA4J_CUDA_ARCHS="$archs" >/dev/null || exit 1
cmake --build "$build" -j "$(nproc)" --target mla4j test_gpu_indexer test_indexer \
    bench_indexer || exit 1

step "tests"
timeout 150 "$build/test_gpu_indexer" | tail -n 90
[ "${PIPESTATUS[0]}" = 0 ] || status=1
timeout 60 "$build/test_indexer" | tail -n 3 || status=1

step "compute-sanitizer (reduced case list)"
if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck; do
        echo "-- $tool"
        MLA4J_TEST_QUICK=1 timeout 100 compute-sanitizer --tool "$tool" --error-exitcode 9 \
            "$build/test_gpu_indexer" 2>&1 | grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|Error|Hazard" | head -n 20
        [ "${PIPESTATUS[0]}" = 0 ] || status=1
    done
else
    echo "compute-sanitizer not found"
fi

step "SASS: tensor-core instructions per indexer kernel"
if command -v cuobjdump >/dev/null; then
    cuobjdump -sass "$build/libmla4j.so" 2>/dev/null | awk '
        /Function :/ { fn = $3; if (fn ~ /indexer|topk_kernel/) seen[fn] = 1 }
        fn ~ /indexer|topk_kernel/ && /HGMMA/ { hg[fn]++ }
        fn ~ /indexer|topk_kernel/ && /QGMMA/ { qg[fn]++ }
        fn ~ /indexer|topk_kernel/ && /(LDL|STL)/ { lm[fn]++ }
        fn ~ /indexer|topk_kernel/ && /BAR/ { bar[fn]++ }
        END { for (k in seen) printf "HGMMA %4d  QGMMA %4d  local ld/st %3d  BAR %3d  %s\n",
                  hg[k], qg[k], lm[k], bar[k], k }' | sort
else
    echo "cuobjdump not found"
fi

step "bench: mla4j"
timeout 150 "$build/bench/bench_indexer" $quick | tee "$build/bench_indexer_mla4j.txt" || status=1

step "bench: plain PyTorch"
timeout 150 python3 "$here/torch_indexer.py" $quick | tee "$build/bench_indexer_torch.txt" || status=1

step "combined (median us)"
python3 - "$build/bench_indexer_mla4j.txt" "$build/bench_indexer_torch.txt" <<'PY'
import re, sys
res = {}
for path in sys.argv[1:]:
    try:
        for line in open(path):
            m = re.match(r"RESULT impl=(\S+) kind=(.+?) dtype=(\S+) op=(\S+) b=(\d+) s_q=(\d+) s_k=(\d+) topk=(\d+) us=([\d.]+) tflops=([\d.]+)", line)
            if m:
                res[(m[1], m[2], m[3], m[4], int(m[5]), int(m[6]), int(m[7]), int(m[8]))] = (float(m[9]), float(m[10]))
            m = re.match(r"RESULT impl=(\S+) op=topk-alone rows=(\d+) n=(\d+) k=(\d+) us=([\d.]+) gbs=([\d.]+)", line)
            if m:
                res[(m[1], "alone", int(m[2]), int(m[3]), int(m[4]))] = (float(m[5]), float(m[6]))
    except OSError:
        pass
peak = {"bf16": 790.0, "fp8": 1580.0}
print(f"{'shape':46s} {'q/k':5s} {'op':7s} {'mla4j us':>9s} {'TFLOP/s':>8s} {'of peak':>8s} {'torch us':>9s} {'vs torch':>9s}")
for key in sorted(k for k in res if k[0] == "mla4j" and k[1] != "alone"):
    _, kind, dt, op, b, s_q, s_k, topk = key
    a = res[key]
    t = res.get(("torch", kind, dt, op, b, s_q, s_k, topk))
    name = f"{kind} b {b} s_q {s_q} s_k {s_k} topk {topk}"
    tcol = f"{t[0]:9.1f} {t[0] / a[0]:8.2f}x" if t else f"{'-':>9s} {'-':>9s}"
    print(f"{name:46s} {dt:5s} {op:7s} {a[0]:9.1f} {a[1]:8.1f} {100 * a[1] / peak[dt]:7.1f}% {tcol}")
print(f"\n{'top-k alone':46s} {'mla4j us':>9s} {'GB/s':>8s} {'of 4300':>8s} {'torch us':>9s} {'vs torch':>9s}")
for key in sorted(k for k in res if k[0] == "mla4j" and k[1] == "alone"):
    _, _, rows, n, k = key
    a = res[key]
    t = res.get(("torch", "alone", rows, n, k))
    tcol = f"{t[0]:9.1f} {t[0] / a[0]:8.2f}x" if t else f"{'-':>9s} {'-':>9s}"
    print(f"{'rows %d n %d k %d' % (rows, n, k):46s} {a[0]:9.1f} {a[1]:8.1f} {100 * a[1] / 4300:7.1f}% {tcol}")
PY

step "done: $([ $status = 0 ] && echo all passed || echo FAILURES above)"
exit $status
