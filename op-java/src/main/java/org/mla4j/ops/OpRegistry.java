package org.mla4j.ops;

import java.util.List;
import java.util.Map;
import org.nd4j.autodiff.functions.DifferentialFunction;
import org.nd4j.imports.converters.ImportClassMapping;

/**
 * Registers every mla4j op by name in ND4J's op-name map, so SameDiff can re-create the ops
 * when it copies a graph (gradients) or loads one from a file.
 */
public final class OpRegistry {
    private OpRegistry() {}

    /** All op classes of the plugin. */
    public static final List<Class<? extends MlaOp>> OPS = List.of(
            DenseDecode.class, SparseDecode.class, SparsePrefill.class, SparsePrefillBp.class,
            Attention.class, AttentionBp.class, KvQuantize.class, KvDequantize.class, KvAppend.class,
            IndexerScores.class, IndexerScoresBp.class, IndexerTopK.class, TopK.class, Rope.class,
            Embedding.class, EmbeddingBp.class);

    public static void registerAll() {
        Map<String, DifferentialFunction> map = ImportClassMapping.getOpNameMapping();
        for (Class<? extends MlaOp> c : OPS) {
            MlaOp op;
            try {
                op = c.getDeclaredConstructor().newInstance();
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("mla4j: cannot create " + c.getName(), e);
            }
            DifferentialFunction previous = map.get(op.opName());
            if (previous != null && !c.isInstance(previous)) {
                throw new IllegalStateException("mla4j: op name " + op.opName() + " is already taken by "
                        + previous.getClass().getName());
            }
            map.put(op.opName(), op);
        }
    }
}
