package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.exec.GradientPrintFilter;
import org.mla4j.ops.RopeConfig;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;

/**
 * ND4J prints "Added differentiated op NAME" to System.out for each op of a graph it
 * differentiates; the filter install() puts in front of System.out drops exactly those lines.
 */
class GradientPrintFilterTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    /** Differentiates a small graph with System.out captured, filtered or not; returns what was printed. */
    private static String printedWhileDifferentiating(boolean filtered) {
        PrintStream original = System.out;
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try {
            System.setOut(new PrintStream(bytes, true, StandardCharsets.UTF_8));
            if (filtered) GradientPrintFilter.install();
            System.out.println("before");
            SameDiff sd = SameDiff.create();
            SDVariable x = sd.var("x", Nd4j.rand(DataType.FLOAT, 3, 2, 4));
            SDVariable pos = sd.constant("pos", Nd4j.createFromArray(0, 1, 2));
            SDVariable y = Mla4j.ops(sd).rope(x, pos, RopeConfig.interleaved(4, 10000), false);
            sd.setLossVariables(y.mul(y).sum().rename("loss"));
            sd.calculateGradients(Map.of(), "x");
            System.out.print("after ");
            System.out.println(42);
        } finally {
            System.out.flush();
            System.setOut(original);
        }
        return bytes.toString(StandardCharsets.UTF_8);
    }

    @Test
    void nd4jPrintsTheLinesWithoutTheFilter() {
        String out = printedWhileDifferentiating(false);
        assertTrue(out.contains("Added differentiated op mla_rope"), "control: ND4J should print them, got:\n" + out);
    }

    @Test
    void theFilterDropsThemAndNothingElse() {
        String out = printedWhileDifferentiating(true);
        assertFalse(out.contains("Added differentiated op"), "filtered output still holds ND4J's lines:\n" + out);
        assertTrue(out.startsWith("before" + System.lineSeparator()) && out.endsWith("after 42" + System.lineSeparator()),
                "other output must pass unchanged, got:\n" + out);
    }
}
