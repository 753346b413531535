package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.layers.MlaV3Block;
import org.mla4j.layers.MlaV3Config;
import org.mla4j.ops.Attention;
import org.mla4j.ops.RopeConfig;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.validation.GradCheckUtil;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * SameDiff's own numerical gradient checker (float64, central differences) on each
 * differentiable plugin op and on a whole V3-style MLA block. The loss weights every output
 * element by a fixed random value so no gradient is trivially symmetric.
 */
class TrainingGradCheckTest {
    private static DataType defaultType, defaultFloatType;
    /**
     * The loss weights are a constant: GradCheckUtil would perturb each of their elements
     * (two forward passes) only to find no gradient and log a warning for it.
     */
    private static final Set<String> NOT_PARAMETERS = Set.of("lossWeights");

    @BeforeAll
    static void install() {
        Mla4j.install();
        defaultType = Nd4j.dataType();
        defaultFloatType = Nd4j.defaultFloatingPointType();
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);  // GradCheckUtil requires it
    }

    @AfterAll
    static void restoreTypes() {
        Nd4j.setDefaultDataTypes(defaultType, defaultFloatType);
    }

    private static INDArray rnd(long seed, long... shape) {
        Nd4j.getRandom().setSeed(seed);
        return Nd4j.randn(DataType.DOUBLE, shape);
    }

    /** Checks every parameter (maxPerVariable <= 0) or every n-th one, at most maxPerVariable per variable. */
    private static boolean check(SameDiff sd, SDVariable out, long seed, int maxPerVariable) {
        SDVariable w = sd.constant("lossWeights", rnd(seed, out.eval().shape()));
        out.mul(w).sum().rename("loss");
        sd.setLossVariables("loss");
        // minAbsError 1e-8: central differences of a loss of magnitude ~10 carry ~1e-9 of rounding.
        return GradCheckUtil.checkGradients(sd, new HashMap<>(), 1e-6, 1e-5, 1e-8, false, false, false, false,
                NOT_PARAMETERS, null, maxPerVariable, GradCheckUtil.Subset.EVERY_N);
    }

    @Test
    void attentionCausalGroupedWindowRotated() {
        SameDiff sd = SameDiff.create();
        SDVariable q = sd.var("q", rnd(1, 2, 5, 4, 8));
        SDVariable k = sd.var("k", rnd(2, 2, 6, 2, 8));
        SDVariable v = sd.var("v", rnd(3, 2, 6, 2, 6));
        SDVariable pos = sd.constant("pos", Nd4j.createFromArray(new int[][] {{3, 4, 5, 6, 7}, {0, 1, 2, 3, 4}}));
        SDVariable out = Mla4j.ops(sd).attention(q, k, v, null, pos, new Attention.Options().causal(true).window(4)
                .rope(RopeConfig.interleaved(4, 10000)))[0];
        assertTrue(check(sd, out, 4, 0), "gradient check of mla_attention (causal, GQA, window, VVPA)");
    }

    @Test
    void attentionAbsorbedValueAliasesKey() {
        SameDiff sd = SameDiff.create();
        SDVariable q = sd.var("q", rnd(5, 1, 4, 3, 10));
        SDVariable k = sd.var("k", rnd(6, 1, 7, 1, 10));
        SDVariable out = Mla4j.ops(sd).attention(q, k, null, null, null,
                new Attention.Options().valueFromKey(6).causal(true).softmaxScale(0.4))[0];
        assertTrue(check(sd, out, 7, 0), "gradient check of mla_attention with v = k[..., :6]");
    }

    @Test
    void attentionVariableLength() {
        SameDiff sd = SameDiff.create();
        SDVariable q = sd.var("q", rnd(8, 7, 2, 8));
        SDVariable k = sd.var("k", rnd(9, 9, 1, 8));
        SDVariable v = sd.var("v", rnd(10, 9, 1, 4));
        SDVariable cuQ = sd.constant("cuQ", Nd4j.createFromArray(0, 3, 3, 7));
        SDVariable cuK = sd.constant("cuK", Nd4j.createFromArray(0, 4, 5, 9));
        SDVariable out = Mla4j.ops(sd).attentionVarlen(q, k, v, cuQ, cuK, null, null,
                new Attention.Options().causal(true))[0];
        assertTrue(check(sd, out, 11, 0), "gradient check of variable-length mla_attention");
    }

    @Test
    void sparsePrefillWithDuplicateAndInvalidIndices() {
        SameDiff sd = SameDiff.create();
        SDVariable q = sd.var("q", rnd(12, 4, 2, 12));
        SDVariable kv = sd.var("kv", rnd(13, 6, 1, 12));
        int[][][] idx = {{{0, 2, 2, -1}}, {{5, 1, 9, 3}}, {{4, 4, 4, 4}}, {{-3, 0, 1, 2}}};
        SDVariable indices = sd.constant("idx", Nd4j.createFromArray(idx));
        SDVariable out = Mla4j.ops(sd).sparsePrefill(q, kv, indices, null, null, null, 8, 0.3, null)[0];
        assertTrue(check(sd, out, 14, 0), "gradient check of mla_sparse_prefill");
    }

    @Test
    void ropeWithYarn() {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.var("x", rnd(15, 2, 3, 2, 12));
        SDVariable pos = sd.constant("pos", Nd4j.createFromArray(new int[][] {{0, 70, 5000}, {-3, 2, 9}}));
        SDVariable out = Mla4j.ops(sd).rope(x, pos, RopeConfig.halfSplit(8, 10000).withYarn(16, 64, 32, 1), false);
        assertTrue(check(sd, out, 16, 0), "gradient check of mla_rope");
    }

    @Test
    void indexerScores() {
        SameDiff sd = SameDiff.create();
        SDVariable q = sd.var("q", rnd(17, 1, 4, 2, 6));
        SDVariable k = sd.var("k", rnd(18, 1, 5, 6));
        SDVariable w = sd.var("w", rnd(19, 1, 4, 2));
        SDVariable scores = Mla4j.ops(sd).indexerScores(q, k, w, false);
        // The kernel accumulates in float32: a looser bound than the float64 ops.
        SDVariable lw = sd.constant("lossWeights", rnd(20, 1, 4, 5).castTo(DataType.FLOAT));
        scores.mul(lw).sum().castTo(DataType.DOUBLE).rename("loss");
        sd.setLossVariables("loss");
        // Numerical noise of a float32 loss over eps 1e-3 is ~1e-4: bounds to match.
        assertTrue(GradCheckUtil.checkGradients(sd, new HashMap<>(), 1e-3, 1e-2, 1e-3, false, false, false, false,
                NOT_PARAMETERS, null, 0, null),
                "gradient check of mla_indexer_scores");
    }

    @Test
    void wholeMlaV3Block() {
        MlaV3Config cfg = new MlaV3Config(16, 2, 8, 8, 4, 4, 4, RopeConfig.interleaved(4, 10000), 1e-6);
        SameDiff sd = SameDiff.create();
        MlaV3Block block = new MlaV3Block(sd, "blk", cfg, DataType.DOUBLE, 21);
        SDVariable x = sd.var("x", rnd(22, 2, 5, cfg.dModel));
        INDArray p = Nd4j.createFromArray(new int[][] {{0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}});
        SDVariable pos = sd.constant("pos", p);
        SDVariable out = block.forward(x, pos);
        assertTrue(check(sd, out, 23, 3), "gradient check of a whole V3-style MLA block");
    }
}
