package org.mla4j.tests.support;

import java.util.ArrayList;
import java.util.List;
import org.mla4j.ops.Attention;
import org.mla4j.ops.RopeConfig;
import org.mla4j.tests.reference.Ref;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One random dense-attention problem: its ND4J inputs, the op that computes it and the
 * reference description of the same values. Fields are set by the test, then {@link #build}.
 */
public final class AttentionSetup {
    public DataType type = DataType.FLOAT;
    public int b = 1, sQ = 4, sK = 4, hQ = 2, hKv = 1, dQk = 16, dV = 16;
    /** Variable length: sequence lengths (null: batched). */
    public int[] lensQ, lensK;
    public boolean causal;
    public int window;
    /** Value = first dV dims of k (no v input). */
    public boolean alias;
    public Problems.Sink sink = Problems.Sink.NONE;
    /** VVPA rotation dims (0: none). */
    public int ropeDim;

    // built
    public INDArray q, k, v, cuQ, cuK, sinkArr, positions;
    public Attention.Options options;
    public Ref.Attention ref;
    public String ctx;

    public AttentionSetup build(TestRandom r) {
        boolean varlen = lensQ != null;
        int[] cq = varlen ? cumulative(lensQ) : Ref.Attention.uniform(b, sQ);
        int[] ck = varlen ? cumulative(lensK) : Ref.Attention.uniform(b, sK);
        int totalQ = cq[cq.length - 1], totalK = ck[ck.length - 1];
        long[] qShape = varlen ? Nd.longs(totalQ, hQ, dQk) : Nd.longs(b, sQ, hQ, dQk);
        long[] kShape = varlen ? Nd.longs(totalK, hKv, dQk) : Nd.longs(b, sK, hKv, dQk);
        long[] vShape = varlen ? Nd.longs(totalK, hKv, dV) : Nd.longs(b, sK, hKv, dV);
        q = Nd.array(r.normal(totalQ * hQ * dQk), type, qShape);
        k = Nd.array(r.normal(totalK * hKv * dQk), type, kShape);
        v = alias ? null : Nd.array(r.normal(totalK * hKv * dV), type, vShape);
        cuQ = varlen ? Nd.ints(cq, cq.length) : null;
        cuK = varlen ? Nd.ints(ck, ck.length) : null;
        double[] s = Problems.sink(r, sink, hQ);
        sinkArr = s == null ? null : Nd.floats(s, hQ);
        RopeConfig rope = ropeDim > 0 ? Problems.rope(r, ropeDim) : null;
        int[] pos = ropeDim > 0 ? Problems.positions(r, totalQ, 100000) : null;
        positions = pos == null ? null : varlen ? Nd.ints(pos, totalQ) : Nd.ints(pos, b, sQ);
        double scale = Problems.defaultScale(dQk) * (1 + r.nextDouble());
        options = new Attention.Options().causal(causal).window(window).softmaxScale(scale);
        if (alias) options.valueFromKey(dV);
        if (rope != null) options.rope(rope);

        ref = new Ref.Attention();
        ref.hQ = hQ;
        ref.hKv = hKv;
        ref.dQk = dQk;
        ref.dV = dV;
        ref.cuQ = cq;
        ref.cuK = ck;
        ref.q = Nd.values(q);
        ref.k = Nd.values(k);
        ref.v = alias ? null : Nd.values(v);
        ref.scale = (float) scale;
        ref.causal = causal;
        ref.window = window;
        ref.sink = Problems.asFloat(s);
        ref.positions = pos;
        ref.rope = rope;
        ctx = describe() + (rope != null ? " " + rope : "") + "; " + r.tag();
        return this;
    }

    private static int[] cumulative(int[] lens) {
        int[] cu = new int[lens.length + 1];
        for (int i = 0; i < lens.length; i++) cu[i + 1] = cu[i] + lens[i];
        return cu;
    }

    public boolean varlen() {
        return lensQ != null;
    }

    public String describe() {
        return "attention " + type + (varlen() ? " varlen q" + java.util.Arrays.toString(lensQ) + " k"
                + java.util.Arrays.toString(lensK) : " b=" + b + " s_q=" + sQ + " s_k=" + sK)
                + " h_q=" + hQ + " h_kv=" + hKv + " d=" + dQk + "/" + dV + (causal ? " causal" : "")
                + (window > 0 ? " window=" + window : "") + (alias ? " v=k" : "") + " sink=" + sink
                + (ropeDim > 0 ? " vvpa=" + ropeDim : "");
    }

    /** The forward op on the given inputs (any of them may be replaced by a view of the same values). */
    public Attention op(INDArray q, INDArray k, INDArray v) {
        return new Attention(q, k, v, cuQ, cuK, sinkArr, positions, options);
    }

    public Attention op() {
        return op(q, k, v);
    }

    /** Inputs of the forward in the op's order. */
    public INDArray[] inputs() {
        List<INDArray> l = new ArrayList<>();
        for (INDArray a : new INDArray[] {q, k, v, cuQ, cuK, sinkArr, positions}) if (a != null) l.add(a);
        return l.toArray(new INDArray[0]);
    }

    public long[] outShape() {
        return varlen() ? Nd.longs(ref.totalQ(), hQ, dV) : Nd.longs(b, sQ, hQ, dV);
    }

    public long[] lseShape() {
        return varlen() ? Nd.longs(hQ, ref.totalQ()) : Nd.longs(b, hQ, sQ);
    }

    /** The reference lse in the op's layout. */
    public double[] refLse(Ref.Result res) {
        return varlen() ? res.lse : Ref.batchedLse(res.lse, b, hQ, sQ);
    }
}
