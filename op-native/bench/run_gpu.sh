#!/usr/bin/env bash
# The one command for the GPU host: configure and build op-native (Release, CUDA, ninja) into
# /tmp/mla-build, run every native test through ctest (the GPU tests included), count the
# tensor-core instructions and local-memory accesses of the kernels in SASS, optionally run the
# GPU tests under compute-sanitizer, benchmark dense and sparse attention (mla4j, then plain
# PyTorch) and print the combined tables. With OUT set, everything also goes to
# $OUT/gpu_log.txt.
#   op-native/bench/run_gpu.sh [--quick] [--sanitize] [--no-bench] [--no-peer] [--sparse-only]
#   --quick: fewer shapes; --sanitize: memcheck, racecheck and synccheck on the GPU tests
#   (racecheck on a reduced case list: it slows kernels 50x); --no-bench: tests only;
#   --no-peer: no PyTorch runs; --sparse-only: no dense-decode benchmarks; --skip-tests: no
#   ctest and SASS counts (e.g. a sanitizer pass after a full run)
# Environment: MLA_WATCHDOG (default ON: kernel waits over 4 s trap; OFF for final timings),
# MLA_BUILD_DIR (default /tmp/mla-build), MLA_CUDA_ARCHS (default 90a: passed as
# -DMLA4J_CUDA_ARCHS, which builds only the Hopper target where the CMake file offers it).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
build=${MLA_BUILD_DIR:-/tmp/mla-build}
archs=${MLA_CUDA_ARCHS:-90a}
quick=""
sanitize=0
bench=1
peer=1
dense=1
tests=1
for arg in "$@"; do
    case "$arg" in
        --skip-tests) tests=0 ;;
        --quick) quick="--quick" ;;
        --sanitize) sanitize=1 ;;
        --no-bench) bench=0 ;;
        --no-peer) peer=0 ;;
        --sparse-only) dense=0 ;;
    esac
