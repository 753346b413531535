package org.mla4j.layers.dl4j;

import static org.mla4j.layers.dl4j.MlaSelfAttentionParamInitializer.G_KV;
import static org.mla4j.layers.dl4j.MlaSelfAttentionParamInitializer.G_Q;
import static org.mla4j.layers.dl4j.MlaSelfAttentionParamInitializer.W_DKV;
import static org.mla4j.layers.dl4j.MlaSelfAttentionParamInitializer.W_DQ;
import static org.mla4j.layers.dl4j.MlaSelfAttentionParamInitializer.W_O;
import static org.mla4j.layers.dl4j.MlaSelfAttentionParamInitializer.W_Q;
import static org.mla4j.layers.dl4j.MlaSelfAttentionParamInitializer.W_UK;
import static org.mla4j.layers.dl4j.MlaSelfAttentionParamInitializer.W_UQ;
import static org.mla4j.layers.dl4j.MlaSelfAttentionParamInitializer.W_UV;

import java.util.Map;
import org.mla4j.ops.Attention;
import org.mla4j.ops.AttentionBp;
import org.mla4j.ops.Rope;
import org.mla4j.ops.RopeConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.INDArrayIndex;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.ops.transforms.Transforms;

/**
 * Forward and backward of the MLA self-attention of {@link MlaSelfAttentionLayer} on
 * token-major arrays, run eagerly: the projections and RMSNorms with ND4J, RoPE with the
 * {@code mla_rope} op, attention with {@code mla_attention} and its backward with
 * {@code mla_attention_bp}. Every gradient is the exact derivative of the forward; nothing
 * goes through SameDiff.
 *
 * <p>Shapes: input {@code x [b, s, nIn]} (row-major), optional key mask {@code [b, s]}
 * (0 = masked), output {@code z [b*s, nOut]} before the layer's activation.
 *
 * <p>Masking. mla_attention has no mask input, so a mask becomes one extra query/key
 * dimension: queries get the constant {@code M}, keys get {@code 0} where present and
 * {@code -M} where masked, which lowers the score of every masked key by {@code M^2 * scale}
 * (1.7e7 / sqrt(d_qk) without YaRN, over 1e5 for any practical head size) and leaves the
 * others unchanged. The masked keys' softmax weights then underflow to exactly 0 in every
 * float type (float64 underflows beyond a gap of about 745), so they contribute nothing to
 * outputs or gradients, whatever the mask's pattern and together with the causal mask.
 * {@code M} = 4096 is exact in float16 and bfloat16. A query whose whole key set is masked (only possible at a masked timestep:
 * causal attention always sees the query's own key) attends to its masked keys instead, like
 * DL4J's built-in attention; downstream layers ignore masked timesteps.
 */
final class MlaAttentionMath {
    /** The mask dimension's magnitude (see the class comment). */
    static final double MASK_MAGNITUDE = 4096;

    private final MlaSelfAttentionLayer conf;

    MlaAttentionMath(MlaSelfAttentionLayer conf) {
        this.conf = conf;
    }

    /** RMSNorm of the rows of a 2-d array: {@code y = xhat * g}, {@code xhat = x * r}. */
    static final class Norm {
        final INDArray xhat;
        final INDArray r;
        final INDArray y;

        Norm(INDArray x, INDArray g, double eps) {
            r = Transforms.pow(x.mul(x).mean(true, 1).addi(eps), -0.5, false);
            xhat = x.mulColumnVector(r);
            y = xhat.mulRowVector(g);
        }

        /** Writes dL/dg into {@code dg} and returns dL/dx. */
        INDArray backward(INDArray dy, INDArray g, INDArray dg) {
            dg.assign(dy.mul(xhat).sum(true, 0));
            INDArray u = dy.mulRowVector(g);
            INDArray proj = u.mul(xhat).mean(true, 1);
            return u.subi(xhat.mulColumnVector(proj)).muliColumnVector(r);
        }
    }

