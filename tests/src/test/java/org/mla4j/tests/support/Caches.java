package org.mla4j.tests.support;

import org.mla4j.ops.CacheLayout;
import org.mla4j.tests.reference.CacheRef;
import org.mla4j.tests.reference.Ref;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Builds paged caches for tests: a random cache in a layout, as the ND4J array an op takes and
 * as the reference's view of the same bytes or values.
 */
public final class Caches {
    private Caches() {}

    /** Small layouts of the size used by the test models, plus the DeepSeek defaults. */
    public static final CacheLayout V32_SMALL = CacheLayout.v32(64, 16, 32);
    public static final CacheLayout MODEL1_SMALL = CacheLayout.model1(48, 16, 16);

    /** The reference description of an FP8 layout. */
    public static CacheRef ref(CacheLayout l) {
        if (!l.isFp8()) throw new IllegalArgumentException("not an FP8 layout: " + l);
        return new CacheRef(l.kind == CacheLayout.KIND_V32 ? CacheRef.V32 : CacheRef.MODEL1, l.dNope, l.dRope, l.tile);
    }

    /** A cache as an op input and as the reference reads it. */
    public static final class Built {
        public final INDArray array;
        public final Ref.Paged paged;
        /** PLAIN: the values (rounded to the cache type); FP8: null. */
        public final double[] values;
        /** FP8: the bytes; PLAIN: null. */
        public final int[] bytes;

        Built(INDArray array, Ref.Paged paged, double[] values, int[] bytes) {
            this.array = array;
            this.paged = paged;
            this.values = values;
            this.bytes = bytes;
        }
    }

    /**
     * A random cache of numBlocks x blockSize tokens (d dims, hKv heads for PLAIN). Tokens for
     * which {@code garbage[block * blockSize + offset]} is true hold NaN (PLAIN) or NaN codes
     * and scales (FP8): a correct op never reads them.
     */
    public static Built random(TestRandom r, CacheLayout l, DataType plainType, int numBlocks, int blockSize, int hKv,
                               int d, boolean[] garbage) {
        int tokens = numBlocks * blockSize;
        if (!l.isFp8()) {
            double[] v = r.normal(tokens * hKv * d);
            if (garbage != null) {
                for (int t = 0; t < tokens; t++) {
                    if (!garbage[t]) continue;
                    for (int i = 0; i < hKv * d; i++) v[t * hKv * d + i] = Double.NaN;
                }
            }
            INDArray a = Nd.array(v, plainType, numBlocks, blockSize, hKv, d);
            double[] seen = Nd.values(a);
            return new Built(a, Ref.plain(seen, numBlocks, blockSize, hKv, d), seen, null);
        }
        CacheRef c = ref(l);
        double[] kv = r.normal(tokens * c.dQk());
        int[] bytes = c.quantize(kv, numBlocks, blockSize);
        if (garbage != null) {
            for (int t = 0; t < tokens; t++) if (garbage[t]) c.poisonToken(bytes, t / blockSize, t % blockSize, blockSize);
        }
        INDArray a = Nd.bytes(bytes, numBlocks, c.blockBytes(blockSize));
        return new Built(a, Ref.fp8(bytes, c, numBlocks, blockSize), null, bytes);
    }
}
