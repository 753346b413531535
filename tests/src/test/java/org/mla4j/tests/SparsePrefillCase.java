package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import org.mla4j.ops.RopeConfig;
import org.mla4j.ops.SparsePrefill;
import org.mla4j.ops.SparsePrefillBp;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems;
import org.mla4j.tests.support.Problems.Sink;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * One sparse-prefill problem (ops.md section 3), forward and backward checked against the
 * float64 reference: fields set by a test, then {@link #build}. kv rows that no counted index
 * selects hold NaN. Runs wherever the placement switch sends the ops (the backward has no CUDA
 * kernel and always runs on the CPU).
 */
public final class SparsePrefillCase {
    public DataType type = DataType.FLOAT;
    public int sQ = 5, sKv = 30, hQ = 4, hKv = 1, dQk = 24, dV = 16, topk = 13;
    public boolean topkLength;
    public double invalid = 0.2;
    public Sink sink = Sink.NONE;
    public int ropeDim;
    /** NaN in the kv rows no query selects (off for finite differences). */
    public boolean garbage = true;

    public INDArray q, kv, indices, lengths, sinkArr, positions;
    public double scale;
    public RopeConfig rope;
    public Ref.SparsePrefill ref;
    public String ctx;

    /** Draws the inputs and the reference problem. */
    public SparsePrefillCase build(TestRandom r) {
        int[] idx = new int[sQ * hKv * topk];
        for (int row = 0; row < sQ * hKv; row++) {
            int[] pick = r.distinct(sKv, Math.min(sKv, topk));
            for (int e = 0; e < topk; e++) {
                int v = e < pick.length ? pick[e] : -1;
                if (r.nextDouble() < invalid) v = r.nextBoolean() ? -1 - r.nextInt(3) : sKv + r.nextInt(20);
                idx[row * topk + e] = v;
            }
        }
        int[] len = null;
        if (topkLength) {
            len = new int[sQ];
            for (int i = 0; i < sQ; i++) len[i] = i == 0 ? 0 : r.between(0, topk + 2);
        }
        double[] kvValues = r.normal(sKv * hKv * dQk);
        if (garbage) {
            boolean[] used = new boolean[sKv];
            for (int i = 0; i < sQ; i++)
                for (int g = 0; g < hKv; g++) {
                    int count = len == null ? topk : Math.max(0, Math.min(topk, len[i]));
                    for (int e = 0; e < count; e++) {
                        int v = idx[(i * hKv + g) * topk + e];
                        if (v >= 0 && v < sKv) used[v] = true;
                    }
                }
            for (int row = 0; row < sKv; row++) {
                if (used[row]) continue;
                for (int c = 0; c < hKv * dQk; c++) kvValues[row * hKv * dQk + c] = Double.NaN;
            }
        }
        q = Nd.array(r.normal(sQ * hQ * dQk), type, sQ, hQ, dQk);
        kv = Nd.array(kvValues, type, sKv, hKv, dQk);
        indices = Nd.ints(idx, sQ, hKv, topk);
        lengths = len == null ? null : Nd.ints(len, sQ);
        double[] s = Problems.sink(r, sink, hQ);
        sinkArr = s == null ? null : Nd.floats(s, hQ);
        rope = ropeDim > 0 ? Problems.rope(r, ropeDim) : null;
        int[] pos = ropeDim > 0 ? Problems.positions(r, sQ, 50000) : null;
        positions = pos == null ? null : Nd.ints(pos, sQ);
        scale = Problems.defaultScale(dQk) * (0.5 + r.nextDouble());

        ref = new Ref.SparsePrefill();
        ref.sQ = sQ;
        ref.sKv = sKv;
        ref.hQ = hQ;
        ref.hKv = hKv;
        ref.dQk = dQk;
        ref.dV = dV;
        ref.topk = topk;
        ref.q = Nd.values(q);
        ref.kv = Nd.values(kv);
        ref.indices = idx;
        ref.topkLength = len;
        ref.scale = (float) scale;
        ref.sink = Problems.asFloat(s);
        ref.positions = pos;
        ref.rope = rope;
        ctx = "sparse prefill " + type + " s_q=" + sQ + " s_kv=" + sKv + " h_q=" + hQ + " h_kv=" + hKv + " d=" + dQk + "/"
                + dV + " topk=" + topk + (topkLength ? " lengths" : "") + " invalid=" + invalid + " sink=" + sink
                + (rope != null ? " vvpa " + rope : "") + "; " + r.tag();
        return this;
    }

    /** The eager forward op on the built inputs. */
    public SparsePrefill op() {
        return new SparsePrefill(q, kv, indices, lengths, sinkArr, positions, dV, scale, rope);
    }

    /** The forward inputs, optional ones left out when absent. */
    public INDArray[] inputs() {
        List<INDArray> l = new ArrayList<>();
        for (INDArray a : new INDArray[] {q, kv, indices, lengths, sinkArr, positions}) if (a != null) l.add(a);
        return l.toArray(new INDArray[0]);
    }

    /** Runs the forward into NaN-poisoned outputs, compares with the reference; [out, maxLogit, lse]. */
    public INDArray[] forward() {
        INDArray out = Nd.nanFilled(type, sQ, hQ, dV);
        INDArray maxLogit = Nd.nanFilled(DataType.FLOAT, sQ, hQ);
        INDArray lse = Nd.nanFilled(DataType.FLOAT, sQ, hQ);
        SparsePrefill op = op();
        op.addOutputArgument(out, maxLogit, lse);
        Nd4j.exec(op);
        Ref.Result want = Ref.sparsePrefill(ref);
        Compare.output("out", out, want.out, Compare.tolerance(type), ctx);
        Compare.closeAbs("max_logit", maxLogit, want.maxLogit, Compare.LSE_TOL, ctx);
        Compare.closeAbs("lse", lse, want.lse, Compare.LSE_TOL, ctx);
        return new INDArray[] {out, maxLogit, lse};
    }

    /** The op's gradients (dq, dkv, [dsink]) for dOut, outputs poisoned first. */
    public INDArray[] backward(INDArray[] fwd, double[] dOut) {
        List<INDArray> in = new ArrayList<>(List.of(inputs()));
        in.add(fwd[0]);
        in.add(fwd[2]);
        in.add(Nd.array(dOut, type, sQ, hQ, dV));
        SparsePrefillBp bp = new SparsePrefillBp(in.toArray(new INDArray[0]), op());
        List<INDArray> outs = new ArrayList<>(List.of(Nd.nanFilled(type, q.shape()), Nd.nanFilled(type, kv.shape())));
        if (sinkArr != null) outs.add(Nd.nanFilled(DataType.FLOAT, hQ));
        bp.addOutputArgument(outs.toArray(new INDArray[0]));
        assertEquals(outs.size(), Nd4j.exec(bp).length, ctx);
        return outs.toArray(new INDArray[0]);
    }

    /** Forward and backward against the reference. */
    public void checkBoth(TestRandom r) {
        INDArray[] fwd = forward();
        double[] dOut = Nd.roundTo(r.normal(sQ * hQ * dV), type);
        INDArray[] g = backward(fwd, dOut);
        Ref.SparsePrefillGrad want = Ref.sparsePrefillGrad(ref, dOut);
        double tol = Compare.tolerance(type);
        Compare.close("dq", g[0], want.dq, tol, ctx);
        Compare.close("dkv", g[1], want.dkv, tol, ctx);
        if (sinkArr != null) Compare.close("dsink", g[2], want.dsink, tol, ctx);
    }
}
