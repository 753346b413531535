package org.mla4j.layers;

import org.mla4j.ops.RopeConfig;

/**
 * Sizes of a DeepSeek-V3-style MLA attention block (v4-attention.md). MHA mode attends with
 * d_qk = qkNope + qkRope and d_v = vHead per head; absorbed mode with d_qk = kvLora + qkRope
 * and d_v = kvLora over one shared latent KV head.
 */
public final class MlaV3Config {
    public final int dModel;
    public final int heads;
    public final int qLora;
    public final int kvLora;
    public final int qkNope;
    public final int qkRope;
    public final int vHead;
    public final RopeConfig rope;
    public final double rmsEps;

    public MlaV3Config(int dModel, int heads, int qLora, int kvLora, int qkNope, int qkRope, int vHead,
                       RopeConfig rope, double rmsEps) {
        if (rope.ropeDim != qkRope) {
            throw new IllegalArgumentException("MlaV3Config: rope.ropeDim (" + rope.ropeDim + ") must equal qkRope (" + qkRope + ")");
        }
        this.dModel = dModel;
        this.heads = heads;
        this.qLora = qLora;
        this.kvLora = kvLora;
        this.qkNope = qkNope;
        this.qkRope = qkRope;
        this.vHead = vHead;
        this.rope = rope;
        this.rmsEps = rmsEps;
    }

    /** The small test configuration: d_model 256, 4 heads, q_lora 64, kv_lora 64, 32/16/32. */
    public static MlaV3Config small() {
        return new MlaV3Config(256, 4, 64, 64, 32, 16, 32, RopeConfig.interleaved(16, 10000), 1e-6);
    }

    /** MHA-mode query/key head dim. */
    public int dQk() { return qkNope + qkRope; }

    /** Absorbed-mode query/key dim: latent + RoPE. */
    public int dQkAbsorbed() { return kvLora + qkRope; }

    /** Softmax scale shared by both modes: 1/sqrt(qkNope + qkRope), times mscale^2 under YaRN. */
    public double softmaxScale() {
        double m = rope.mscale();
        return m * m / Math.sqrt(dQk());
    }

    @Override
    public String toString() {
        return "MLA-V3 d_model " + dModel + ", heads " + heads + ", q_lora " + qLora + ", kv_lora " + kvLora
                + ", nope/rope/v " + qkNope + "/" + qkRope + "/" + vHead;
    }
}
