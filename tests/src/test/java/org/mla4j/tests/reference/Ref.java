package org.mla4j.tests.reference;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import org.mla4j.ops.RopeConfig;

/**
 * Float64 reference implementations of the mla4j ops, written from ops.md: every query row
 * gets an explicit list of the keys it may attend, a full score row is materialised and the
 * softmax is taken in two passes (max, then sum). They are slow on purpose; tests use small
 * shapes.
 *
 * <p>Conventions: all tensors are row-major double[] with the shapes of ops.md; "no sink" is a
 * sink of -inf (which by the contract has no effect); positions == null means no VVPA rotation.
 */
public final class Ref {
    private Ref() {}

    // ---- one query row over an explicit key list --------------------------------------------

    /** What one query row produces. */
    public static final class Row {
        public double[] out;
        public double lse;
        public double maxLogit;
        /** Attention weight of each key (sink included in the normaliser). */
        public double[] probs;
        /** Weight the sink takes: exp(sink) / (sum exp(P) + exp(sink)). */
        public double sinkProb;
    }

    private static double dot(double[] a, double[] b, int n) {
        double s = 0;
        for (int i = 0; i < n; i++) s += a[i] * b[i];
        return s;
    }

    /**
     * Softmax attention of q over keys; values[j] holds the value of key j in its first dV dims.
     */
    public static Row attend(double[] q, List<double[]> keys, List<double[]> values, int dV, double scale, double sink) {
        int n = keys.size();
        Row r = new Row();
        r.out = new double[dV];
        r.probs = new double[n];
        if (n == 0) {
            r.lse = Double.POSITIVE_INFINITY;
            r.maxLogit = Double.NEGATIVE_INFINITY;
            r.sinkProb = 1;
            return r;
        }
        double[] scores = new double[n];
        for (int j = 0; j < n; j++) scores[j] = scale * dot(q, keys.get(j), q.length);
        double max = Double.NEGATIVE_INFINITY;
        for (double s : scores) max = Math.max(max, s);
        double sum = 0;
        for (double s : scores) sum += Math.exp(s - max);
        r.maxLogit = max;
        r.lse = max + Math.log(sum);
        double e = Math.exp(sink - r.lse);
        double keep = Double.isInfinite(e) ? 0 : 1 / (1 + e);
        r.sinkProb = 1 - keep;
        for (int j = 0; j < n; j++) {
            r.probs[j] = Math.exp(scores[j] - r.lse) * keep;
            double[] v = values.get(j);
            for (int c = 0; c < dV; c++) r.out[c] += r.probs[j] * v[c];
        }
        return r;
    }

    /** Gradients of one row with respect to q, each key, each value and the sink. */
    public static final class RowGrad {
        public double[] dq;
        public double[][] dk;
        public double[][] dv;
        public double dsink;
    }

    /**
     * Backward of {@link #attend} for an incoming gradient dout of the row's output:
     * {@code dP_j = a_j (dout.v_j - dout.out)}, {@code dq = scale sum dP_j k_j},
     * {@code dk_j = scale dP_j q}, {@code dv_j = a_j dout}, {@code dsink = -a_sink dout.out}.
     */
    public static RowGrad attendGrad(double[] q, List<double[]> keys, List<double[]> values, int dV, double scale,
                                     double sink, double[] dout) {
        Row r = attend(q, keys, values, dV, scale, sink);
        int n = keys.size(), d = q.length;
        RowGrad g = new RowGrad();
        g.dq = new double[d];
        g.dk = new double[n][d];
        g.dv = new double[n][dV];
        double doutOut = dot(dout, r.out, dV);
        g.dsink = -r.sinkProb * doutOut;
        for (int j = 0; j < n; j++) {
            double a = r.probs[j];
            double dp = a * (dot(dout, values.get(j), dV) - doutOut);
            double[] k = keys.get(j);
            for (int c = 0; c < d; c++) {
                g.dq[c] += scale * dp * k[c];
                g.dk[j][c] = scale * dp * q[c];
            }
            for (int c = 0; c < dV; c++) g.dv[j][c] = a * dout[c];
        }
        return g;
    }

