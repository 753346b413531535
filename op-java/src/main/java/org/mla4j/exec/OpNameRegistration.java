package org.mla4j.exec;

import org.mla4j.ops.OpRegistry;
import org.nd4j.linalg.env.EnvironmentalAction;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Registers the mla4j op names with ND4J as ND4J starts, before {@link org.mla4j.Mla4j#install()}
 * has run. ND4J 1.0.0-M2.1 has no discovery hook for foreign ops; the one service it looks up
 * at start-up is {@link EnvironmentalAction} (META-INF/services), whose implementations it
 * creates while it initialises. Creating this class registers the names only: no native
 * library is loaded and ND4J's executioner is left alone.
 *
 * <p>Why: without the names, {@code SameDiff.load} of a graph that holds mla4j ops fails deep
 * inside ND4J ("No op known for hash: 0 and name mla_rope"). With them, the graph loads, and the
 * first attempt to run, differentiate or fit it reaches an mla4j op, which says to call
 * {@code Mla4j.install()}.
 */
public final class OpNameRegistration implements EnvironmentalAction {
    private static final Logger LOG = LoggerFactory.getLogger(OpNameRegistration.class);

    public OpNameRegistration() {
        try {
            OpRegistry.registerAll();
        } catch (Throwable t) {
            // Never break ND4J's start-up: install() registers the names again and reports a failure.
            LOG.debug("mla4j: op names not registered at ND4J start-up", t);
        }
    }

    /** An environment variable nobody sets: the action exists for its constructor. */
    @Override
    public String targetVariable() {
        return "MLA4J_REGISTER_OP_NAMES";
    }

    @Override
    public void process(String value) {
        // nothing: registration happens when ND4J creates this action
    }
}
