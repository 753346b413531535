package org.mla4j.spark;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.spark.api.RDDTrainingApproach;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.dataset.DataSet;

/**
 * A network with MlaSelfAttentionLayer trained by dl4j-spark's parameter averaging on a real
 * Spark in local mode with two executor threads ({@code local[2]}): it must reach the
 * held-out loss of the same network trained on one thread on the same minibatches, within a
 * margin (two copies averaged every few steps do not take the single thread's steps).
 */
class SparkLocalTrainingTest {
    private static final int EPOCHS = 4, BATCHES = 24, BATCH = 16, AVERAGING = 2;

    @Test
    void parameterAveragingReachesTheSingleThreadedLoss() {
        MultiLayerConfiguration conf = SparkMlaTraining.network(42);
        List<DataSet> train = SparkMlaTraining.runningMean(BATCHES, BATCH, 11);
        DataSet test = DataSet.merge(SparkMlaTraining.runningMean(8, BATCH, 12));
        double initial = SparkMlaTraining.initialLoss(conf, test);
        long t0 = System.nanoTime();
        double single = SparkMlaTraining.fitLocally(conf, train, EPOCHS).score(test);
        long t1 = System.nanoTime();

        double spark;
        SparkConf sparkConf = new SparkConf().setMaster("local[2]").setAppName("mla4j-test")
                .set("spark.ui.enabled", "false");
        try (JavaSparkContext sc = new JavaSparkContext(sparkConf)) {
            MultiLayerNetwork net = SparkMlaTraining.fitOnSpark(sc, conf, train, EPOCHS, BATCH, AVERAGING,
                    RDDTrainingApproach.Export);
            spark = net.score(test);
        }
        String msg = String.format("initial loss %.4f, one thread %.4f (%.1f s), Spark local[2] %.4f (%.1f s with the "
                + "context)", initial, single, (t1 - t0) / 1e9, spark, (System.nanoTime() - t1) / 1e9);
        System.out.println(msg);
        assertTrue(single < 0.25 * initial, "single-threaded training did not learn the task: " + msg);
        assertTrue(spark < 1.5 * single, "Spark training did not reach the single-threaded loss: " + msg);
    }
}
