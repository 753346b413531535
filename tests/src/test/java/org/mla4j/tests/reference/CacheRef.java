package org.mla4j.tests.reference;

/**
 * The FP8 paged-cache layouts of ops.md section 2, parsed and written from their description:
 * <ul>
 * <li>V32: each token is {@code dNope} e4m3 bytes, then {@code dNope / tile} float32 scales
 * (little-endian), then {@code dRope} bfloat16 values; a block is {@code blockSize} tokens.</li>
 * <li>MODEL1: a block is {@code blockSize} data rows ({@code dNope} e4m3 bytes then
 * {@code dRope} bfloat16), then {@code blockSize} scale rows ({@code dNope / tile} UE8M0
 * bytes padded with zeros to a multiple of 8), then zeros up to a multiple of the data row.</li>
 * </ul>
 * Dequantised value = e4m3 value * its tile's scale; the bfloat16 part is taken as is.
 */
public final class CacheRef {
    public static final int V32 = 1;
    public static final int MODEL1 = 2;

    public final int kind;
    public final int dNope;
    public final int dRope;
    public final int tile;

    public CacheRef(int kind, int dNope, int dRope, int tile) {
        this.kind = kind;
        this.dNope = dNope;
        this.dRope = dRope;
        this.tile = tile;
    }

    public int dQk() {
        return dNope + dRope;
    }

    public int scales() {
        return dNope / tile;
    }

    /** Value dims: V32 the e4m3 part only, MODEL1 the whole row. */
    public int valueDims() {
        return kind == V32 ? dNope : dNope + dRope;
    }

    /** V32: bytes of a token; MODEL1: bytes of a data row. */
    public int dataRowBytes() {
        return kind == V32 ? dNope + 4 * scales() + 2 * dRope : dNope + 2 * dRope;
    }

    /** MODEL1: bytes of a scale row. */
    public int scaleRowBytes() {
        return ((scales() + 7) / 8) * 8;
    }

    public long blockBytes(long blockSize) {
        if (kind == V32) return blockSize * dataRowBytes();
        long used = blockSize * (dataRowBytes() + scaleRowBytes());
        long rows = (used + dataRowBytes() - 1) / dataRowBytes();
        return rows * dataRowBytes();
    }

    private long dataRowAt(long block, int offset, int blockSize) {
        return block * blockBytes(blockSize) + (long) offset * dataRowBytes();
    }

    private long scaleAt(long block, int offset, int blockSize, int t) {
        if (kind == V32) return dataRowAt(block, offset, blockSize) + dNope + 4L * t;
        return block * blockBytes(blockSize) + (long) blockSize * dataRowBytes() + (long) offset * scaleRowBytes() + t;
    }

    private long ropeAt(long block, int offset, int blockSize) {
        long row = dataRowAt(block, offset, blockSize);
        return kind == V32 ? row + dNope + 4L * scales() : row + dNope;
    }

    /** The scale of tile t of token (block, offset). */
    public double scale(int[] bytes, long block, int offset, int blockSize, int t) {
        long at = scaleAt(block, offset, blockSize, t);
        if (kind == MODEL1) return Formats.ue8m0(bytes[(int) at]);
        int bits = bytes[(int) at] | bytes[(int) at + 1] << 8 | bytes[(int) at + 2] << 16 | bytes[(int) at + 3] << 24;
        return Float.intBitsToFloat(bits);
    }

    /** Dequantised token (block, offset): dQk values. bytes: the whole cache, 0..255 each. */
    public double[] token(int[] bytes, long block, int offset, int blockSize) {
        double[] v = new double[dQk()];
        long row = dataRowAt(block, offset, blockSize);
        for (int t = 0; t < scales(); t++) {
            double s = scale(bytes, block, offset, blockSize, t);
            for (int i = t * tile; i < (t + 1) * tile; i++) v[i] = Formats.e4m3(bytes[(int) (row + i)]) * s;
        }
        long rope = ropeAt(block, offset, blockSize);
        for (int i = 0; i < dRope; i++) {
            int lo = bytes[(int) (rope + 2L * i)], hi = bytes[(int) (rope + 2L * i + 1)];
            v[dNope + i] = Formats.bf16(lo | hi << 8);
        }
        return v;
    }

    /**
     * Quantises kv [numBlocks, blockSize, dQk] (float32 values) into cache bytes (every byte
     * written; padding zero).
     */
    public int[] quantize(double[] kv, int numBlocks, int blockSize) {
        int[] out = new int[(int) (numBlocks * blockBytes(blockSize))];
        for (int b = 0; b < numBlocks; b++) {
            for (int o = 0; o < blockSize; o++) {
                double[] row = new double[dQk()];
                System.arraycopy(kv, (b * blockSize + o) * dQk(), row, 0, dQk());
                writeToken(out, b, o, blockSize, row);
            }
        }
        return out;
    }

    /** Writes one token row (dQk values, taken as float32) in place. */
    public void writeToken(int[] bytes, long block, int offset, int blockSize, double[] row) {
        long data = dataRowAt(block, offset, blockSize);
        if (kind == MODEL1) {
            for (int i = 0; i < scaleRowBytes(); i++) bytes[(int) scaleAt(block, offset, blockSize, 0) + i] = 0;
        }
        for (int t = 0; t < scales(); t++) {
            double amax = 0;
            for (int i = t * tile; i < (t + 1) * tile; i++) amax = Math.max(amax, Math.abs((float) row[i]));
            double s = Formats.tileScale(amax);
            for (int i = t * tile; i < (t + 1) * tile; i++) {
                bytes[(int) (data + i)] = Formats.toE4m3((float) row[i] / s);
            }
            long at = scaleAt(block, offset, blockSize, t);
            if (kind == MODEL1) {
                bytes[(int) at] = Formats.toUe8m0(s);
            } else {
                int bits = Float.floatToRawIntBits((float) s);
                for (int k = 0; k < 4; k++) bytes[(int) at + k] = (bits >>> (8 * k)) & 0xff;
            }
        }
        long rope = ropeAt(block, offset, blockSize);
        for (int i = 0; i < dRope; i++) {
            int h = Formats.toBf16((float) row[dNope + i]);
            bytes[(int) (rope + 2L * i)] = h & 0xff;
            bytes[(int) (rope + 2L * i + 1)] = (h >>> 8) & 0xff;
        }
    }

    /** Marks token (block, offset) as garbage: NaN codes in the e4m3 part and NaN scale/rope. */
    public void poisonToken(int[] bytes, long block, int offset, int blockSize) {
        long data = dataRowAt(block, offset, blockSize);
        for (int i = 0; i < dNope; i++) bytes[(int) (data + i)] = 0x7f;
        for (int t = 0; t < scales(); t++) {
            long at = scaleAt(block, offset, blockSize, t);
            if (kind == MODEL1) {
                bytes[(int) at] = 0xff;
            } else {
                int bits = Float.floatToRawIntBits(Float.NaN);
                for (int k = 0; k < 4; k++) bytes[(int) at + k] = (bits >>> (8 * k)) & 0xff;
            }
        }
        long rope = ropeAt(block, offset, blockSize);
        for (int i = 0; i < dRope; i++) {
            bytes[(int) (rope + 2L * i)] = 0xc0;
            bytes[(int) (rope + 2L * i + 1)] = 0x7f;
        }
    }

    @Override
    public String toString() {
        return (kind == V32 ? "V32" : "MODEL1") + "(" + dNope + "+" + dRope + ", tile " + tile + ")";
    }
}
