package org.mla4j.tests.concurrent;

import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.Pointer;

/**
 * Samples what a leak would make grow: the process's resident memory (JavaCPP's
 * {@link Pointer#physicalBytes()}, read from the OS: native allocations of libmla4j, libnd4j
 * and ND4J's array buffers all show here), the memory of JavaCPP pointers with a deallocator
 * ({@link Pointer#totalBytes()}: the parameter structs the ops fill for each native call;
 * ND4J 1.0.0-M2.1 does not count its CPU array buffers there), the Java heap in use and the
 * number of live Java threads. Memory that is merely unreferenced (ND4J frees array buffers
 * when their Java objects are collected) does not count: see {@link #sample()}.
 */
final class ResourceMonitor {
    /** One sample. */
    record Sample(double seconds, long rss, long javacppBytes, long heapBytes, int threads) {
        @Override
        public String toString() {
            return String.format("t=%6.1fs rss=%7.1f MiB javacpp=%7.1f MiB heap=%6.1f MiB threads=%d",
                    seconds, mib(rss), mib(javacppBytes), mib(heapBytes), threads);
        }
    }

    private final long start = System.nanoTime();
    private final List<Sample> samples = new ArrayList<>();

    /**
     * Collects garbage and waits until ND4J's and JavaCPP's deallocator threads have freed what
     * it released (resident memory stops falling), then samples. A young generation full of
     * dead arrays holds their native buffers until it is collected, and the buffers are freed
     * asynchronously after that: sampled any earlier, resident memory swings by hundreds of MiB
     * with the collector's timing.
     */
    Sample sample() {
        long previous = Long.MAX_VALUE;
        for (int i = 0; i < 50; i++) {
            System.gc();
            sleep(200);
            long rss = Pointer.physicalBytes();
            if (previous - rss < (1L << 20)) break;
            previous = rss;
        }
        Runtime rt = Runtime.getRuntime();
        Sample s = new Sample((System.nanoTime() - start) / 1e9, Pointer.physicalBytes(), Pointer.totalBytes(),
                rt.totalMemory() - rt.freeMemory(), ManagementFactory.getThreadMXBean().getThreadCount());
        samples.add(s);
        return s;
    }

    /** The first sample at or after the middle of the time from {@code from} to the last sample. */
    Sample middleSince(Sample from) {
        double half = (from.seconds() + samples.get(samples.size() - 1).seconds()) / 2;
        for (Sample s : samples) if (s.seconds() >= half) return s;
        return samples.get(samples.size() - 1);
    }

    List<Sample> samples() {
        return samples;
    }

    static double mib(long bytes) {
        return bytes / (1024.0 * 1024.0);
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
