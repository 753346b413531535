package org.mla4j.tests;

import java.util.Map;
import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Runs one forward and backward pass of causal attention over a sequence of {@code args[0]}
 * tokens and prints "ok <loss>". {@link LongSequenceTrainingTest} starts it in a JVM whose
 * heap and off-heap limits are smaller than one s x s float matrix.
 */
public final class LongSequenceStep {
    public static void main(String[] args) {
        int s = Integer.parseInt(args[0]);
        Mla4j.install();
        SameDiff sd = SameDiff.create();
        Nd4j.getRandom().setSeed(3);
        SDVariable q = sd.var("q", Nd4j.randn(DataType.FLOAT, 1, s, 1, 16).muli(0.5));
        SDVariable k = sd.var("k", Nd4j.randn(DataType.FLOAT, 1, s, 1, 16).muli(0.5));
        SDVariable v = sd.var("v", Nd4j.randn(DataType.FLOAT, 1, s, 1, 16));
        SDVariable out = Mla4j.ops(sd).attention(q, k, v, null, null, new Attention.Options().causal(true))[0];
        out.mul(out).mean().rename("loss");
        sd.setLossVariables("loss");
        Map<String, org.nd4j.linalg.api.ndarray.INDArray> g = sd.calculateGradients(Map.of(), "q", "k", "v");
        double norm = g.get("q").norm2Number().doubleValue() + g.get("k").norm2Number().doubleValue()
                + g.get("v").norm2Number().doubleValue();
        if (!Double.isFinite(norm) || norm == 0) throw new IllegalStateException("bad gradients: " + norm);
        System.out.println("ok " + sd.output(Map.of(), "loss").get("loss").getDouble(0));
    }
}
