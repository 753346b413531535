package org.mla4j.tests.scale;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.parallelism.ParallelInference;
import org.deeplearning4j.parallelism.inference.InferenceMode;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.mla4j.Mla4j;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * One trained network served to many client threads by DL4J's {@link ParallelInference}, in
 * each of its modes: SEQUENTIAL (worker threads with replicas, one request at a time),
 * BATCHED (requests queued while the workers are busy are stacked into one batch) and
 * INPLACE (the calling threads borrow replicas). Every answer must equal what
 * {@code output()} of the network gives on one thread for the same input: bit for bit when
 * the request runs alone, and to float rounding when BATCHED stacks it with others (the
 * matrix products then run over more rows).
 */
class ParallelInferenceTest {
    /** Relative difference allowed when requests are stacked (float32 products over more rows). */
    private static final double BATCHED_TOLERANCE = 1e-4;
    private static final int CLIENTS = 8, REQUESTS = 25, INPUTS = 12, WORKERS = 3;

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    static Stream<Arguments> layersAndModes() {
        return ScaleNetworks.LAYERS.stream().flatMap(l -> Stream.of(InferenceMode.values()).map(m -> Arguments.of(l, m)));
    }

    @ParameterizedTest(name = "{0}, {1}")
    @MethodSource("layersAndModes")
    void manyClientsGetTheSingleThreadedOutputs(Supplier<Layer> layer, InferenceMode mode) throws InterruptedException {
        MultiLayerNetwork net = ScaleNetworks.network(layer, 7);
        for (var ds : ScaleNetworks.runningMean(8, 16, 5)) net.fit(ds);
        Nd4j.getRandom().setSeed(9);
        INDArray[] inputs = new INDArray[INPUTS];
        INDArray[] expected = new INDArray[INPUTS];
        for (int i = 0; i < INPUTS; i++) {
            inputs[i] = Nd4j.randn(DataType.FLOAT, 2, ScaleNetworks.N_IN, ScaleNetworks.STEPS);
            expected[i] = net.output(inputs[i]).dup();
        }

        ParallelInference pi = new ParallelInference.Builder(net).inferenceMode(mode).workers(WORKERS).batchLimit(8)
                .queueLimit(64).build();
        ConcurrentLinkedQueue<String> failures = new ConcurrentLinkedQueue<>();
        double[] worst = new double[CLIENTS];
        CountDownLatch done = new CountDownLatch(CLIENTS);
        List<Thread> clients = new ArrayList<>();
        try {
            for (int c = 0; c < CLIENTS; c++) {
                int id = c;
                Thread t = new Thread(() -> {
                    try {
                        for (int r = 0; r < REQUESTS; r++) {
                            int i = (id * 5 + r) % INPUTS;
                            INDArray out = pi.output(inputs[i]);
                            double diff = maxRelDiff(out, expected[i]);
                            worst[id] = Math.max(worst[id], diff);
                            if (diff > (mode == InferenceMode.BATCHED ? BATCHED_TOLERANCE : 0.0)) {
                                failures.add("client " + id + " request " + r + " (input " + i + "): max relative difference " + diff);
                            }
                        }
                    } catch (Throwable e) {
                        failures.add("client " + id + ": " + e);
                    } finally {
                        done.countDown();
                    }
                }, "client-" + c);
                t.start();
                clients.add(t);
            }
            assertTrue(done.await(180, java.util.concurrent.TimeUnit.SECONDS), "clients did not finish");
        } finally {
            pi.shutdown();
        }
        double max = 0;
        for (double w : worst) max = Math.max(max, w);
        System.out.println(mode + ": " + CLIENTS * REQUESTS + " requests, worst relative difference to output() " + max);
        assertEquals(0, failures.size(), failures.size() + " wrong answers, first: " + failures.peek());
    }

    /** max |a - e| / max(|e|, 1e-3) over elements; shapes must match. */
    private static double maxRelDiff(INDArray a, INDArray e) {
        if (!java.util.Arrays.equals(a.shape(), e.shape())) return Double.POSITIVE_INFINITY;
        double[] x = a.dup().data().asDouble(), y = e.dup().data().asDouble();
        double m = 0;
        for (int i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]) / Math.max(Math.abs(y[i]), 1e-3));
        return m;
    }
}