    /** What the backward pass needs from the forward pass. */
    static final class Forward {
        long b, s;
        INDArray x2;          // [N, nIn]
        INDArray positions;   // int32 [b, s]
        Norm qNorm;           // over x W_dq (qLora > 0)
        Norm kvNorm;          // over the latent part of x W_dkv
        INDArray q, k, v;     // attention inputs [b, s, h, d(+1)]
        Attention attention;
        INDArray out, lse;    // attention outputs
        INDArray o2;          // [N, h * vHead]
        INDArray z;           // [N, nOut]
        boolean masked;
    }

    Forward forward(INDArray x, INDArray mask, Map<String, INDArray> p) {
        Forward f = new Forward();
        f.b = x.size(0);
        f.s = x.size(1);
        long n = f.b * f.s;
        int h = conf.getHeads(), dQk = conf.qkHeadDim(), nope = conf.getQkNope(), rope = conf.getQkRope();
        int kvLora = conf.getKvLora(), vHead = conf.getVHead();
        DataType t = x.dataType();
        RopeConfig ropeCfg = conf.ropeConfig();

        f.x2 = x.reshape('c', n, x.size(2));
        f.positions = positions(f.b, f.s);

        // Queries: [qc; qr] per head, RoPE on the last qkRope dims of each head.
        INDArray qFlat;
        if (conf.getQLora() > 0) {
            f.qNorm = new Norm(f.x2.mmul(p.get(W_DQ)), p.get(G_Q), conf.getRmsEps());
            qFlat = f.qNorm.y.mmul(p.get(W_UQ));
        } else {
            qFlat = f.x2.mmul(p.get(W_Q));
        }
        INDArray q = rope(qFlat.reshape('c', f.b, f.s, h, dQk), f.positions, ropeCfg, false);

        // Keys and values from the latent c; one RoPE key shared by all heads.
        INDArray ckv = f.x2.mmul(p.get(W_DKV));
        f.kvNorm = new Norm(ckv.get(NDArrayIndex.all(), NDArrayIndex.interval(0, kvLora)).dup('c'),
                p.get(G_KV), conf.getRmsEps());
        INDArray c = f.kvNorm.y;
        INDArray kr = ckv.get(NDArrayIndex.all(), NDArrayIndex.interval(kvLora, kvLora + rope)).dup('c');
        kr = rope(kr.reshape('c', f.b, f.s, 1, rope), f.positions, ropeCfg, false);
        INDArray kNope = c.mmul(p.get(W_UK)).reshape('c', f.b, f.s, h, nope);
        INDArray k = Nd4j.concat(3, kNope, kr.broadcast(f.b, f.s, h, rope));
        f.v = c.mmul(p.get(W_UV)).reshape('c', f.b, f.s, h, vHead);

        f.masked = mask != null && mask.minNumber().doubleValue() == 0.0;
        if (f.masked) {
            INDArray qExtra = Nd4j.valueArrayOf(new long[] {f.b, f.s, h, 1}, MASK_MAGNITUDE, t);
            INDArray keyBias = mask.eq(0.0).castTo(t).muli(-MASK_MAGNITUDE)
                    .reshape('c', f.b, f.s, 1, 1).broadcast(f.b, f.s, h, 1);
            q = Nd4j.concat(3, q, qExtra);
            k = Nd4j.concat(3, k, keyBias);
        }
        f.q = q;
        f.k = k;

        Attention.Options o = new Attention.Options().causal(conf.isCausal()).softmaxScale(conf.softmaxScale());
        f.attention = new Attention(f.q, f.k, f.v, null, null, null, null, o);
        INDArray[] r = Nd4j.exec(f.attention);
        f.out = r[0];
        f.lse = r[1];
        f.o2 = f.out.reshape('c', n, (long) h * vHead);
        f.z = f.o2.mmul(p.get(W_O));
        return f;
    }

