package org.mla4j.tests.scale;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.deeplearning4j.datasets.iterator.utilty.ListDataSetIterator;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.parallelism.ParallelWrapper;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Named;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.mla4j.Mla4j;
import org.nd4j.linalg.dataset.DataSet;

/**
 * Data-parallel training on one host with DL4J's {@link ParallelWrapper}: each worker thread
 * trains a replica of the network (built from its JSON, so the attention layer is
 * re-instantiated per worker) on its share of the minibatches, and the replicas' parameters
 * and updater states are averaged. Starting from the same initial parameters, the averaged
 * network must reach the held-out loss of the same network trained on one thread on the same
 * minibatches, within a margin (averaging two workers' steps is not the same sequence of
 * updates as one thread's).
 */
class ParallelWrapperTest {
    private static final int EPOCHS = 6, BATCHES = 32, BATCH = 16;

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    static Stream<Arguments> layersAndModes() {
        return ScaleNetworks.LAYERS.stream().flatMap(l -> Stream.of(
                Arguments.of(l, Named.of("averaging every step", ParallelWrapper.TrainingMode.AVERAGING)),
                Arguments.of(l, Named.of("shared gradients", ParallelWrapper.TrainingMode.SHARED_GRADIENTS))));
    }

    @ParameterizedTest(name = "{0}, {1}")
    @MethodSource("layersAndModes")
    void parallelTrainingReachesTheSingleThreadedLoss(Supplier<Layer> layer, ParallelWrapper.TrainingMode mode)
            throws Exception {
        List<DataSet> train = ScaleNetworks.runningMean(BATCHES, BATCH, 11);
        DataSet test = ScaleNetworks.merged(ScaleNetworks.runningMean(8, BATCH, 12));

        MultiLayerNetwork single = ScaleNetworks.network(layer, 42);
        double initial = single.score(test);
        for (int e = 0; e < EPOCHS; e++) single.fit(new ListDataSetIterator<>(train, BATCH));
        double singleLoss = single.score(test);

        MultiLayerNetwork parallel = ScaleNetworks.network(layer, 42);
        try (ParallelWrapper pw = new ParallelWrapper.Builder<>(parallel).workers(2).prefetchBuffer(4)
                .averagingFrequency(1).trainingMode(mode).build()) {
            for (int e = 0; e < EPOCHS; e++) pw.fit(new ListDataSetIterator<>(train, BATCH));
        }
        double parallelLoss = parallel.score(test);

        String msg = String.format("%s: initial loss %.4f, single thread %.4f, ParallelWrapper %.4f", mode, initial,
                singleLoss, parallelLoss);
        System.out.println(msg);
        assertTrue(singleLoss < 0.25 * initial, "single-threaded training did not learn the task: " + msg);
        assertTrue(parallelLoss < 1.5 * singleLoss, "ParallelWrapper did not reach the single-threaded loss: " + msg);
    }
}
