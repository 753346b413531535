#!/usr/bin/env bash
# Runs the GPU bundle made by tests/gpu/bundle.sh on a GPU host (no JDK needed there): joins
# and unpacks the parts found in DIR (once, into $MLA4J_GPU_HOME, default /tmp/mla4j-gpu),
# then runs
#   suite  the JUnit tests tagged "gpu" (org.mla4j.tests.GpuSuite), exit 1 on a failure
#   bench  the Java decode-step benchmark (org.mla4j.samples.GpuDecodeBenchmark)
#   all    both (default)
# usage: bash tests/gpu/run.sh DIR [suite|bench|all] [benchmark args]
set -uo pipefail
dir=${1:?usage: run.sh DIR [suite|bench|all]}
what=${2:-all}
shift $(( $# >= 2 ? 2 : 1 ))
home=${MLA4J_GPU_HOME:-/tmp/mla4j-gpu}
if [ ! -x "$home/jre/bin/java" ]; then
    parts=("$dir"/mla4j-gpu.tar.xz.part-*)
    [ -e "${parts[0]}" ] || { echo "no bundle parts in $dir"; exit 2; }
    mkdir -p "$(dirname "$home")"
    cat "${parts[@]}" | xz -d | tar -x -C "$(dirname "$home")" || exit 2
    [ "$(dirname "$home")/mla4j-gpu" = "$home" ] || mv "$(dirname "$home")/mla4j-gpu" "$home"
fi
java=("$home/jre/bin/java" -Xmx24g -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$home/lib/*")
status=0
if [ "$what" = suite ] || [ "$what" = all ]; then
    echo "== gpu-tagged tests"
    "${java[@]}" org.mla4j.tests.GpuSuite || status=1
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    echo "== decode step from Java vs kernel only"
    "${java[@]}" org.mla4j.samples.GpuDecodeBenchmark "$@" || status=1
fi
exit $status
