package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Path;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.GlobalPoolingLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.PoolingType;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.mla4j.Mla4j;
import org.mla4j.layers.dl4j.MlaSelfAttentionLayer;
import org.mla4j.tests.support.Compare;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.MultiDataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * Networks holding {@link MlaSelfAttentionLayer} in float32: saved and restored with
 * ModelSerializer (MultiLayerNetwork and ComputationGraph, with updater state) they give
 * bit-identical outputs and keep training identically; fit() lowers the loss of a small
 * synthetic task that needs attention over time.
 */
class LayerMlaModelTest {
    private static final int N_IN = 6, STEPS = 8, BATCH = 16;

    @BeforeAll
    static void setUp() {
        Mla4j.install();
    }

    private static MlaSelfAttentionLayer.Builder mla(boolean causal) {
        return new MlaSelfAttentionLayer.Builder().nOut(8).heads(2).qLora(8).kvLora(8).qkNope(4).qkRope(4)
                .vHead(4).causal(causal);
    }

    private static MultiLayerNetwork mln(long seed) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().dataType(DataType.FLOAT).seed(seed)
                .updater(new Adam(1e-2))
                .list()
                .layer(mla(true).build())
                .layer(new RnnOutputLayer.Builder(LossFunction.MSE).activation(Activation.IDENTITY).nOut(1).build())
                .setInputType(InputType.recurrent(N_IN))
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /**
     * Inputs [BATCH, N_IN, STEPS]; target at t: the mean of feature 0 over steps 0..t (a running
     * average, which causal attention with uniform weights computes exactly).
     */
    private static DataSet runningMean(long seed) {
        Nd4j.getRandom().setSeed(seed);
        INDArray x = Nd4j.randn(DataType.FLOAT, BATCH, N_IN, STEPS);
        INDArray y = Nd4j.zeros(DataType.FLOAT, BATCH, 1, STEPS);
        for (int b = 0; b < BATCH; b++) {
            double sum = 0;
            for (int t = 0; t < STEPS; t++) {
                sum += x.getDouble(b, 0, t);
                y.putScalar(b, 0, t, sum / (t + 1));
            }
        }
        return new DataSet(x, y);
    }

    private static INDArray mask() {
        INDArray m = Nd4j.ones(DataType.FLOAT, BATCH, STEPS);
        for (int b = 0; b < BATCH; b += 2) {
            m.get(NDArrayIndex.point(b), NDArrayIndex.interval(STEPS - 1 - b % 4, STEPS)).assign(0);
        }
        return m;
    }

    @Test
    void fitLowersTheLossOfARunningMeanTask() {
        MultiLayerNetwork net = mln(11);
        DataSet train = runningMean(1);
        double before = net.score(train);
        for (int i = 0; i < 80; i++) net.fit(train);
        double after = net.score(train);
        System.out.printf("MlaSelfAttentionLayer fit: MSE %.4f -> %.4f after 80 steps%n", before, after);
        assertTrue(after < 0.3 * before, "loss " + before + " -> " + after);
    }

    @Test
    void multiLayerNetworkSurvivesModelSerializer(@TempDir Path dir) throws Exception {
        MultiLayerNetwork net = mln(12);
        DataSet train = runningMean(2);
        train.setFeaturesMaskArray(mask());
        train.setLabelsMaskArray(mask());
        for (int i = 0; i < 3; i++) net.fit(train);  // non-trivial weights and Adam state

        File file = dir.resolve("mla-mln.zip").toFile();
        ModelSerializer.writeModel(net, file, true);
        MultiLayerNetwork back = ModelSerializer.restoreMultiLayerNetwork(file, true);

        assertEquals(net.getLayerWiseConfigurations(), back.getLayerWiseConfigurations());
        Compare.identical("params", back.params(), net.params(), "restored MultiLayerNetwork");
        INDArray x = runningMean(3).getFeatures();
        Compare.identical("output", back.output(x), net.output(x), "restored MultiLayerNetwork");
        Compare.identical("masked output", back.output(x, false, mask(), null), net.output(x, false, mask(), null),
                "restored MultiLayerNetwork");
        // The updater state came back too: one more identical step gives identical parameters.
        net.fit(train);
        back.fit(train);
        Compare.identical("params after one more step", back.params(), net.params(), "restored MultiLayerNetwork");
    }

    @Test
    void computationGraphSurvivesModelSerializer(@TempDir Path dir) throws Exception {
        ComputationGraphConfiguration conf = new NeuralNetConfiguration.Builder().dataType(DataType.FLOAT).seed(13)
                .updater(new Adam(1e-2))
                .graphBuilder()
                .addInputs("in")
                .addLayer("mla", mla(false).build(), "in")
                .addLayer("pool", new GlobalPoolingLayer.Builder(PoolingType.AVG).build(), "mla")
                .addLayer("out", new OutputLayer.Builder(LossFunction.MSE).activation(Activation.IDENTITY).nOut(1).build(), "pool")
                .setOutputs("out")
                .setInputTypes(InputType.recurrent(N_IN))
                .build();
        ComputationGraph graph = new ComputationGraph(conf);
        graph.init();
        DataSet ds = runningMean(4);
        INDArray y = ds.getLabels().get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.point(STEPS - 1)).dup();
        MultiDataSet train = new MultiDataSet(new INDArray[] {ds.getFeatures()}, new INDArray[] {y},
                new INDArray[] {mask()}, null);
        for (int i = 0; i < 3; i++) graph.fit(train);

        File file = dir.resolve("mla-graph.zip").toFile();
        ModelSerializer.writeModel(graph, file, true);
        ComputationGraph back = ModelSerializer.restoreComputationGraph(file, true);

        assertEquals(graph.getConfiguration(), back.getConfiguration());
        Compare.identical("params", back.params(), graph.params(), "restored ComputationGraph");
        INDArray x = runningMean(5).getFeatures();
        Compare.identical("output", back.output(false, x)[0], graph.output(false, x)[0], "restored ComputationGraph");
        Compare.identical("masked output", back.output(false, new INDArray[] {x}, new INDArray[] {mask()})[0],
                graph.output(false, new INDArray[] {x}, new INDArray[] {mask()})[0], "restored ComputationGraph");
        graph.fit(train);
        back.fit(train);
        Compare.identical("params after one more step", back.params(), graph.params(), "restored ComputationGraph");
    }
}
