package org.mla4j.ops;

import java.util.List;
import org.mla4j.MlaException;
import org.mla4j.nativelib.MlaLib;

/**
 * A RoPE descriptor (ops.md section 7): {@code ropeDim} dims starting at {@code offset}
 * (-1: the last ropeDim dims), interleaved pairs or half-split, frequencies
 * {@code theta^(-2i/ropeDim)} with optional YaRN correction (DeepSeek's formulas).
 * Immutable; stored in an op as 4 integer and 4 floating-point arguments.
 */
public final class RopeConfig {
    public static final int INTERLEAVED = MlaLib.MLA_ROPE_INTERLEAVED;
    public static final int HALF_SPLIT = MlaLib.MLA_ROPE_HALF_SPLIT;

    public final int ropeDim;
    public final int offset;
    public final int style;
    public final double theta;
    public final double yarnFactor;
    public final long originalMaxPosition;
    public final double betaFast;
    public final double betaSlow;

    /**
     * Checks the descriptor here, where it is built, by the rules the native ops apply: ropeDim
     * even, 0 (no rotation) to 1024; style INTERLEAVED or HALF_SPLIT; theta finite and > 1; with
     * YaRN (yarnFactor > 1) a positive originalMaxPosition and positive betas.
     *
     * @throws MlaException naming the field, the rule and the value
     */
    public RopeConfig(int ropeDim, int offset, int style, double theta, double yarnFactor,
                      long originalMaxPosition, double betaFast, double betaSlow) {
        if (ropeDim < 0 || ropeDim % 2 != 0 || ropeDim > 1024) {
            throw invalid("ropeDim must be an even number of dims from 2 to 1024 (0: no rotation), got " + ropeDim);
        }
        if (style != INTERLEAVED && style != HALF_SPLIT) {
            throw invalid("style must be " + INTERLEAVED + " (INTERLEAVED) or " + HALF_SPLIT + " (HALF_SPLIT), got "
                    + style);
        }
        if (!(theta > 1) || !Double.isFinite(theta)) throw invalid("theta must be finite and > 1, got " + theta);
        if (!Double.isFinite(yarnFactor)) throw invalid("yarnFactor must be finite, got " + yarnFactor);
        if (yarnFactor > 1) {
            if (originalMaxPosition <= 0) {
                throw invalid("YaRN (yarnFactor " + yarnFactor + ") needs originalMaxPosition > 0, got "
                        + originalMaxPosition);
            }
            if (!(betaFast > 0) || !(betaSlow > 0) || !Double.isFinite(betaFast) || !Double.isFinite(betaSlow)) {
                throw invalid("YaRN needs finite betaFast > 0 and betaSlow > 0, got " + betaFast + " and " + betaSlow);
            }
        }
        this.ropeDim = ropeDim;
        this.offset = offset;
        this.style = style;
        this.theta = theta;
        this.yarnFactor = yarnFactor;
        this.originalMaxPosition = originalMaxPosition;
        this.betaFast = betaFast;
        this.betaSlow = betaSlow;
    }

    /** Plain RoPE on the last ropeDim dims, interleaved pairs (DeepSeek MLA). */
    public static RopeConfig interleaved(int ropeDim, double theta) {
        return new RopeConfig(ropeDim, -1, INTERLEAVED, theta, 1.0, 0, 32, 1);
    }

    /** Plain RoPE on the last ropeDim dims, half-split pairs. */
    public static RopeConfig halfSplit(int ropeDim, double theta) {
        return new RopeConfig(ropeDim, -1, HALF_SPLIT, theta, 1.0, 0, 32, 1);
    }

    /** The same rotation with YaRN (factor > 1, original context length, beta_fast, beta_slow). */
    public RopeConfig withYarn(double factor, long originalMaxPosition, double betaFast, double betaSlow) {
        return new RopeConfig(ropeDim, offset, style, theta, factor, originalMaxPosition, betaFast, betaSlow);
    }

    /** The same rotation on dims [offset, offset + ropeDim). */
    public RopeConfig atOffset(int offset) {
        return new RopeConfig(ropeDim, offset, style, theta, yarnFactor, originalMaxPosition, betaFast, betaSlow);
    }

    private static MlaException invalid(String message) {
        return new MlaException("RopeConfig: " + message);
    }

    /** YaRN's attention scale multiplier mscale = 0.1 ln(factor) + 1 (1 without YaRN). */
    public double mscale() {
        return yarnFactor <= 1 ? 1.0 : 0.1 * Math.log(yarnFactor) + 1.0;
    }

    void addArgs(MlaOp op) {
        op.addIArgument(ropeDim, offset, style, originalMaxPosition);
        op.addTArgument(theta, yarnFactor, betaFast, betaSlow);
    }

    static RopeConfig fromArgs(List<Long> i, int iAt, List<Double> t, int tAt) {
        return new RopeConfig(i.get(iAt).intValue(), i.get(iAt + 1).intValue(), i.get(iAt + 2).intValue(),
                t.get(tAt), t.get(tAt + 1), i.get(iAt + 3), t.get(tAt + 2), t.get(tAt + 3));
    }

    /** A disabled descriptor (no rotation) for ops without one. */
    public static RopeConfig none() {
        return new RopeConfig(0, -1, INTERLEAVED, 10000, 1, 0, 32, 1);
    }

    void fill(MlaLib.mla_rope r) {
        r.rope_dim(ropeDim).rope_offset(offset).style(style).theta(theta).yarn_factor(yarnFactor)
                .original_max_position(originalMaxPosition).beta_fast(betaFast).beta_slow(betaSlow)
                .cos_table(null).sin_table(null).table_len(0);
    }

    @Override
    public String toString() {
        return "RopeConfig{dim=" + ropeDim + ", offset=" + offset + ", style="
                + (style == INTERLEAVED ? "interleaved" : "half-split") + ", theta=" + theta
                + (yarnFactor > 1 ? ", yarn factor=" + yarnFactor + " orig=" + originalMaxPosition : "") + "}";
    }
}