    private static double[] slice(double[] a, long at, int n) {
        return Arrays.copyOfRange(a, (int) at, (int) at + n);
    }

    private static void addInto(double[] dst, long at, double[] src) {
        for (int i = 0; i < src.length; i++) dst[(int) at + i] += src[i];
    }

    /** Rotates an output row by R(-position) (VVPA) when positions are given. */
    private static double[] rotateOut(double[] out, int[] positions, int row, RopeConfig rope) {
        if (positions == null) return out;
        double[] o = out.clone();
        RopeRef.rotate(o, 0, o.length, positions[row], true, rope, RopeRef.frequencies(rope));
        return o;
    }

    /** The gradient of the unrotated output: R(+position) dout. */
    private static double[] unrotateGrad(double[] dout, int[] positions, int row, RopeConfig rope) {
        if (positions == null) return dout;
        double[] g = dout.clone();
        RopeRef.rotate(g, 0, g.length, positions[row], false, rope, RopeRef.frequencies(rope));
        return g;
    }

    private static double sinkOf(double[] sink, int h) {
        return sink == null ? Double.NEGATIVE_INFINITY : sink[h];
    }

    /** Outputs of an attention op: out, lse and (sparse prefill) max_logit. */
    public static final class Result {
        public double[] out;
        public double[] lse;
        public double[] maxLogit;
    }

    // ---- dense attention (section 4) ----------------------------------------------------------

    /**
     * Dense attention, packed form: q [totalQ, hQ, dQk], k [totalK, hKv, dQk], v [totalK, hKv, dV]
     * or null (value = first dV dims of k). A batched problem [b, s, h, d] is the same memory
     * with cuQ = {0, sQ, 2 sQ, ...}.
     */
    public static final class Attention {
        public int hQ, hKv, dQk, dV;
        public int[] cuQ, cuK;
        public double[] q, k, v;
        public double scale;
        public boolean causal;
        public int window;
        public double[] sink;
        public int[] positions;
        public RopeConfig rope;

        public static int[] uniform(int b, int s) {
            int[] cu = new int[b + 1];
            for (int i = 0; i <= b; i++) cu[i] = i * s;
            return cu;
        }

        public int sequences() {
            return cuQ.length - 1;
        }

        public int totalQ() {
            return cuQ[cuQ.length - 1];
        }

        public int totalK() {
            return cuK[cuK.length - 1];
        }

        /** Whether query i of a sequence (qLen queries, kLen keys) sees key j. */
        boolean visible(int i, int j, int qLen, int kLen) {
            int diagonal = i + kLen - qLen;
            boolean causalOk = !causal || j <= diagonal;
            boolean windowOk = window == 0 || j > diagonal - window;
            return causalOk && windowOk;
        }

        /** Packed key rows query row (sequence s, position i) attends. */
        List<Integer> keyRows(int s, int i) {
            int qLen = cuQ[s + 1] - cuQ[s], kLen = cuK[s + 1] - cuK[s];
            List<Integer> rows = new ArrayList<>();
            for (int j = 0; j < kLen; j++) if (visible(i, j, qLen, kLen)) rows.add(cuK[s] + j);
            return rows;
        }

        double[] keyVec(int row, int head) {
            return slice(k, ((long) row * hKv + head) * dQk, dQk);
        }

        double[] valueVec(int row, int head) {
            return v == null ? keyVec(row, head) : slice(v, ((long) row * hKv + head) * dV, dV);
        }
    }

