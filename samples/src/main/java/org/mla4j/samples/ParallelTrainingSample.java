package org.mla4j.samples;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.Callable;
import org.deeplearning4j.datasets.iterator.utilty.ListDataSetIterator;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.parallelism.ParallelWrapper;
import org.mla4j.Mla4j;
import org.nd4j.linalg.dataset.DataSet;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Trains a network with {@code MlaSelfAttentionLayer} on one thread, then the same network
 * from the same initial parameters with DL4J's {@link ParallelWrapper} (data-parallel worker
 * threads on this host, parameters averaged), and prints each run's time, examples per second,
 * held-out loss and the speed-up over the faster of the two single-threaded runs (on the main
 * thread and on a thread of its own: ND4J treats them differently). See the README's
 * "Scaling out" for figures.
 */
@Command(name = "ParallelTrainingSample", mixinStandardHelpOptions = true,
        description = "One thread against ParallelWrapper on a network with MLA self-attention.")
public final class ParallelTrainingSample implements Callable<Integer> {
    @Option(names = "--workers", split = ",", description = "ParallelWrapper workers to try (default: ${DEFAULT-VALUE})")
    int[] workers = {2};

    @Option(names = "--mode", description = "AVERAGING or SHARED_GRADIENTS (default: ${DEFAULT-VALUE})")
    ParallelWrapper.TrainingMode mode = ParallelWrapper.TrainingMode.AVERAGING;

    @Option(names = "--epochs", description = "passes over the data (default: ${DEFAULT-VALUE})")
    int epochs = 6;

    @Option(names = "--batches", description = "minibatches per epoch (default: ${DEFAULT-VALUE})")
    int batches = 48;

    @Option(names = "--batch", description = "examples per minibatch (default: ${DEFAULT-VALUE})")
    int batch = 16;

    @Option(names = "--steps", description = "timesteps per example (default: ${DEFAULT-VALUE})")
    int steps = 32;

    @Option(names = "--width", description = "attention width, nOut (default: ${DEFAULT-VALUE})")
    int width = 64;

    public static void main(String[] args) {
        System.exit(new CommandLine(new ParallelTrainingSample()).execute(args));
    }

    @Override
    public Integer call() throws Exception {
        Mla4j.install();
        List<DataSet> train = ScaleSampleNetwork.runningMean(batches, batch, steps, 11);
        DataSet test = DataSet.merge(ScaleSampleNetwork.runningMean(8, batch, steps, 12));
        long examples = (long) epochs * batches * batch;
        System.out.printf("ParallelWrapper sample: %d epochs x %d minibatches of %d x %d steps, width %d, %d cores%n",
                epochs, batches, batch, steps, width, Runtime.getRuntime().availableProcessors());
        System.out.printf("initial held-out loss %.4f%n%n", ScaleSampleNetwork.network(width, 4, 42).score(test));
        // One thread, twice: on this (main) thread, which started ND4J, and on a thread of its
        // own. ND4J 1.0.0-M2.1 spreads the ops of the first over its OpenMP threads and runs
        // those of other threads on the calling thread; which is faster depends on the shapes
        // and on how busy the cores are.
        List<Run> runs = Collections.synchronizedList(new ArrayList<>());
        runs.add(fitOnce(train, test, "fit() on the main thread"));
        Thread t = new Thread(() -> runs.add(fitOnce(train, test, "fit() on another thread")));
        t.start();
        t.join();
        double single = Math.min(runs.get(0).seconds(), runs.get(1).seconds());
        for (int w : workers) {
            MultiLayerNetwork net = ScaleSampleNetwork.network(width, 4, 42);
            long t0 = System.nanoTime();
            try (ParallelWrapper pw = new ParallelWrapper.Builder<>(net).workers(w).prefetchBuffer(2 * w)
                    .averagingFrequency(1).trainingMode(mode).build()) {
                for (int e = 0; e < epochs; e++) pw.fit(new ListDataSetIterator<>(train, 1));
            }
            runs.add(new Run("ParallelWrapper, " + w + " workers", (System.nanoTime() - t0) / 1e9, net.score(test)));
        }
        System.out.println("engine                        | time s | examples/s | held-out loss | speed-up over the faster single thread");
        System.out.println("------------------------------+--------+------------+---------------+---------");
        for (Run r : runs) {
            System.out.printf("%-29s | %6.1f | %10.0f | %13.4f | %7.2fx%n", r.engine(), r.seconds(), examples / r.seconds(),
                    r.loss(), single / r.seconds());
        }
        return 0;
    }

    private record Run(String engine, double seconds, double loss) {}

    /** Trains a fresh network on the calling thread. */
    private Run fitOnce(List<DataSet> train, DataSet test, String engine) {
        MultiLayerNetwork net = ScaleSampleNetwork.network(width, 4, 42);
        long t0 = System.nanoTime();
        for (int e = 0; e < epochs; e++) net.fit(new ListDataSetIterator<>(train, 1));
        return new Run(engine, (System.nanoTime() - t0) / 1e9, net.score(test));
    }
}
