package org.mla4j.spark;

import java.util.List;
import java.util.concurrent.Callable;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.spark.api.RDDTrainingApproach;
import org.nd4j.linalg.dataset.DataSet;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Trains a network with an MLA self-attention layer on Spark (dl4j-spark parameter averaging)
 * and, for comparison, the same network on one thread in the driver; prints the held-out
 * losses and times. Run it locally with {@code --master local[2]}, or submit it to a cluster
 * with spark-submit (the master then comes from spark-submit; see the README).
 */
@Command(name = "SparkTrainingExample", mixinStandardHelpOptions = true,
        description = "Train a network with MlaSelfAttentionLayer on Spark and on one thread.")
public final class SparkTrainingExample implements Callable<Integer> {
    @Option(names = "--master", description = "Spark master when not set by spark-submit (default: ${DEFAULT-VALUE})")
    String master = "local[2]";

    @Option(names = "--epochs", description = "passes over the training data (default: ${DEFAULT-VALUE})")
    int epochs = 8;

    @Option(names = "--batches", description = "training minibatches (default: ${DEFAULT-VALUE})")
    int batches = 64;

    @Option(names = "--batch", description = "examples per minibatch, per worker (default: ${DEFAULT-VALUE})")
    int batch = 16;

    @Option(names = "--averaging", description = "minibatches between parameter averagings (default: ${DEFAULT-VALUE})")
    int averaging = 2;

    @Option(names = "--approach", description = "Export (minibatches written to the default Hadoop file system, "
            + "shared by the executors) or Direct (default: ${DEFAULT-VALUE})")
    RDDTrainingApproach approach = RDDTrainingApproach.Export;

    @Option(names = "--skip-local", description = "skip the single-threaded comparison")
    boolean skipLocal;

    public static void main(String[] args) {
        System.exit(new CommandLine(new SparkTrainingExample()).execute(args));
    }

    @Override
    public Integer call() {
        SparkConf sparkConf = new SparkConf().setAppName("mla4j SparkTrainingExample");
        if (!sparkConf.contains("spark.master")) sparkConf.setMaster(master);
        MultiLayerConfiguration conf = SparkMlaTraining.network(42);
        List<DataSet> train = SparkMlaTraining.runningMean(batches, batch, 11);
        DataSet test = DataSet.merge(SparkMlaTraining.runningMean(8, batch, 12));
        System.out.printf("initial held-out loss          %.5f%n", SparkMlaTraining.initialLoss(conf, test));

        try (JavaSparkContext sc = new JavaSparkContext(sparkConf)) {
            long t0 = System.nanoTime();
            MultiLayerNetwork onSpark = SparkMlaTraining.fitOnSpark(sc, conf, train, epochs, batch, averaging, approach);
            double sparkSeconds = (System.nanoTime() - t0) / 1e9;
            System.out.printf("Spark (%s, %d executor slots) %.5f after %d epochs, %.1f s%n", sc.master(),
                    sc.defaultParallelism(), onSpark.score(test), epochs, sparkSeconds);
        }
        if (!skipLocal) {
            long t0 = System.nanoTime();
            MultiLayerNetwork local = SparkMlaTraining.fitLocally(conf, train, epochs);
            System.out.printf("one thread                     %.5f after %d epochs, %.1f s%n", local.score(test), epochs,
                    (System.nanoTime() - t0) / 1e9);
        }
        return 0;
    }
}