    /** out [totalQ, hQ, dV] and lse in the packed layout [hQ, totalQ]. */
    public static Result attention(Attention a) {
        int total = a.totalQ(), group = a.hQ / a.hKv;
        Result res = new Result();
        res.out = new double[total * a.hQ * a.dV];
        res.lse = new double[a.hQ * total];
        for (int s = 0; s < a.sequences(); s++) {
            for (int i = 0; i < a.cuQ[s + 1] - a.cuQ[s]; i++) {
                int row = a.cuQ[s] + i;
                List<Integer> rows = a.keyRows(s, i);
                for (int h = 0; h < a.hQ; h++) {
                    List<double[]> keys = new ArrayList<>(), values = new ArrayList<>();
                    for (int kr : rows) {
                        keys.add(a.keyVec(kr, h / group));
                        values.add(a.valueVec(kr, h / group));
                    }
                    Row r = attend(slice(a.q, ((long) row * a.hQ + h) * a.dQk, a.dQk), keys, values, a.dV, a.scale,
                            sinkOf(a.sink, h));
                    System.arraycopy(rotateOut(r.out, a.positions, row, a.rope), 0, res.out, (row * a.hQ + h) * a.dV, a.dV);
                    res.lse[h * total + row] = r.lse;
                }
            }
        }
        return res;
    }

    /** The packed lse [hQ, b * sQ] of a batched problem as [b, hQ, sQ]. */
    public static double[] batchedLse(double[] packed, int b, int hQ, int sQ) {
        double[] out = new double[packed.length];
        for (int i = 0; i < b; i++)
            for (int h = 0; h < hQ; h++)
                for (int t = 0; t < sQ; t++) out[(i * hQ + h) * sQ + t] = packed[h * b * sQ + i * sQ + t];
        return out;
    }

    /** Gradients of dense attention: dk includes the value path when v is null (aliasing). */
    public static final class AttentionGrad {
        public double[] dq, dk, dv, dsink;
    }

    public static AttentionGrad attentionGrad(Attention a, double[] dout) {
        int total = a.totalQ(), group = a.hQ / a.hKv;
        AttentionGrad g = new AttentionGrad();
        g.dq = new double[a.q.length];
        g.dk = new double[a.k.length];
        g.dv = a.v == null ? null : new double[a.v.length];
        g.dsink = new double[a.hQ];
        for (int s = 0; s < a.sequences(); s++) {
            for (int i = 0; i < a.cuQ[s + 1] - a.cuQ[s]; i++) {
                int row = a.cuQ[s] + i;
                List<Integer> rows = a.keyRows(s, i);
                for (int h = 0; h < a.hQ; h++) {
                    int kvh = h / group;
                    List<double[]> keys = new ArrayList<>(), values = new ArrayList<>();
                    for (int kr : rows) {
                        keys.add(a.keyVec(kr, kvh));
                        values.add(a.valueVec(kr, kvh));
                    }
                    long qAt = ((long) row * a.hQ + h) * a.dQk;
                    double[] go = unrotateGrad(slice(dout, ((long) row * a.hQ + h) * a.dV, a.dV), a.positions, row, a.rope);
                    RowGrad rg = attendGrad(slice(a.q, qAt, a.dQk), keys, values, a.dV, a.scale, sinkOf(a.sink, h), go);
                    addInto(g.dq, qAt, rg.dq);
                    g.dsink[h] += rg.dsink;
                    for (int j = 0; j < rows.size(); j++) {
                        long kAt = ((long) rows.get(j) * a.hKv + kvh) * a.dQk;
                        addInto(g.dk, kAt, rg.dk[j]);
                        if (a.v == null) addInto(g.dk, kAt, rg.dv[j]);
                        else addInto(g.dv, ((long) rows.get(j) * a.hKv + kvh) * a.dV, rg.dv[j]);
                    }
                }
            }
        }
        return g;
    }

    // ---- paged caches (sections 1, 2, 5) ------------------------------------------------------

    /** A paged KV cache as the reference reads it: token (block, offset), head -> dQk values. */
    public interface Paged {
        int numBlocks();

        int blockSize();

        double[] token(int block, int offset, int head);
    }

    /** A PLAIN cache [numBlocks, blockSize, hKv, d]. */
    public static Paged plain(double[] data, int numBlocks, int blockSize, int hKv, int d) {
        return new Paged() {
            public int numBlocks() { return numBlocks; }
            public int blockSize() { return blockSize; }
            public double[] token(int block, int offset, int head) {
                return slice(data, (((long) block * blockSize + offset) * hKv + head) * d, d);
            }
        };
    }

