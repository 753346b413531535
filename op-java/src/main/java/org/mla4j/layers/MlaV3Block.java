package org.mla4j.layers;

import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.nd4j.autodiff.samediff.SDIndex;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * A DeepSeek-V3-style MLA attention block in a SameDiff graph, in MHA mode (training and
 * prefill). Per token t:
 * <pre>
 *   cq = RMSNorm(h W_dq);   [qc; qr]_h = cq W_uq,h;   qr = R(t) qr
 *   [c~; kr~] = h W_dkv;    c = RMSNorm(c~);          kr = R(t) kr~   (one head, shared)
 *   k_h = [c W_uk,h; kr],   v_h = c W_uv,h,           o = attention(q, k, v) W_o
 * </pre>
 * Weights are SameDiff variables named {@code <name>/W_dq} etc., so the absorbed decoder
 * ({@link MlaV3Decoder}) reads the same values.
 */
public final class MlaV3Block {
    public final String name;
    public final MlaV3Config cfg;
    final SDVariable wDq, gQ, wUq, wDkv, gKv, wUk, wUv, wO;
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
        wUq = weight("W_uq", type, cfg.qLora, h * cfg.dQk());
        wDkv = weight("W_dkv", type, cfg.dModel, cfg.kvLora + cfg.qkRope);
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
        SDVariable cq = rmsNorm(sd.tensorMmul(x, wDq, new int[] {2}, new int[] {0}), gQ);
        SDVariable q = splitHeads(sd.tensorMmul(cq, wUq, new int[] {2}, new int[] {0}), x, h, cfg.dQk());
        SDVariable qc = q.get(SDIndex.all(), SDIndex.all(), SDIndex.all(), SDIndex.interval(0, cfg.qkNope));
        SDVariable qr = q.get(SDIndex.all(), SDIndex.all(), SDIndex.all(), SDIndex.interval(cfg.qkNope, cfg.dQk()));
        qr = Mla4j.ops(sd).rope(qr, positions, cfg.rope, false);

        SDVariable ckv = sd.tensorMmul(x, wDkv, new int[] {2}, new int[] {0});
        SDVariable c = rmsNorm(ckv.get(SDIndex.all(), SDIndex.all(), SDIndex.interval(0, cfg.kvLora)), gKv);
        SDVariable kr = ckv.get(SDIndex.all(), SDIndex.all(), SDIndex.interval(cfg.kvLora, cfg.kvLora + cfg.qkRope));
        kr = Mla4j.ops(sd).rope(splitHeads(kr, x, 1, cfg.qkRope), positions, cfg.rope, false);

        SDVariable kNope = splitHeads(sd.tensorMmul(c, wUk, new int[] {2}, new int[] {0}), x, h, cfg.qkNope);
        SDVariable k = sd.concat(3, kNope, sd.tile(kr, 1, 1, h, 1));
        SDVariable v = splitHeads(sd.tensorMmul(c, wUv, new int[] {2}, new int[] {0}), x, h, cfg.vHead);
        SDVariable qFull = sd.concat(3, qc, qr);
        SDVariable o = Mla4j.ops(sd).attention(qFull, k, v, null, null,
                new Attention.Options().causal(true).softmaxScale(cfg.softmaxScale()))[0];
        SDVariable merged = o.reshape(sd.concat(0, leadingDims(x), sd.constant(Nd4j.createFromArray((long) h * cfg.vHead))));
        return sd.tensorMmul(merged, wO, new int[] {2}, new int[] {0});
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
