package org.mla4j.spark;

import java.util.ArrayList;
import java.util.List;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.spark.api.RDDTrainingApproach;
import org.deeplearning4j.spark.impl.multilayer.SparkDl4jMultiLayer;
import org.deeplearning4j.spark.impl.paramavg.ParameterAveragingTrainingMaster;
import org.mla4j.layers.dl4j.MlaSelfAttentionLayer;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * A network with {@link MlaSelfAttentionLayer} trained on Spark with dl4j-spark's parameter
 * averaging, and the same network trained on one thread for comparison: the pieces of
 * {@link SparkTrainingExample} and its tests.
 *
 * <p>Nothing here is Spark-specific about the layer: dl4j-spark ships the network's
 * configuration (its JSON form) and parameters to the executors, each executor builds the
 * network from them, and the layer calls {@link org.mla4j.Mla4j#install()} as the network
 * instantiates it, so executor JVMs need no setup of their own.
 */
public final class SparkMlaTraining {
    /** Input features, timesteps and the attention layer's width. */
    public static final int N_IN = 6, STEPS = 10, WIDTH = 16;

    private SparkMlaTraining() {}

    /** MLA self-attention (causal) then an MSE output per timestep. */
    public static MultiLayerConfiguration network(long seed) {
        return new NeuralNetConfiguration.Builder().dataType(DataType.FLOAT).seed(seed)
                .updater(new Adam(5e-3))
                .list()
                .layer(new MlaSelfAttentionLayer.Builder().nOut(WIDTH).heads(2).qLora(8).kvLora(8).qkNope(4).qkRope(4)
                        .vHead(8).causal(true).build())
                .layer(new RnnOutputLayer.Builder(LossFunction.MSE).activation(Activation.IDENTITY).nIn(WIDTH).nOut(1).build())
                .setInputType(InputType.recurrent(N_IN))
                .build();
    }

    /**
     * Minibatches of inputs [batch, N_IN, STEPS] (standard normal) whose target at step t is
     * the mean of features 0 and 1 over steps 0..t: a task that needs attention over time.
     */
    public static List<DataSet> runningMean(int batches, int batch, long seed) {
        Nd4j.getRandom().setSeed(seed);
        List<DataSet> list = new ArrayList<>();
        for (int i = 0; i < batches; i++) {
            INDArray x = Nd4j.randn(DataType.FLOAT, batch, N_IN, STEPS);
            INDArray y = Nd4j.zeros(DataType.FLOAT, batch, 1, STEPS);
            for (int b = 0; b < batch; b++) {
                double sum = 0;
                for (int t = 0; t < STEPS; t++) {
                    sum += x.getDouble(b, 0, t) + x.getDouble(b, 1, t);
                    y.putScalar(b, 0, t, sum / (t + 1));
                }
            }
            list.add(new DataSet(x, y));
        }
        return list;
    }

    /**
     * Parameter averaging: each executor task fits {@code averagingFrequency} minibatches of
     * {@code batchPerWorker} examples on its copy of the network, then the driver averages the
     * copies' parameters and updater states. {@code approach}: {@code Export} (DL4J's default)
     * writes the minibatches to the default Hadoop file system first, which on a cluster must
     * be one all executors share (HDFS, S3); {@code Direct} ships them inside the RDD.
     */
    public static ParameterAveragingTrainingMaster trainingMaster(int batchPerWorker, int averagingFrequency,
                                                                  RDDTrainingApproach approach) {
        return new ParameterAveragingTrainingMaster.Builder(batchPerWorker)
                .batchSizePerWorker(batchPerWorker)
                .averagingFrequency(averagingFrequency)
                .workerPrefetchNumBatches(0)
                .saveUpdater(true)
                .rddTrainingApproach(approach)
                .rngSeed(12345)
                .build();
    }

    /** Trains {@code epochs} passes over {@code train} on the cluster; returns the driver's copy. */
    public static MultiLayerNetwork fitOnSpark(JavaSparkContext sc, MultiLayerConfiguration conf, List<DataSet> train,
                                               int epochs, int batchPerWorker, int averagingFrequency,
                                               RDDTrainingApproach approach) {
        JavaRDD<DataSet> rdd = sc.parallelize(train, sc.defaultParallelism());
        SparkDl4jMultiLayer sparkNet = new SparkDl4jMultiLayer(sc, conf,
                trainingMaster(batchPerWorker, averagingFrequency, approach));
        for (int e = 0; e < epochs; e++) sparkNet.fit(rdd);
        return sparkNet.getNetwork();
    }

    /** The same passes on one thread, minibatch by minibatch. */
    public static MultiLayerNetwork fitLocally(MultiLayerConfiguration conf, List<DataSet> train, int epochs) {
        MultiLayerNetwork net = new MultiLayerNetwork(conf.clone());
        net.init();
        for (int e = 0; e < epochs; e++) {
            for (DataSet ds : train) net.fit(ds);
        }
        return net;
    }

    /** Loss of a fresh, untrained network of {@code conf} on {@code test}. */
    public static double initialLoss(MultiLayerConfiguration conf, DataSet test) {
        MultiLayerNetwork net = new MultiLayerNetwork(conf.clone());
        net.init();
        return net.score(test);
    }
}
