#!/usr/bin/env bash
# Builds the self-contained GPU test bundle, for a GPU host with no JDK or Maven: a jlink'd
# Java 17 runtime, the jars of the tests module's class path (the plugin with its native
# library built here, CUDA included; ND4J's CPU backend; JUnit), the test classes and the
# samples, packed as one tar.xz cut into parts of at most 48 MiB:
#   tests/target/gpu-bundle/mla4j-gpu.tar.xz.part-aa, -ab, ...
# On the GPU host, with the parts in DIR:  bash tests/gpu/run.sh DIR [suite|bench|all]
#   tests/gpu/bundle.sh            (builds the project first)
#   SKIP_BUILD=1 tests/gpu/bundle.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$root/tests/target/gpu-bundle
stage=$out/stage/mla4j-gpu
rm -rf "$out"
mkdir -p "$stage/lib"
cd "$root"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "== build (mvn install -DskipTests)"
    mvn -B -q install -DskipTests
fi
echo "== class path"
mvn -B -q -pl tests dependency:copy-dependencies -DincludeScope=test -DoutputDirectory="$stage/lib"
mvn -B -q -pl samples dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$stage/lib"
cp samples/target/mla4j-samples-*.jar "$stage/lib/"
(cd tests/target/test-classes && zip -q -r -0 "$stage/lib/mla4j-tests.jar" .)

# Jars are zip-deflated; stored, their contents (libnd4jcpu.so above all) compress far better
# in the tar.xz.
echo "== repack jars without compression"
python3 - "$stage/lib" <<'PY'
import os, sys, zipfile
lib = sys.argv[1]
for name in sorted(os.listdir(lib)):
    if not name.endswith(".jar"):
        continue
    path = os.path.join(lib, name)
    tmp = path + ".tmp"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            info.compress_type = zipfile.ZIP_STORED
            dst.writestr(info, data)
    os.replace(tmp, path)
PY

echo "== runtime (jlink)"
jlink --add-modules java.base,java.logging,java.management,jdk.unsupported,java.xml,java.sql,java.naming,java.desktop,jdk.management,jdk.zipfs \
    --strip-debug --no-header-files --no-man-pages --output "$stage/jre"

echo "== pack"
tar -C "$out/stage" -cf - mla4j-gpu | xz -T0 -6 > "$out/mla4j-gpu.tar.xz"
split -b 48M "$out/mla4j-gpu.tar.xz" "$out/mla4j-gpu.tar.xz.part-"
rm -rf "$out/stage" "$out/mla4j-gpu.tar.xz"
ls -l "$out"
echo "parts in $out; on the GPU host: bash tests/gpu/run.sh <dir with the parts> [suite|bench|all]"
