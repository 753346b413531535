package org.mla4j.tests.concurrent;

import java.util.HashMap;
import java.util.Map;
import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.mla4j.ops.RopeConfig;
import org.mla4j.samediff.SDMla;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Inference on ONE SameDiff graph shared by every thread: RoPE and causal attention (mla4j
 * ops) between ND4J's own matrix multiplications, reshapes and activations. ND4J 1.0.0-M2.1
 * runs {@code SameDiff.output} concurrently: each thread gets its own InferenceSession (its
 * own op contexts and arrays), and the graph's op objects are only read. Each thread feeds one
 * of several input sets; the outputs must equal the single-threaded outputs of that set.
 *
 * <p>ND4J 1.0.0-M2.1's InferenceSession remembers the id of every array it ever released
 * ({@code freedArrays}, never cleared): about 64 bytes of heap per intermediate array per
 * {@code output()} call, for as long as the thread's session lives. That growth is ND4J's, in
 * any loop of {@code output()} calls, so this job drops its thread's session every
 * {@value #SESSION_RUNS} runs (the next call makes a new one), and the stress test measures
 * the plugin's own memory.
 */
final class SharedGraphJob implements StressJob {
    static final int SESSION_RUNS = 500;
    private static final int B = 2, S = 20, H = 4, D_QK = 16, D_V = 8, D_MODEL = 12, INPUT_SETS = 4;

    private final SameDiff sd;
    private final Map<String, INDArray>[] inputs;
    private final Map<String, INDArray>[] expected;
    private final ThreadLocal<long[]> runsOnThisThread = ThreadLocal.withInitial(() -> new long[1]);

    @SuppressWarnings("unchecked")
    SharedGraphJob(TestRandom r) {
        sd = build(r);
        inputs = new Map[INPUT_SETS];
        expected = new Map[INPUT_SETS];
        for (int i = 0; i < INPUT_SETS; i++) {
            inputs[i] = new HashMap<>();
            inputs[i].put("x", Nd.floats(r.normal(B * S * D_MODEL, 1.0), B * S, D_MODEL));
            expected[i] = sd.output(inputs[i], "y", "lse");
        }
    }

    private static SameDiff build(TestRandom r) {
        SameDiff sd = SameDiff.create();
        SDMla mla = Mla4j.ops(sd);
        SDVariable x = sd.placeHolder("x", DataType.FLOAT, B * S, D_MODEL);
        SDVariable wq = sd.var("wq", Nd.floats(r.normal(D_MODEL * H * D_QK, 0.3), D_MODEL, H * D_QK));
        SDVariable wk = sd.var("wk", Nd.floats(r.normal(D_MODEL * H * D_QK, 0.3), D_MODEL, H * D_QK));
        SDVariable wv = sd.var("wv", Nd.floats(r.normal(D_MODEL * H * D_V, 0.3), D_MODEL, H * D_V));
        SDVariable wo = sd.var("wo", Nd.floats(r.normal(H * D_V * D_MODEL, 0.3), H * D_V, D_MODEL));
        int[] pos = new int[B * S];
        for (int i = 0; i < pos.length; i++) pos[i] = i % S;
        SDVariable positions = sd.constant("positions", Nd.ints(pos, B, S));
        RopeConfig rope = RopeConfig.interleaved(8, 10000);
        SDVariable q = mla.rope(x.mmul(wq).reshape(B, S, H, D_QK), positions, rope, false);
        SDVariable k = mla.rope(x.mmul(wk).reshape(B, S, H, D_QK), positions, rope, false);
        SDVariable v = x.mmul(wv).reshape(B, S, H, D_V);
        SDVariable[] outLse = mla.attention(q, k, v, null, null, new Attention.Options().causal(true));
        sd.math().tanh("y", outLse[0].reshape(B * S, H * D_V).mmul(wo));
        sd.identity("lse", outLse[1]);
        return sd;
    }

    @Override
    public String name() {
        return "SameDiff output() on a shared graph";
    }

    @Override
    public void run(int iteration) {
        int set = Math.floorMod(iteration, INPUT_SETS);
        Map<String, INDArray> actual = sd.output(inputs[set], "y", "lse");
        if (runsOnThisThread.get()[0]++ % SESSION_RUNS == SESSION_RUNS - 1) {
            sd.getSessions().remove(Thread.currentThread().getId());
        }
        for (String name : expected[set].keySet()) {
            Compare.identical("shared graph " + name, actual.get(name), expected[set].get(name), "input set " + set);
        }
    }
}
