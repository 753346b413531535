package org.mla4j.tests.support;

import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.mla4j.ops.RopeConfig;
import org.mla4j.samediff.SDMla;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Runs mla4j ops in a JVM where {@link Mla4j#install()} was never called (started by
 * InstallTest in a separate process, since install() is global to a JVM). For each scenario it
 * prints one line: "SCENARIO name" then, for the thrown exception and each cause,
 * "THROWN class: message", or "NO EXCEPTION".
 */
public final class UninstalledMain {
    private UninstalledMain() {}

    public static void main(String[] args) {
        if (Mla4j.isInstalled()) {
            System.out.println("ALREADY INSTALLED");
            System.exit(3);
        }
        INDArray q = Nd4j.rand(DataType.FLOAT, 1, 2, 1, 4);
        report("eager", () -> Nd4j.exec(new Attention(q, q, q, null, null, null, null, new Attention.Options())));
        report("samediff", () -> {
            SameDiff sd = SameDiff.create();
            SDVariable x = sd.var("x", q);
            SDVariable pos = sd.constant("pos", Nd4j.createFromArray(new int[] {0, 1}).reshape(1, 2));
            SDVariable y = new SDMla(sd).rope(x, pos, RopeConfig.interleaved(4, 10000), false);
            sd.output(java.util.Collections.emptyMap(), y.name());
        });
        System.out.flush();
        System.exit(0);
    }

    private static void report(String scenario, Runnable r) {
        System.out.println("SCENARIO " + scenario);
        try {
            r.run();
            System.out.println("NO EXCEPTION");
        } catch (Throwable t) {
            for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
                System.out.println("THROWN " + c.getClass().getName() + ": " + String.valueOf(c.getMessage()).replace('\n', ' '));
            }
        }
    }
}
