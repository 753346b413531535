package org.mla4j.samples;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * Times a benchmark body: warm-up runs first (JIT, first-touch of buffers, SameDiff's session
 * set-up), then timed samples until both a minimum count and a minimum time are reached. The
 * reported figure is the median sample; min and max are kept to show the spread. A body that
 * takes well under a millisecond is run several times per sample so the clock's resolution does
 * not dominate; a sample is then the mean of those runs. A slow body (over
 * {@value #SLOW_BODY_MS} ms) is warmed up once and timed {@value #SLOW_SAMPLES} times, a very
 * slow one (over {@value #VERY_SLOW_BODY_MS} ms) {@value #VERY_SLOW_SAMPLES} times, so that a
 * whole run stays within its time budget.
 */
final class BenchTimer {
    /** Result of timing one body. All times are per run of the body, in milliseconds. */
    record Timing(double medianMs, double minMs, double maxMs, int samples, int runsPerSample, int warmups) {}

    private static final double MIN_SAMPLE_MS = 2.0;
    private static final int MAX_RUNS_PER_SAMPLE = 2000;
    private static final double SLOW_BODY_MS = 500;
    private static final int SLOW_SAMPLES = 3;
    private static final double VERY_SLOW_BODY_MS = 4000;
    private static final int VERY_SLOW_SAMPLES = 2;

    private final double warmupSeconds;
    private final int minWarmups;
    private final int maxWarmups;
    private final double measureSeconds;
    private final int minSamples;
    private final int maxSamples;

    private BenchTimer(double warmupSeconds, int minWarmups, int maxWarmups, double measureSeconds,
                       int minSamples, int maxSamples) {
        this.warmupSeconds = warmupSeconds;
        this.minWarmups = minWarmups;
        this.maxWarmups = maxWarmups;
        this.measureSeconds = measureSeconds;
        this.minSamples = minSamples;
        this.maxSamples = maxSamples;
    }

    /** The default run: at least 2 warm-ups (0.25 s), then at least 5 samples over 1 s. */
    static BenchTimer standard() {
        return new BenchTimer(0.25, 2, 20, 1.0, 5, 25);
    }

    /** The smoke-test run: 1 warm-up, then at least 3 samples over 0.2 s. */
    static BenchTimer quick() {
        return new BenchTimer(0.05, 1, 5, 0.2, 3, 10);
    }

    String describe() {
        return String.format("warm-up >= %d runs and >= %.2f s; then >= %d samples and >= %.2f s (at most %d); "
                + "figure = median sample; bodies under %.0f ms are repeated within a sample; bodies over %.1f s "
                + "get 1 warm-up and %d samples (over %.0f s: %d)", minWarmups, warmupSeconds, minSamples,
                measureSeconds, maxSamples, MIN_SAMPLE_MS, SLOW_BODY_MS / 1000, SLOW_SAMPLES,
                VERY_SLOW_BODY_MS / 1000, VERY_SLOW_SAMPLES);
    }

    Timing time(Runnable body) {
        long warmStart = System.nanoTime();
        int warmups = 0;
        double lastMs = 0;
        while (warmups < minWarmups || (warmups < maxWarmups && seconds(warmStart) < warmupSeconds)) {
            long t0 = System.nanoTime();
            body.run();
            lastMs = (System.nanoTime() - t0) / 1e6;
            warmups++;
            if (lastMs > SLOW_BODY_MS) break;
        }
        int wanted = lastMs > VERY_SLOW_BODY_MS ? Math.min(minSamples, VERY_SLOW_SAMPLES)
                : lastMs > SLOW_BODY_MS ? Math.min(minSamples, SLOW_SAMPLES) : minSamples;
        int runsPerSample = lastMs >= MIN_SAMPLE_MS ? 1
                : (int) Math.min(MAX_RUNS_PER_SAMPLE, Math.ceil(MIN_SAMPLE_MS / Math.max(lastMs, 1e-4)));

        List<Double> samples = new ArrayList<>();
        long start = System.nanoTime();
        while (samples.size() < wanted || (samples.size() < maxSamples && seconds(start) < measureSeconds)) {
            long t0 = System.nanoTime();
            for (int i = 0; i < runsPerSample; i++) body.run();
            samples.add((System.nanoTime() - t0) / 1e6 / runsPerSample);
        }
        Collections.sort(samples);
        int n = samples.size();
        double median = n % 2 == 1 ? samples.get(n / 2) : 0.5 * (samples.get(n / 2 - 1) + samples.get(n / 2));
        return new Timing(median, samples.get(0), samples.get(n - 1), n, runsPerSample, warmups);
    }

    private static double seconds(long since) {
        return (System.nanoTime() - since) / 1e9;
    }
}