    /**
     * Backward from {@code dz [b*s, nOut]} (dL/dz before the activation): writes every
     * parameter gradient into {@code grads} (views of the layer's gradient vector) and returns
     * dL/dx {@code [b, s, nIn]}.
     */
    INDArray backward(Forward f, INDArray dz, Map<String, INDArray> p, Map<String, INDArray> grads) {
        long n = f.b * f.s;
        int h = conf.getHeads(), dQk = conf.qkHeadDim(), nope = conf.getQkNope(), rope = conf.getQkRope();
        int vHead = conf.getVHead();
        RopeConfig ropeCfg = conf.ropeConfig();

        grads.get(W_O).assign(f.o2.transpose().mmul(dz));
        INDArray dOut = dz.mmul(p.get(W_O).transpose()).reshape('c', f.b, f.s, h, vHead);

        INDArray[] g = Nd4j.exec(new AttentionBp(new INDArray[] {f.q, f.k, f.v, f.out, f.lse, dOut}, f.attention));
        INDArray dq = f.masked ? g[0].get(lastDims(0, dQk)).dup('c') : g[0];
        INDArray dk = g[1];
        INDArray dv = g[2].reshape('c', n, (long) h * vHead);

        // Latent c feeds W_uk (key nope part) and W_uv (values).
        INDArray c = f.kvNorm.y;
        grads.get(W_UV).assign(c.transpose().mmul(dv));
        INDArray dc = dv.mmul(p.get(W_UV).transpose());
        INDArray dkNope = dk.get(lastDims(0, nope)).dup('c').reshape('c', n, (long) h * nope);
        grads.get(W_UK).assign(c.transpose().mmul(dkNope));
        dc.addi(dkNope.mmul(p.get(W_UK).transpose()));
        INDArray dcRaw = f.kvNorm.backward(dc, p.get(G_KV), grads.get(G_KV));

        // The shared RoPE key collects the gradients of all heads, then rotates back.
        INDArray dkr = dk.get(lastDims(nope, dQk)).sum(true, 2).dup('c');
        dkr = rope(dkr, f.positions, ropeCfg, true).reshape('c', n, rope);
        INDArray dckv = Nd4j.concat(1, dcRaw, dkr);
        grads.get(W_DKV).assign(f.x2.transpose().mmul(dckv));
        INDArray dx = dckv.mmul(p.get(W_DKV).transpose());

        INDArray dqFlat = rope(dq, f.positions, ropeCfg, true).reshape('c', n, (long) h * dQk);
        if (conf.getQLora() > 0) {
            grads.get(W_UQ).assign(f.qNorm.y.transpose().mmul(dqFlat));
            INDArray dcq = dqFlat.mmul(p.get(W_UQ).transpose());
            INDArray da = f.qNorm.backward(dcq, p.get(G_Q), grads.get(G_Q));
            grads.get(W_DQ).assign(f.x2.transpose().mmul(da));
            dx.addi(da.mmul(p.get(W_DQ).transpose()));
        } else {
            grads.get(W_Q).assign(f.x2.transpose().mmul(dqFlat));
            dx.addi(dqFlat.mmul(p.get(W_Q).transpose()));
        }
        return dx.reshape('c', f.b, f.s, dx.size(1));
    }

    /** Index of dims [from, to) of the last axis of a rank-4 array. */
    private static INDArrayIndex[] lastDims(long from, long to) {
        return new INDArrayIndex[] {NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.all(),
                NDArrayIndex.interval(from, to)};
    }

    /** int32 [b, s]: the timestep index of every token. */
    private static INDArray positions(long b, long s) {
        INDArray row = Nd4j.arange(0, s).castTo(DataType.INT).reshape(1, s);
        return row.repeat(0, b).reshape('c', b, s);
    }

    private static INDArray rope(INDArray x, INDArray positions, RopeConfig cfg, boolean inverse) {
        return Nd4j.exec(new Rope(x, positions, cfg, inverse))[0];
    }
}
