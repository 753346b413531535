package org.mla4j.ops;

import java.util.List;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;

/**
 * Layout of a paged KV cache (ops.md sections 2 and 5).
 * <ul>
 * <li>{@link #PLAIN}: an array {@code [num_blocks, block_size, h_kv, d_qk]} of a float type.</li>
 * <li>{@code V32}: per token {@code dNope} float8_e4m3 values, {@code dNope/tile} float32 scales,
 * {@code dRope} bfloat16 values (DeepSeek V3.2: 512/64/128, 656 bytes a token).</li>
 * <li>{@code MODEL1}: per block, {@code block_size} rows of (dNope fp8, dRope bf16) then
 * {@code block_size} rows of UE8M0 scales padded to 8 bytes, the block padded to a multiple of
 * the data row (DeepSeek V4: 448/64/64).</li>
 * </ul>
 * FP8 caches are UINT8 arrays {@code [num_blocks, blockBytes(block_size)]}.
 */
public final class CacheLayout {
    public static final int KIND_PLAIN = MlaLib.MLA_CACHE_PLAIN;
    public static final int KIND_V32 = MlaLib.MLA_CACHE_V32;
    public static final int KIND_MODEL1 = MlaLib.MLA_CACHE_MODEL1;

    public static final CacheLayout PLAIN = new CacheLayout(KIND_PLAIN, 0, 0, 0);
    public static final CacheLayout V32 = new CacheLayout(KIND_V32, 512, 64, 128);
    public static final CacheLayout MODEL1 = new CacheLayout(KIND_MODEL1, 448, 64, 64);

    public final int kind;
    public final int dNope;
    public final int dRope;
    public final int tile;

    private CacheLayout(int kind, int dNope, int dRope, int tile) {
        this.kind = kind;
        this.dNope = dNope;
        this.dRope = dRope;
        this.tile = tile;
    }

    /** A V32-style layout with other sizes (small models). */
    public static CacheLayout v32(int dNope, int dRope, int tile) {
        return checked("CacheLayout.v32", KIND_V32, dNope, dRope, tile);
    }

    /** A MODEL1-style layout with other sizes (small models, e.g. 48/16/16). */
    public static CacheLayout model1(int dNope, int dRope, int tile) {
        return checked("CacheLayout.model1", KIND_MODEL1, dNope, dRope, tile);
    }

    /** The native layout rules, checked where the layout is built (ops.md section 5). */
    private static CacheLayout checked(String where, int kind, int dNope, int dRope, int tile) {
        if (dNope <= 0 || tile <= 0 || dNope % tile != 0) {
            throw new org.mla4j.MlaException(where + ": dNope (" + dNope + ") must be a positive multiple of tile ("
                    + tile + " > 0)");
        }
        if (dRope < 0 || dRope % 2 != 0) {
            throw new org.mla4j.MlaException(where + ": dRope must be even and >= 0, got " + dRope);
        }
        return new CacheLayout(kind, dNope, dRope, tile);
    }

    public boolean isFp8() {
        return kind != KIND_PLAIN;
    }

    /** d_qk of a token row (FP8 kinds). */
    public int dQk() {
        return dNope + dRope;
    }

    /** Dims of the value vector: V32 the latent part, MODEL1 the whole row. */
    public int valueDims() {
        return kind == KIND_V32 ? dNope : dNope + dRope;
    }

    /** Bytes of one page block of an FP8 cache. */
    public long blockBytes(long blockSize) {
        NativeLib.load();
        long b = MlaLib.mla_cache_block_bytes(kind, blockSize, dNope, dRope, tile);
        if (b < 0) {
            throw new org.mla4j.MlaException("CacheLayout: invalid layout " + this + " for block size " + blockSize);
        }
        return b;
    }

    void addArgs(MlaOp op, long blockSize) {
        op.addIArgument(kind, dNope, dRope, tile, blockSize);
    }

    static CacheLayout fromArgs(List<Long> i, int at) {
        int kind = i.get(at).intValue();
        if (kind == KIND_PLAIN) return PLAIN;
        return new CacheLayout(kind, i.get(at + 1).intValue(), i.get(at + 2).intValue(), i.get(at + 3).intValue());
    }

    /** Number of integer arguments {@link #addArgs} writes. */
    static final int NUM_IARGS = 5;

    public String name() {
        return kind == KIND_PLAIN ? "PLAIN" : kind == KIND_V32 ? "V32" : "MODEL1";
    }

    @Override
    public String toString() {
        return kind == KIND_PLAIN ? "PLAIN" : name() + "(" + dNope + "+" + dRope + ", tile " + tile + ")";
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof CacheLayout)) return false;
        CacheLayout c = (CacheLayout) o;
        return kind == c.kind && dNope == c.dNope && dRope == c.dRope && tile == c.tile;
    }

    @Override
    public int hashCode() {
        return ((kind * 31 + dNope) * 31 + dRope) * 31 + tile;
    }
}
