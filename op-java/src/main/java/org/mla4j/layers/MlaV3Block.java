package org.mla4j.layers;

import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * A DeepSeek-V3-style MLA attention block in a SameDiff graph, in MHA mode (training and
 * prefill). Per token t:
 * <pre>
 *   cq = RMSNorm(h W_dq);   qc_h = cq W_uq_nope,h;    qr_h = R(t) cq W_uq_rope,h
 *   c = RMSNorm(h W_dkv);   kr = R(t) h W_kr      (one head, shared)
 *   k_h = [c W_uk,h; kr],   v_h = c W_uv,h,           o = attention(q, k, v) W_o
 * </pre>
 * Weights are SameDiff variables named {@code <name>/W_dq} etc., so the absorbed decoder
 * ({@link MlaV3Decoder}) reads the same values. The projections DeepSeek stores as one matrix
 * (W_uq for [qc; qr], W_dkv for [c~; kr~]) are kept as two, which is the same function and
 * keeps slicing out of the graph.
 */
public final class MlaV3Block {
    public final String name;
    public final MlaV3Config cfg;
    final SDVariable wDq, gQ, wUqNope, wUqRope, wDkv, wKr, gKv, wUk, wUv, wO;
    private final SameDiff sd;

    /** Creates the block's weights in {@code sd} (scaled Gaussian init, norm gains 1). */
    public MlaV3Block(SameDiff sd, String name, MlaV3Config cfg, DataType type, long seed) {
        this.sd = sd;
        this.name = name;
        this.cfg = cfg;
        Nd4j.getRandom().setSeed(seed);
        int h = cfg.heads;
        wDq = weight("W_dq", type, cfg.dModel, cfg.qLora);
        gQ = sd.var(name + "/g_q", Nd4j.ones(type, cfg.qLora));
        wUqNope = weight("W_uq_nope", type, cfg.qLora, h * cfg.qkNope);
        wUqRope = weight("W_uq_rope", type, cfg.qLora, h * cfg.qkRope);
        wDkv = weight("W_dkv", type, cfg.dModel, cfg.kvLora);
        wKr = weight("W_kr", type, cfg.dModel, cfg.qkRope);
        gKv = sd.var(name + "/g_kv", Nd4j.ones(type, cfg.kvLora));
        wUk = weight("W_uk", type, cfg.kvLora, h * cfg.qkNope);
        wUv = weight("W_uv", type, cfg.kvLora, h * cfg.vHead);
        wO = weight("W_o", type, h * cfg.vHead, cfg.dModel);
    }

    private SDVariable weight(String w, DataType type, int fanIn, int fanOut) {
        INDArray init = Nd4j.randn(DataType.DOUBLE, fanIn, fanOut).muli(1.0 / Math.sqrt(fanIn)).castTo(type);
        return sd.var(name + "/" + w, init);
    }

    /**
     * The block's output for {@code x [b, s, d_model]} at {@code positions int32 [b, s]}, causal.
     *
     * @return [b, s, d_model]
     */
    public SDVariable forward(SDVariable x, SDVariable positions) {
        int h = cfg.heads;
        SDVariable cq = rmsNorm(linear(x, wDq), gQ);
        SDVariable qc = splitHeads(linear(cq, wUqNope), x, h, cfg.qkNope);
        SDVariable qr = Mla4j.ops(sd).rope(splitHeads(linear(cq, wUqRope), x, h, cfg.qkRope), positions, cfg.rope, false);

        SDVariable c = rmsNorm(linear(x, wDkv), gKv);
        SDVariable kr = Mla4j.ops(sd).rope(splitHeads(linear(x, wKr), x, 1, cfg.qkRope), positions, cfg.rope, false);

        SDVariable kNope = splitHeads(linear(c, wUk), x, h, cfg.qkNope);
        SDVariable k = sd.concat(3, kNope, sd.tile(kr, 1, 1, h, 1));
        SDVariable v = splitHeads(linear(c, wUv), x, h, cfg.vHead);
        SDVariable qFull = sd.concat(3, qc, qr);
        SDVariable o = Mla4j.ops(sd).attention(qFull, k, v, null, null,
                new Attention.Options().causal(true).softmaxScale(cfg.softmaxScale()))[0];
        SDVariable merged = o.reshape(sd.concat(0, leadingDims(x), sd.constant(Nd4j.createFromArray((long) h * cfg.vHead))));
        return linear(merged, wO);
    }

    /**
     * {@code x [b, s, n] W [n, m] -> [b, s, m]}. Flattened to a matrix product: ND4J 1.0.0-M2.1's
     * tensorMmul gradient fails on these shapes.
     */
    public SDVariable linear(SDVariable x, SDVariable w) {
        long m = w.getShape()[1];
        SDVariable flat = x.reshape(-1, w.getShape()[0]).mmul(w);
        return flat.reshape(sd.concat(0, leadingDims(x), sd.constant(Nd4j.createFromArray(m))));
    }

    /** x * g / sqrt(mean(x^2) + eps) over the last dim of a rank-3 x. */
    SDVariable rmsNorm(SDVariable x, SDVariable g) {
        // An explicit axis: ND4J 1.0.0-M2.1 reduces wrongly with keepDims over axis -1 here.
        SDVariable ms = x.mul(x).mean(true, 2);
        return x.mul(sd.math.rsqrt(ms.add(cfg.rmsEps))).mul(g);
    }

    private SDVariable leadingDims(SDVariable like) {
        return sd.castTo(sd.slice(sd.shape(like), new int[] {0}, 2), DataType.LONG);
    }

    /** [b, s, heads * dim] -> [b, s, heads, dim], with b and s read from {@code like}. */
    private SDVariable splitHeads(SDVariable y, SDVariable like, int heads, int dim) {
        SDVariable shape = sd.concat(0, leadingDims(like), sd.constant(Nd4j.createFromArray((long) heads, dim)));
        return y.reshape(shape);
    }

    /** The current value of weight {@code w} ("W_dq", "g_q", ...). */
    public INDArray weight(String w) {
        return sd.getVariable(name + "/" + w).getArr();
    }
}
