package org.mla4j.samples;

import java.util.ArrayList;
import java.util.List;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.mla4j.layers.dl4j.MlaSelfAttentionLayer;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * The network and data of the scaling samples: causal MLA self-attention (width {@code width},
 * {@code heads} heads) then an MSE output per timestep, on a running-mean task that needs
 * attention over time.
 */
final class ScaleSampleNetwork {
    static final int N_IN = 6;

    private ScaleSampleNetwork() {}

    static MultiLayerNetwork network(int width, int heads, long seed) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().dataType(DataType.FLOAT).seed(seed)
                .updater(new Adam(5e-3))
                .list()
                .layer(new MlaSelfAttentionLayer.Builder().nOut(width).heads(heads).qLora(width / 2).kvLora(width / 2)
                        .qkNope(width / heads).qkRope(8).vHead(width / heads).causal(true).build())
                .layer(new RnnOutputLayer.Builder(LossFunction.MSE).activation(Activation.IDENTITY).nIn(width).nOut(1).build())
                .setInputType(InputType.recurrent(N_IN))
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /** Minibatches [batch, N_IN, steps]; target at t: mean of features 0 and 1 over steps 0..t. */
    static List<DataSet> runningMean(int batches, int batch, int steps, long seed) {
        Nd4j.getRandom().setSeed(seed);
        List<DataSet> list = new ArrayList<>();
        for (int i = 0; i < batches; i++) {
            INDArray x = Nd4j.randn(DataType.FLOAT, batch, N_IN, steps);
            INDArray y = Nd4j.zeros(DataType.FLOAT, batch, 1, steps);
            for (int b = 0; b < batch; b++) {
                double sum = 0;
                for (int t = 0; t < steps; t++) {
                    sum += x.getDouble(b, 0, t) + x.getDouble(b, 1, t);
                    y.putScalar(b, 0, t, sum / (t + 1));
                }
            }
            list.add(new DataSet(x, y));
        }
        return list;
    }
}