    /** An FP8 cache of bytes [numBlocks, blockBytes] in the given layout (tokens decoded once). */
    public static Paged fp8(int[] bytes, CacheRef layout, int numBlocks, int blockSize) {
        double[][] decoded = new double[numBlocks * blockSize][];
        return new Paged() {
            public int numBlocks() { return numBlocks; }
            public int blockSize() { return blockSize; }
            public double[] token(int block, int offset, int head) {
                int t = block * blockSize + offset;
                if (decoded[t] == null) decoded[t] = layout.token(bytes, block, offset, blockSize);
                return decoded[t];
            }
        };
    }

    /** Dense decode (section 1). */
    public static final class Decode {
        public int b, sQ, hQ, hKv, dQk, dV;
        public double[] q;
        public Paged cache;
        public int[] blockTable;
        public int maxBlocks;
        public int[] seqlens;
        public boolean causal;
        public double scale;
        public double[] sink;
        public int[] positions;
        public RopeConfig rope;
    }

    /** out [b, sQ, hQ, dV], lse [b, hQ, sQ]. */
    public static Result decode(Decode d) {
        Result res = new Result();
        res.out = new double[d.b * d.sQ * d.hQ * d.dV];
        res.lse = new double[d.b * d.hQ * d.sQ];
        int group = d.hQ / d.hKv, bs = d.cache.blockSize();
        for (int i = 0; i < d.b; i++) {
            for (int j = 0; j < d.sQ; j++) {
                int last = d.causal ? d.seqlens[i] - d.sQ + j : d.seqlens[i] - 1;
                for (int h = 0; h < d.hQ; h++) {
                    List<double[]> keys = new ArrayList<>();
                    for (int t = 0; t <= last; t++) {
                        keys.add(d.cache.token(d.blockTable[i * d.maxBlocks + t / bs], t % bs, h / group));
                    }
                    int row = i * d.sQ + j;
                    Row r = attend(slice(d.q, ((long) row * d.hQ + h) * d.dQk, d.dQk), keys, keys, d.dV, d.scale,
                            sinkOf(d.sink, h));
                    System.arraycopy(rotateOut(r.out, d.positions, row, d.rope), 0, res.out, (row * d.hQ + h) * d.dV, d.dV);
                    res.lse[(i * d.hQ + h) * d.sQ + j] = r.lse;
                }
            }
        }
        return res;
    }

    /** One key set of sparse decode: indices [b, sQ, topk] of block * blockSize + offset. */
    public static final class KeySet {
        public Paged cache;
        public int[] indices;
        public int topk;
        public int[] topkLength;

        /** The tokens of request i, query j that count (invalid entries skipped). */
        void collect(int i, int j, int sQ, List<double[]> into) {
            int count = topkLength == null ? topk : Math.max(0, Math.min(topk, topkLength[i]));
            long keys = (long) cache.numBlocks() * cache.blockSize();
            for (int e = 0; e < count; e++) {
                int idx = indices[(i * sQ + j) * topk + e];
                if (idx < 0 || idx >= keys) continue;
                into.add(cache.token(idx / cache.blockSize(), idx % cache.blockSize(), 0));
            }
        }
    }

    /** Sparse decode (section 2): both key sets in one softmax. */
    public static final class SparseDecode {
        public int b, sQ, hQ, dQk, dV;
        public double[] q;
        public KeySet keys;
        public KeySet extra;
        public double scale;
        public double[] sink;
        public int[] positions;
        public RopeConfig rope;
    }

    public static Result sparseDecode(SparseDecode d) {
        Result res = new Result();
        res.out = new double[d.b * d.sQ * d.hQ * d.dV];
        res.lse = new double[d.b * d.hQ * d.sQ];
        for (int i = 0; i < d.b; i++) {
            for (int j = 0; j < d.sQ; j++) {
                List<double[]> keys = new ArrayList<>();
                d.keys.collect(i, j, d.sQ, keys);
                if (d.extra != null) d.extra.collect(i, j, d.sQ, keys);
                int row = i * d.sQ + j;
                for (int h = 0; h < d.hQ; h++) {
                    Row r = attend(slice(d.q, ((long) row * d.hQ + h) * d.dQk, d.dQk), keys, keys, d.dV, d.scale,
                            sinkOf(d.sink, h));
                    System.arraycopy(rotateOut(r.out, d.positions, row, d.rope), 0, res.out, (row * d.hQ + h) * d.dV, d.dV);
                    res.lse[(i * d.hQ + h) * d.sQ + j] = r.lse;
                }
            }
        }
        return res;
    }

