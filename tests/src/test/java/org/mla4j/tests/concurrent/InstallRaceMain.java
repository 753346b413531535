package org.mla4j.tests.concurrent;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CyclicBarrier;
import org.mla4j.Mla4j;
import org.mla4j.exec.MlaExecutioner;
import org.mla4j.ops.MlaOp;
import org.mla4j.ops.OpRegistry;
import org.mla4j.ops.TopK;
import org.nd4j.autodiff.functions.DifferentialFunction;
import org.nd4j.imports.converters.ImportClassMapping;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.executioner.OpExecutioner;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Run by {@link InstallRaceTest} in a fresh JVM: many threads released at once call
 * {@link Mla4j#install()} while others start ND4J with plain work, then each runs an mla4j
 * op. Afterwards a second wave calls install() again. Prints "FAIL ..." lines for what went
 * wrong and "DONE" at the end:
 * <ul>
 *   <li>every call returned and every op result is right (top-k of a known permutation);</li>
 *   <li>one executioner instance, the plugin's, seen by every thread and kept by the second
 *       wave;</li>
 *   <li>each op name registered once: the same registered instance after the second wave;</li>
 *   <li>libmla4j and its JNI glue mapped into the process from one file each.</li>
 * </ul>
 */
public final class InstallRaceMain {
    private static final int THREADS = 24;
    private static final int N = 200, K = 7;

    private InstallRaceMain() {}

    public static void main(String[] args) throws Exception {
        ConcurrentLinkedQueue<String> failures = new ConcurrentLinkedQueue<>();
        Map<OpExecutioner, Boolean> executioners = java.util.Collections.synchronizedMap(new IdentityHashMap<>());
        race(failures, executioners, true);
        Map<String, DifferentialFunction> first = registered();
        race(failures, executioners, false);
        Map<String, DifferentialFunction> second = registered();

        if (executioners.size() != 1) failures.add("threads saw " + executioners.size() + " executioners: " + executioners.keySet());
        if (!(Nd4j.getExecutioner() instanceof MlaExecutioner)) failures.add("executioner is " + Nd4j.getExecutioner().getClass());
        for (Map.Entry<String, DifferentialFunction> e : first.entrySet()) {
            if (e.getValue() == null) failures.add("op " + e.getKey() + " not registered");
            else if (second.get(e.getKey()) != e.getValue()) failures.add("op " + e.getKey() + " registered again by a later install()");
        }
        for (String lib : new String[] {"libmla4j.so", "libjniMlaLib.so"}) {
            Set<String> files = mappedFiles(lib);
            if (files.size() != 1) failures.add(lib + " mapped from " + files.size() + " files: " + files);
        }
        for (String f : failures) System.out.println("FAIL " + f);
        System.out.println("DONE threads=" + THREADS + " failures=" + failures.size());
        System.out.flush();
        System.exit(0);
    }

    /** Releases all threads at once: two thirds call install(), the rest plain ND4J first. */
    private static void race(ConcurrentLinkedQueue<String> failures, Map<OpExecutioner, Boolean> executioners,
                             boolean firstWave) throws InterruptedException {
        CyclicBarrier gate = new CyclicBarrier(THREADS);
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < THREADS; t++) {
            int id = t;
            Thread th = new Thread(() -> {
                try {
                    gate.await();
                    if (id % 3 == 2) {
                        INDArray a = Nd4j.rand(DataType.FLOAT, 8, 8);
                        if (a.mmul(a).length() != 64) failures.add("plain ND4J work failed");
                    }
                    Mla4j.install();
                    executioners.put(Nd4j.getExecutioner(), Boolean.TRUE);
                    checkTopK(id, failures);
                } catch (Throwable e) {
                    failures.add((firstWave ? "first" : "second") + " wave, thread " + id + ": " + e);
                }
            });
            th.start();
            threads.add(th);
        }
        for (Thread th : threads) th.join(120_000);
    }

    /** Top-k of a known permutation: the k largest values sit at known positions. */
    private static void checkTopK(int seed, ConcurrentLinkedQueue<String> failures) {
        float[] scores = new float[N];
        int[] positionOf = new int[N];
        for (int i = 0; i < N; i++) {
            int pos = (int) ((i * 37L + seed * 11L) % N);
            scores[pos] = i;
            positionOf[i] = pos;
        }
        INDArray[] idxVal = Nd4j.exec(new TopK(Nd4j.createFromArray(scores).reshape(1, N), K));
        for (int j = 0; j < K; j++) {
            int expected = positionOf[N - 1 - j];
            if (idxVal[0].getInt(0, j) != expected) {
                failures.add("top-k on thread seed " + seed + ": index " + j + " is " + idxVal[0].getInt(0, j) + ", expected " + expected);
                return;
            }
        }
    }

    private static Map<String, DifferentialFunction> registered() throws ReflectiveOperationException {
        Map<String, DifferentialFunction> m = new java.util.LinkedHashMap<>();
        for (Class<? extends MlaOp> c : OpRegistry.OPS) {
            String name = c.getDeclaredConstructor().newInstance().opName();
            m.put(name, ImportClassMapping.getOpNameMapping().get(name));
        }
        return m;
    }

    /** Distinct files named {@code lib} mapped into this process (Linux /proc/self/maps). */
    private static Set<String> mappedFiles(String lib) throws IOException {
        Set<String> files = new TreeSet<>();
        for (String line : Files.readAllLines(Path.of("/proc/self/maps"))) {
            int slash = line.indexOf('/');
            if (slash >= 0 && line.endsWith("/" + lib)) files.add(line.substring(slash));
        }
        return files;
    }
}
