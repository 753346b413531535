package org.mla4j.tests;

import java.util.function.IntFunction;
import org.mla4j.cache.KvCache;
import org.mla4j.layers.MlaV3Config;
import org.nd4j.linalg.api.buffer.DataType;

/** Opens {@link DecodeAbsorbedVsMhaTest}'s prefill-vs-decode measure to the gpu tests. */
public final class DecodeAbsorbedVsMhaAccess {
    private DecodeAbsorbedVsMhaAccess() {}

    /** The largest relative error of token-by-token decode over caches from {@code cache}. */
    public static double maxRelErr(MlaV3Config cfg, DataType type, int batch, int seqLen, long seed,
                                   IntFunction<KvCache> cache) {
        return DecodeAbsorbedVsMhaTest.maxRelErr(cfg, type, batch, seqLen, seed, cache);
    }
}
