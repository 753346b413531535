package org.mla4j.samples;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Function;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.parallelism.ParallelInference;
import org.deeplearning4j.parallelism.inference.InferenceMode;
import org.mla4j.Mla4j;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Serves a network with {@code MlaSelfAttentionLayer} to many client threads with DL4J's
 * {@link ParallelInference} and prints, per mode and number of clients, the throughput and
 * the p50 / p99 latency of a request, beside the same requests answered by {@code output()}
 * of the network on one thread (the peer).
 */
@Command(name = "ParallelInferenceBenchmark", mixinStandardHelpOptions = true,
        description = "Throughput and latency of ParallelInference on a network with MLA self-attention.")
public final class ParallelInferenceBenchmark implements Callable<Integer> {
    @Option(names = "--clients", split = ",", description = "client threads to try (default: ${DEFAULT-VALUE})")
    int[] clients = {1, 4, 16};

    @Option(names = "--modes", split = ",", description = "ParallelInference modes (default: ${DEFAULT-VALUE})")
    InferenceMode[] modes = {InferenceMode.SEQUENTIAL, InferenceMode.BATCHED, InferenceMode.INPLACE};

    @Option(names = "--workers", description = "ParallelInference workers (default: ${DEFAULT-VALUE})")
    int workers = 2;

    @Option(names = "--requests", description = "requests per configuration (default: ${DEFAULT-VALUE})")
    int requests = 400;

    @Option(names = "--batch", description = "examples per request (default: ${DEFAULT-VALUE})")
    int batch = 1;

    @Option(names = "--steps", description = "timesteps per example (default: ${DEFAULT-VALUE})")
    int steps = 64;

    @Option(names = "--width", description = "attention width, nOut (default: ${DEFAULT-VALUE})")
    int width = 64;

    public static void main(String[] args) {
        System.exit(new CommandLine(new ParallelInferenceBenchmark()).execute(args));
    }

    @Override
    public Integer call() throws InterruptedException {
        Mla4j.install();
        MultiLayerNetwork net = ScaleSampleNetwork.network(width, 4, 42);
        Nd4j.getRandom().setSeed(3);
        INDArray[] inputs = new INDArray[16];
        for (int i = 0; i < inputs.length; i++) inputs[i] = Nd4j.randn(DataType.FLOAT, batch, ScaleSampleNetwork.N_IN, steps);
        System.out.printf("ParallelInference benchmark: requests of %d x %d steps, width %d, %d workers, %d cores%n%n",
                batch, steps, width, workers, Runtime.getRuntime().availableProcessors());
        System.out.println("engine                           | clients | requests/s | p50 ms | p99 ms");
        System.out.println("---------------------------------+---------+------------+--------+-------");

        run("output(), one thread", 1, inputs, net::output);   // warm-up
        row("output(), one thread", 1, run("output(), one thread", 1, inputs, net::output));
        for (InferenceMode mode : modes) {
            ParallelInference pi = new ParallelInference.Builder(net).inferenceMode(mode).workers(workers)
                    .batchLimit(32).queueLimit(256).build();
            try {
                run(mode.name(), Math.max(clients[0], 1), inputs, pi::output);   // warm-up: replicas built
                for (int c : clients) row("ParallelInference " + mode, c, run(mode.name(), c, inputs, pi::output));
            } finally {
                pi.shutdown();
            }
        }
        return 0;
    }

    /** Request latencies (ns) and the wall time (ns, last element) of {@link #requests} requests from c clients. */
    private long[] run(String name, int c, INDArray[] inputs, Function<INDArray, INDArray> serve) throws InterruptedException {
        long[] latency = new long[requests + 1];
        AtomicInteger next = new AtomicInteger();
        CountDownLatch done = new CountDownLatch(c);
        List<Thread> threads = new ArrayList<>();
        long t0 = System.nanoTime();
        for (int t = 0; t < c; t++) {
            Thread th = new Thread(() -> {
                try {
                    for (int r; (r = next.getAndIncrement()) < requests; ) {
                        long s = System.nanoTime();
                        serve.apply(inputs[r % inputs.length]);
                        latency[r] = System.nanoTime() - s;
                    }
                } finally {
                    done.countDown();
                }
            }, name + "-client-" + t);
            th.start();
            threads.add(th);
        }
        done.await();
        latency[requests] = System.nanoTime() - t0;
        return latency;
    }

    private void row(String engine, int c, long[] latency) {
        long wall = latency[requests];
        long[] sorted = Arrays.copyOf(latency, requests);
        Arrays.sort(sorted);
        System.out.printf("%-32s | %7d | %10.1f | %6.2f | %6.2f%n", engine, c, requests / (wall / 1e9),
                sorted[requests / 2] / 1e6, sorted[(int) Math.ceil(requests * 0.99) - 1] / 1e6);
    }
}
