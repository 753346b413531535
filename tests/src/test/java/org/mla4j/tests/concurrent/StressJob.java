package org.mla4j.tests.concurrent;

/**
 * One kind of work the concurrency stress test repeats on many threads. A job computes its
 * expected results once, single-threaded, when it is built; {@link #run} does the same work
 * again on the calling thread and throws an AssertionError when a result differs in any bit.
 * Everything a job shares between threads is read only; what it writes is the calling
 * thread's own.
 */
interface StressJob {
    String name();

    /** Repeats the work; {@code iteration} may pick among the job's input sets. */
    void run(int iteration);
}
