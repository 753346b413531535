package org.mla4j.layers;

import org.mla4j.cache.KvCache;
import org.mla4j.ops.Rope;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Token-by-token decode of an {@link MlaV3Block} in absorbed (MQA) mode over a paged cache:
 * the cache holds one latent row {@code [c; kr]} (kvLora + qkRope) per token; each query head
 * is absorbed as {@code q^_h = [W_uk,h^T qc_h; qr_h]}, attends the latent rows with dense
 * decode (value = c), and its output is expanded with W_uv,h. This computes the same function
 * as the block's MHA forward, with a cache of kvLora + qkRope values per token instead of
 * heads * (qkNope + qkRope + vHead).
 */
public final class MlaV3Decoder {
    private final MlaV3Config cfg;
    private final INDArray wDq, gQ, wUqNope, wUqRope, wDkv, wKr, gKv, wUkT, wUvHeads, wO;

    /** Reads the block's current weights (call again after training to pick up new values). */
    public MlaV3Decoder(MlaV3Block block) {
        this.cfg = block.cfg;
        this.wDq = block.weight("W_dq");
        this.gQ = block.weight("g_q");
        this.wUqNope = block.weight("W_uq_nope");
        this.wUqRope = block.weight("W_uq_rope");
        this.wDkv = block.weight("W_dkv");
        this.wKr = block.weight("W_kr");
        this.gKv = block.weight("g_kv");
        int h = cfg.heads;
        // [kvLora, h * nope] -> [h, nope, kvLora]; [kvLora, h * v] -> [h, kvLora, v]
        this.wUkT = block.weight("W_uk").reshape('c', cfg.kvLora, h, cfg.qkNope).permute(1, 2, 0).dup('c');
        this.wUvHeads = block.weight("W_uv").reshape('c', cfg.kvLora, h, cfg.vHead).permute(1, 0, 2).dup('c');
        this.wO = block.weight("W_o");
    }

    /**
     * Decodes one token per sequence: {@code x [b, d_model]} at {@code positions [b]} (each the
     * sequence's current length). Appends the token's latent row to the cache and returns the
     * block output {@code [b, d_model]}.
     */
    public INDArray step(INDArray x, int[] positions, KvCache cache) {
        int b = (int) x.size(0), h = cfg.heads;
        DataType t = x.dataType();
        INDArray pos = Nd4j.createFromArray(positions).reshape(b, 1);

        INDArray cq = rmsNorm(x.mmul(wDq), gQ);
        INDArray qc = cq.mmul(wUqNope).reshape('c', b, h, cfg.qkNope);
        INDArray qr = rope(cq.mmul(wUqRope).reshape('c', b, 1, h, cfg.qkRope), pos).reshape('c', b, h, cfg.qkRope);

        INDArray c = rmsNorm(x.mmul(wDkv), gKv);
        INDArray kr = rope(x.mmul(wKr).reshape('c', b, 1, 1, cfg.qkRope), pos).reshape('c', b, cfg.qkRope);
        INDArray latentRow = Nd4j.concat(1, c, kr).reshape('c', b, 1, cfg.dQkAbsorbed());
        cache.append(latentRow.castTo(cache.rowType()));

        // q^_h = [W_uk,h qc_h ; qr_h], batched over heads: [h, b, nope] x [h, nope, kvLora]
        INDArray qLatent = Nd4j.matmul(qc.permute(1, 0, 2).dup('c'), wUkT).permute(1, 0, 2);
        INDArray qAbs = Nd4j.concat(2, qLatent.dup('c'), qr).reshape('c', b, 1, h, cfg.dQkAbsorbed());
        INDArray qDecode = cache.queryType() == null ? qAbs : qAbs.castTo(cache.queryType());
        INDArray latentOut = cache.decode(qDecode, cfg.kvLora, true, cfg.softmaxScale())[0].castTo(t);

        // o_h = W_uv,h^T o_latent,h: [h, b, kvLora] x [h, kvLora, v] -> [b, h * v]
        INDArray oLatent = latentOut.reshape('c', b, h, cfg.kvLora).permute(1, 0, 2).dup('c');
        INDArray merged = Nd4j.matmul(oLatent, wUvHeads).permute(1, 0, 2).dup('c').reshape('c', b, h * cfg.vHead);
        return merged.mmul(wO);
    }

    private INDArray rmsNorm(INDArray x, INDArray g) {
        return rmsNorm(x, g, cfg.rmsEps);
    }

    /** Eager RMSNorm of the rows of {@code x [b, n]} with gain {@code g [n]}. */
    static INDArray rmsNorm(INDArray x, INDArray g, double eps) {
        INDArray ms = x.mul(x).mean(true, 1);
        return x.divColumnVector(Nd4j.math().sqrt(ms.addi(eps))).muliRowVector(g);
    }

    private INDArray rope(INDArray x, INDArray pos) {
        return Nd4j.exec(new Rope(x, pos, cfg.rope, false))[0];
    }
}
