package org.mla4j.tests.concurrent;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.tests.support.TestRandom;

/**
 * Many threads use the plugin at once for a while: eager ops on shared inputs, inference on
 * one shared SameDiff graph, and decode loops on paged caches of their own, all mixed (each
 * thread starts at a different job and cycles through all of them). Every result must equal,
 * bit for bit, the single-threaded result computed before the threads start; the kernels'
 * work split depends only on the shapes and the pool size, never on what else runs, so
 * concurrent calls give identical bits. Over the run, resident memory, JavaCPP's native
 * memory, the Java heap and the live thread count must stay level after a warm-up (a leak
 * per call would show as growth; samples are taken with the workers paused, see
 * {@link ResourceMonitor}).
 *
 * <p>Duration: {@code -Dmla4j.stress.seconds} (default 8, for CI); threads:
 * {@code -Dmla4j.stress.threads} (default 8, on any number of cores). A long run, e.g.
 * {@code -Dmla4j.stress.seconds=600}, prints a sample of the resources every interval.
 */
class ConcurrencyStressTest {
    private static final double SECONDS = Double.parseDouble(System.getProperty("mla4j.stress.seconds", "8"));
    private static final int THREADS = Integer.getInteger("mla4j.stress.threads", 8);
    /**
     * Resident memory after the warm-up: the allocator may still take a new arena (a one-off
     * step of up to about 70 MiB was seen once in a 10-minute run, level before and after), so
     * the total gets a loose bound and the second half of the run, where a leak per call keeps
     * growing and a step is rarely repeated, a tight one.
     */
    private static final long ALLOWED_RSS_GROWTH = 192L << 20, ALLOWED_RSS_GROWTH_SECOND_HALF = 32L << 20;
    private static final long ALLOWED_JAVACPP_GROWTH = 16L << 20;
    private static final long ALLOWED_HEAP_GROWTH = 4L << 20;

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    @Test
    void manyThreadsGiveSingleThreadedResultsWithoutLeaking() throws InterruptedException {
        TestRandom r = TestRandom.create();
        List<StressJob> jobs = new ArrayList<>(EagerOpJobs.all(r));
        jobs.add(new SharedGraphJob(r));
        jobs.addAll(KvCacheJob.all(r));
        String only = System.getProperty("mla4j.stress.jobs", "");
        if (!only.isEmpty()) jobs.removeIf(j -> java.util.Arrays.stream(only.split(",")).noneMatch(j.name()::contains));

        ConcurrentLinkedQueue<String> failures = new ConcurrentLinkedQueue<>();
        AtomicBoolean stop = new AtomicBoolean();
        AtomicLongArray runs = new AtomicLongArray(jobs.size());
        // Workers hold the read lock for one job run; a sample takes the write lock, so it sees
        // the process between runs (no arrays of a run in flight), with the workers paused.
        ReentrantReadWriteLock quiet = new ReentrantReadWriteLock(true);
        CountDownLatch started = new CountDownLatch(THREADS);
        List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < THREADS; t++) {
            int id = t;
            Thread w = new Thread(() -> {
                started.countDown();
                for (int i = 0; !stop.get(); i++) {
                    int j = (id + i) % jobs.size();
                    quiet.readLock().lock();
                    try {
                        jobs.get(j).run(id + i);
                        runs.incrementAndGet(j);
                    } catch (Throwable e) {
                        failures.add(jobs.get(j).name() + " on thread " + id + ": " + e);
                        if (failures.size() > 20) stop.set(true);
                    } finally {
                        quiet.readLock().unlock();
                    }
                }
            }, "mla4j-stress-" + t);
            w.start();
            workers.add(w);
        }
        started.await();

        ResourceMonitor monitor = new ResourceMonitor();
        long end = System.nanoTime() + (long) (SECONDS * 1e9);
        // Resident memory rises for about a minute (per-thread sessions, caches and allocator
        // arenas filling) and is level after that.
        long warmUpEnd = System.nanoTime() + (long) (Math.min(SECONDS / 2, 60) * 1e9);
        long interval = (long) (Math.max(1, Math.min(SECONDS / 10, 30)) * 1e9);
        ResourceMonitor.Sample baseline = null;
        while (System.nanoTime() < end && !stop.get()) {
            Thread.sleep(Math.max(1, Math.min(interval, end - System.nanoTime()) / 1_000_000));
            quiet.writeLock().lock();
            ResourceMonitor.Sample s;
            try {
                s = monitor.sample();
            } finally {
                quiet.writeLock().unlock();
            }
            if (baseline == null && System.nanoTime() >= warmUpEnd) baseline = s;
            if (SECONDS > 30) System.out.println("stress: " + s);
        }
        stop.set(true);
        for (Thread w : workers) w.join(120_000);
        ResourceMonitor.Sample last = monitor.sample();

        StringBuilder report = new StringBuilder("stress run, " + THREADS + " threads, " + SECONDS + " s, "
                + r.tag() + "\n");
        long total = 0;
        for (int j = 0; j < jobs.size(); j++) {
            report.append(String.format("  %-45s %8d runs%n", jobs.get(j).name(), runs.get(j)));
            total += runs.get(j);
        }
        report.append("  baseline ").append(baseline).append("\n  last     ").append(last).append('\n');
        System.out.print(report);

        for (Thread w : workers) assertTrue(!w.isAlive(), w.getName() + " did not stop");
        if (!failures.isEmpty()) fail(failures.size() + " failures, first: " + failures.peek() + "\n" + report);
        for (int j = 0; j < jobs.size(); j++) {
            assertTrue(runs.get(j) > 0, jobs.get(j).name() + " never ran\n" + report);
        }
        assertTrue(total >= 2L * THREADS, "too few runs to mean anything\n" + report);
        if (baseline == null) baseline = monitor.samples().get(0);
        ResourceMonitor.Sample mid = monitor.middleSince(baseline);
        assertTrue(last.rss() - baseline.rss() < ALLOWED_RSS_GROWTH,
                "resident memory grew by " + ResourceMonitor.mib(last.rss() - baseline.rss()) + " MiB after the warm-up\n" + report);
        assertTrue(last.rss() - mid.rss() < ALLOWED_RSS_GROWTH_SECOND_HALF,
                "resident memory grew by " + ResourceMonitor.mib(last.rss() - mid.rss()) + " MiB in the second half ("
                        + mid + ")\n" + report);
        assertTrue(last.javacppBytes() - baseline.javacppBytes() < ALLOWED_JAVACPP_GROWTH,
                "JavaCPP native memory grew by " + ResourceMonitor.mib(last.javacppBytes() - baseline.javacppBytes())
                        + " MiB after the warm-up\n" + report);
        assertTrue(last.heapBytes() - baseline.heapBytes() < ALLOWED_HEAP_GROWTH,
                "Java heap in use grew by " + ResourceMonitor.mib(last.heapBytes() - baseline.heapBytes())
                        + " MiB after the warm-up\n" + report);
        assertEquals(baseline.threads() - THREADS, last.threads(),
                "live threads after the workers stopped: the baseline minus the " + THREADS + " workers\n" + report);
    }
}