done
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu_log.txt") 2>&1
fi
status=0
step() { printf '\n=== %s\n' "$*"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
nvcc --version 2>&1 | tail -n 1

step "configure and build ($build)"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$src" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMLA4J_CUDA=ON \
    -DMLA4J_CUDA_ARCHS="$archs" -DMLA4J_WATCHDOG="${MLA_WATCHDOG:-ON}" -DMLA4J_CUDA_SPILLS=ON || exit 1
cmake --build "$build" -j "$(nproc)" || exit 1
bench="$build/bench/bench_dense_decode"
if [ ! -x "$bench" ]; then  # bench/ not added to the build: compile it against the library
    bench="$build/bench_dense_decode"
    c++ -O2 -std=c++17 -I"$src/include" "$here/bench_dense_decode.cpp" -o "$bench" \
        -L"$build" -lmla4j -Wl,-rpath,"$build" || exit 1
fi

if [ "$tests" = 1 ]; then
    step "native tests"
    ctest --test-dir "$build" --output-on-failure --timeout 120 || status=1

    step "SASS: tensor-core instructions per dense-decode kernel"
    if command -v cuobjdump >/dev/null; then
        cuobjdump -sass "$build/libmla4j.so" 2>/dev/null | awk '
            /^[[:space:]]*arch = / { arch = $3 }
            /Function :/ { fn = $3; if (fn ~ /decode/) seen[arch " " fn] = 1 }
            /Function :/ && fn ~ /attend/ { seen[arch " " fn] = 1 }
            fn ~ /decode|attend/ && /HGMMA/ { hg[arch " " fn]++ }
            fn ~ /decode|attend/ && /HMMA/ && !/HGMMA/ { hm[arch " " fn]++ }
            fn ~ /decode|attend/ && /(LDL|STL)/ { lm[arch " " fn]++ }
            END { for (k in seen) printf "%-8s HMMA %5d  HGMMA %5d  local ld/st %4d  %s\n",
                      substr(k, 1, index(k, " ") - 1), hm[k], hg[k], lm[k], substr(k, index(k, " ") + 1) }' |
            sort
    else
        echo "cuobjdump not found"
    fi
fi

if [ "$sanitize" = 1 ]; then
    step "compute-sanitizer (memcheck, synccheck: reduced cases; racecheck: fewer)"
    san() {  # tool, filter, test
        echo "-- $1 $3 (cases matching '$2')"
        MLA4J_TEST_FILTER="$2" timeout 120 compute-sanitizer --tool "$1" --error-exitcode 9 --print-limit 20 \
            "$build/$3" 2>&1 | grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|FAIL|Error|Hazard|hazard" | tail -n 12
        [ "${PIPESTATUS[0]}" = 0 ] || status=1
    }
    san memcheck "decode V32 h_q 128" test_gpu_sparse
    san memcheck "decode bf16 rows + extra" test_gpu_sparse
    san memcheck "prefill h_kv 2" test_gpu_sparse
    san synccheck "decode MODEL1 h_q 128" test_gpu_sparse
    san racecheck "decode bf16 rows h_q 64" test_gpu_sparse
    san racecheck "decode V32 h_q 128" test_gpu_sparse
    san memcheck "h_q 128/1 bs 64 s_q 2" test_gpu_dense_decode
    san racecheck "h_q 128/1 bs 64 s_q 2 b 5 " test_gpu_dense_decode
fi

if [ "$bench" = 0 ]; then
    step "done: $([ $status = 0 ] && echo all passed || echo FAILURES above)"
    exit $status
fi

step "bench: sparse attention (mla4j)"
timeout 150 "$build/bench/bench_sparse" $quick | tee "$build/bench_sparse.txt" || status=1

step "bench: sparse attention (plain PyTorch)"
if [ "$peer" = 1 ]; then
    timeout 150 python3 "$here/torch_sparse.py" $quick | tee "$build/bench_torch_sparse.txt" || status=1
fi

step "combined sparse table (median us; FlashMLA figures from shared measurements)"
python3 - "$build/bench_sparse.txt" "$build/bench_torch_sparse.txt" <<'PY'
import re, sys
rows = {}
for path in sys.argv[1:]:
    try:
        for line in open(path):
            m = re.match(r'RESULT (\S+) name="([^"]+)"(?: impl=(\S+))? us=([\d.]+) tflops=([\d.]+)', line)
            if m:
                rows.setdefault(m[2], {})[m[1]] = (float(m[4]), float(m[5]), m[3])
    except OSError:
        pass
flashmla = {"decode V32 b128 s_q2 h128 topk2048": 400, "decode MODEL1 b128 s_q2 h64 topk128+512": 117,
            "decode V32 b148 s_q2 h128 topk16384": 3099, "prefill d576 s_q4096 s_kv32768 h128 topk2048": 3840,
            "prefill d512 s_q4096 s_kv32768 h128 topk2048": 3746}
print(f"{'shape':46s} {'mla4j us':>9s} {'TFLOP/s':>8s} {'of 790':>7s} {'torch us':>9s} {'vs torch':>9s} {'FlashMLA us':>12s} {'vs FlashMLA':>12s}")
for name, r in rows.items():
    a, t, f = r.get("sparse"), r.get("torch"), flashmla.get(name)
    cols = [f"{name:46s}"]
    cols.append(f"{a[0]:9.1f} {a[1]:8.1f} {100 * a[1] / 790:6.1f}%" if a else f"{'-':>9s} {'-':>8s} {'-':>7s}")
    cols.append(f"{t[0]:9.1f} {t[0] / a[0]:8.2f}x" if a and t else f"{'-':>9s} {'-':>9s}")
    cols.append(f"{f:12d} {f / a[0]:11.2f}x" if f and a else f"{'-':>12s} {'-':>12s}")
    print(" ".join(cols))
PY

if [ "$dense" = 0 ]; then
    step "done: $([ $status = 0 ] && echo all passed || echo FAILURES above)"
    exit $status
fi

step "bench: mla4j"
"$bench" $quick | tee "$build/bench_mla4j.txt" || status=1

step "bench: other paths and shapes (not in the table below)"
echo "-- sm80 mma.sync kernel on this device (--impl sm80_mma):"
"$bench" --quick --runs 10 --impl sm80_mma | grep -v RESULT | tail -n 2 || status=1
echo "-- FP8 caches (sm80 kernel, key tiles dequantised to bf16 in shared memory):"
for c in v32 model1; do
    "$bench" --quick --runs 10 --cache $c | grep -v RESULT | tail -n 3 || status=1
done
echo "-- small batches (split-KV across the GPU, then the combine kernel):"
for b in 1 16; do "$bench" --b $b --runs 20 | grep -v RESULT | tail -n 2 || status=1; done

step "bench: plain PyTorch"
if [ "$peer" = 1 ]; then
    python3 "$here/torch_dense_decode.py" $quick | tee "$build/bench_torch.txt" || status=1
fi

step "combined (median us, TFLOP/s; FlashMLA figures from shared/gpu/README.md)"
python3 - "$build/bench_mla4j.txt" "$build/bench_torch.txt" <<'PY'
import re, sys
res = {}
for path in sys.argv[1:]:
    try:
        for line in open(path):
            m = re.match(r"RESULT impl=(\S+) s_q=(\d+) s_k=(\d+) us=([\d.]+) tflops=([\d.]+)", line)
            if m:
                res[(m[1], int(m[2]), int(m[3]))] = (float(m[4]), float(m[5]))
    except OSError:
        pass
flashmla = {(1, 4096): 265, (1, 8192): 491, (1, 16384): 936, (2, 8192): 997}
print(f"{'b 128 h_q 128 d 576/512 bf16':30s} {'mla4j us':>9s} {'TFLOP/s':>8s} {'of 790':>7s} "
      f"{'torch us':>9s} {'TFLOP/s':>8s} {'vs torch':>9s} {'FlashMLA us':>12s} {'vs FlashMLA':>12s}")
for s_q in (1, 2):
    for s_k in (4096, 8192, 16384):
        a, t = res.get(("mla4j", s_q, s_k)), res.get(("torch", s_q, s_k))
        if not a and not t:
            continue
        f = flashmla.get((s_q, s_k))
        cols = [f"s_q {s_q} s_k {s_k:5d}".ljust(30)]
        cols += [f"{a[0]:9.1f} {a[1]:8.1f} {100 * a[1] / 790:6.1f}%" if a else f"{'-':>9s} {'-':>8s} {'-':>7s}"]
        cols += [f"{t[0]:9.1f} {t[1]:8.1f}" if t else f"{'-':>9s} {'-':>8s}"]
        cols += [f"{t[0] / a[0]:8.2f}x" if a and t else f"{'-':>9s}"]
        cols += [f"{f:12d} {f / a[0]:11.2f}x" if f and a else f"{'-':>12s} {'-':>12s}"]
        print(" ".join(cols))
PY

step "done: $([ $status = 0 ] && echo all passed || echo FAILURES above)"
exit $status