    // ---- sparse prefill (section 3) -------------------------------------------------------------

    /** Sparse prefill: q [sQ, hQ, dQk], kv [sKv, hKv, dQk], indices [sQ, hKv, topk]. */
    public static final class SparsePrefill {
        public int sQ, sKv, hQ, hKv, dQk, dV, topk;
        public double[] q, kv;
        public int[] indices;
        public int[] topkLength;
        public double scale;
        public double[] sink;
        public int[] positions;
        public RopeConfig rope;

        List<Integer> rows(int i, int kvh) {
            int count = topkLength == null ? topk : Math.max(0, Math.min(topk, topkLength[i]));
            List<Integer> rows = new ArrayList<>();
            for (int e = 0; e < count; e++) {
                int idx = indices[(i * hKv + kvh) * topk + e];
                if (idx >= 0 && idx < sKv) rows.add(idx);
            }
            return rows;
        }

        double[] kvRow(int row, int kvh) {
            return slice(kv, ((long) row * hKv + kvh) * dQk, dQk);
        }
    }

    /** out [sQ, hQ, dV], maxLogit [sQ, hQ], lse [sQ, hQ]. */
    public static Result sparsePrefill(SparsePrefill p) {
        Result res = new Result();
        res.out = new double[p.sQ * p.hQ * p.dV];
        res.lse = new double[p.sQ * p.hQ];
        res.maxLogit = new double[p.sQ * p.hQ];
        int group = p.hQ / p.hKv;
        for (int i = 0; i < p.sQ; i++) {
            for (int h = 0; h < p.hQ; h++) {
                List<double[]> keys = new ArrayList<>();
                for (int row : p.rows(i, h / group)) keys.add(p.kvRow(row, h / group));
                Row r = attend(slice(p.q, ((long) i * p.hQ + h) * p.dQk, p.dQk), keys, keys, p.dV, p.scale, sinkOf(p.sink, h));
                System.arraycopy(rotateOut(r.out, p.positions, i, p.rope), 0, res.out, (i * p.hQ + h) * p.dV, p.dV);
                res.lse[i * p.hQ + h] = r.lse;
                res.maxLogit[i * p.hQ + h] = r.maxLogit;
            }
        }
        return res;
    }

    /** Gradients of sparse prefill: dq, dkv (key and value paths summed, scattered), dsink. */
    public static final class SparsePrefillGrad {
        public double[] dq, dkv, dsink;
    }

    public static SparsePrefillGrad sparsePrefillGrad(SparsePrefill p, double[] dout) {
        SparsePrefillGrad g = new SparsePrefillGrad();
        g.dq = new double[p.q.length];
        g.dkv = new double[p.kv.length];
        g.dsink = new double[p.hQ];
        int group = p.hQ / p.hKv;
        for (int i = 0; i < p.sQ; i++) {
            for (int h = 0; h < p.hQ; h++) {
                int kvh = h / group;
                List<Integer> rows = p.rows(i, kvh);
                List<double[]> keys = new ArrayList<>();
                for (int row : rows) keys.add(p.kvRow(row, kvh));
                long qAt = ((long) i * p.hQ + h) * p.dQk;
                double[] go = unrotateGrad(slice(dout, ((long) i * p.hQ + h) * p.dV, p.dV), p.positions, i, p.rope);
                RowGrad rg = attendGrad(slice(p.q, qAt, p.dQk), keys, keys, p.dV, p.scale, sinkOf(p.sink, h), go);
                addInto(g.dq, qAt, rg.dq);
                g.dsink[h] += rg.dsink;
                for (int j = 0; j < rows.size(); j++) {
                    long at = ((long) rows.get(j) * p.hKv + kvh) * p.dQk;
                    addInto(g.dkv, at, rg.dk[j]);
                    addInto(g.dkv, at, rg.dv[j]);
                }
            }
        }
        return g;
    }

