package org.mla4j.tests.scale;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Named;
import org.mla4j.layers.dl4j.MlaSelfAttentionLayer;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * The networks and data of the scaling tests (ParallelWrapper, ParallelInference): a causal
 * attention layer under test followed by a per-timestep output layer, on a task that needs
 * attention over time. Every attention layer type in {@link #LAYERS} runs through every
 * scaling test: adding a layer type is one line there.
 */
final class ScaleNetworks {
    static final int N_IN = 6, STEPS = 10, WIDTH = 16;

    private ScaleNetworks() {}

    /** The attention layers under test, each taking N_IN features to WIDTH, causal. */
    static final List<Named<Supplier<Layer>>> LAYERS = List.of(
            Named.of("MlaSelfAttentionLayer", () -> new MlaSelfAttentionLayer.Builder().nOut(WIDTH).heads(2)
                    .qLora(8).kvLora(8).qkNope(4).qkRope(4).vHead(8).causal(true).build()));

    /** {@link #LAYERS} as arguments of a parameterized test (named by layer type). */
    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> layerArguments() {
        return LAYERS.stream().map(org.junit.jupiter.params.provider.Arguments::of);
    }

    /** A network of {@code attention} then an MSE output per timestep, seeded. */
    static MultiLayerNetwork network(Supplier<Layer> attention, long seed) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().dataType(DataType.FLOAT).seed(seed)
                .updater(new Adam(5e-3))
                .list()
                .layer(attention.get())
                .layer(new RnnOutputLayer.Builder(LossFunction.MSE).activation(Activation.IDENTITY).nIn(WIDTH).nOut(1).build())
                .setInputType(InputType.recurrent(N_IN))
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /**
     * Minibatches of inputs [batch, N_IN, STEPS] (standard normal) whose target at step t is
     * the mean of features 0 and 1 over steps 0..t: uniform causal attention computes it, and a
     * layer without access to earlier steps cannot.
     */
    static List<DataSet> runningMean(int batches, int batch, long seed) {
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

    /** All minibatches as one data set. */
    static DataSet merged(List<DataSet> batches) {
        return DataSet.merge(batches);
    }
}