    // ---- lightning indexer and top-k (section 6) ------------------------------------------------

    /** Whether query t (of sQ) sees key s (of sK) under the bottom-right causal mask. */
    private static boolean indexerVisible(boolean causal, int t, int s, int sQ, int sK) {
        return !causal || s <= t + sK - sQ;
    }

    /** scores [b, sQ, sK] = sum_j w[b,t,j] relu(q[b,t,j,:] . k[b,s,:]), -inf where masked. */
    public static double[] indexerScores(double[] q, double[] k, double[] w, int b, int sQ, int sK, int h, int d,
                                         boolean causal) {
        double[] scores = new double[b * sQ * sK];
        for (int i = 0; i < b; i++)
            for (int t = 0; t < sQ; t++)
                for (int s = 0; s < sK; s++) {
                    double total = Double.NEGATIVE_INFINITY;
                    if (indexerVisible(causal, t, s, sQ, sK)) {
                        total = 0;
                        for (int j = 0; j < h; j++) {
                            double dp = dot(slice(q, (((long) i * sQ + t) * h + j) * d, d), slice(k, ((long) i * sK + s) * d, d), d);
                            total += w[(i * sQ + t) * h + j] * Math.max(0, dp);
                        }
                    }
                    scores[(i * sQ + t) * sK + s] = total;
                }
        return scores;
    }

    /** {dq, dk, dw} of the indexer scores for dScores; masked entries and relu'(<= 0) give nothing. */
    public static double[][] indexerGrad(double[] q, double[] k, double[] w, double[] dScores, int b, int sQ, int sK,
                                         int h, int d, boolean causal) {
        double[] dq = new double[q.length], dk = new double[k.length], dw = new double[w.length];
        for (int i = 0; i < b; i++)
            for (int t = 0; t < sQ; t++)
                for (int s = 0; s < sK; s++) {
                    if (!indexerVisible(causal, t, s, sQ, sK)) continue;
                    double g = dScores[(i * sQ + t) * sK + s];
                    long kAt = ((long) i * sK + s) * d;
                    for (int j = 0; j < h; j++) {
                        long qAt = (((long) i * sQ + t) * h + j) * d;
                        double dp = dot(slice(q, qAt, d), slice(k, kAt, d), d);
                        int wAt = (i * sQ + t) * h + j;
                        dw[wAt] += g * Math.max(0, dp);
                        if (dp <= 0) continue;
                        for (int c = 0; c < d; c++) {
                            dq[(int) qAt + c] += g * w[wAt] * k[(int) kAt + c];
                            dk[(int) kAt + c] += g * w[wAt] * q[(int) qAt + c];
                        }
                    }
                }
        return new double[][] {dq, dk, dw};
    }

    /** Top-k result: indices [rows, k] (-1 padded) and values (-inf where -1). */
    public static final class TopK {
        public int[] indices;
        public double[] values;
    }

    /**
     * Top-k of each row: the largest scores first, equal scores by the lower index; -inf and NaN
     * are never chosen.
     */
    public static TopK topk(double[] scores, int rows, int n, int k) {
        TopK r = new TopK();
        r.indices = new int[rows * k];
        r.values = new double[rows * k];
        for (int row = 0; row < rows; row++) {
            List<Integer> cand = new ArrayList<>();
            for (int j = 0; j < n; j++) {
                double s = scores[row * n + j];
                if (!Double.isNaN(s) && s != Double.NEGATIVE_INFINITY) cand.add(j);
            }
            final int base = row * n;
            cand.sort(Comparator.<Integer>comparingDouble(j -> -scores[base + j] + 0.0).thenComparingInt(j -> j));
            for (int e = 0; e < k; e++) {
                boolean has = e < cand.size();
                r.indices[row * k + e] = has ? cand.get(e) : -1;
                r.values[row * k + e] = has ? scores[base + cand.get(e)] : Double.NEGATIVE_INFINITY;
            }
        }
        return r;
    }
}
