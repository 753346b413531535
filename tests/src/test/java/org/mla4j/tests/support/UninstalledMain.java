package org.mla4j.tests.support;

import java.io.File;
import java.util.Collections;
import java.util.Map;
import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.mla4j.ops.RopeConfig;
import org.mla4j.samediff.SDMla;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * Runs mla4j ops in a JVM where {@link Mla4j#install()} was never called (started by
 * InstallTest in a separate process, since install() is global to a JVM). For each scenario it
 * prints one line: "SCENARIO name" then, for the thrown exception and each cause,
 * "THROWN class: message", or "NO EXCEPTION".
 *
 * <p>With an argument, the path of a graph saved by an installed JVM ({@link #savedGraph}),
 * it also loads that graph and runs, evaluates, differentiates and fits it.
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
            sd.output(Collections.emptyMap(), y.name());
        });
        report("fit", () -> savedGraph().fit(feeds()));
        if (args.length > 0) {
            SameDiff[] loaded = new SameDiff[1];
            report("load", () -> loaded[0] = SameDiff.load(new File(args[0]), true));
            if (loaded[0] != null) {
                SameDiff sd = loaded[0];
                Map<String, INDArray> ph = Map.of("in", feeds().getFeatures(), "label", feeds().getLabels());
                report("loaded-output", () -> sd.output(ph, "loss"));
                report("loaded-eval", () -> sd.getVariable("loss").eval(ph));
                report("loaded-gradients", () -> sd.calculateGradients(ph, "w"));
                report("loaded-fit", () -> sd.fit(feeds()));
            }
        }
        System.out.flush();
        System.exit(0);
    }

    /**
     * A small trainable graph with an mla4j op: loss = mean((rope(in * w) - label)^2), with a
     * training configuration (in, label from a DataSet). Building it needs no install().
     */
    public static SameDiff savedGraph() {
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("in", DataType.FLOAT, 1, 2, 1, 4);
        SDVariable label = sd.placeHolder("label", DataType.FLOAT, 1, 2, 1, 4);
        SDVariable w = sd.var("w", Nd4j.rand(DataType.FLOAT, 1, 1, 1, 4));
        SDVariable pos = sd.constant("pos", Nd4j.createFromArray(new int[] {0, 1}).reshape(1, 2));
        SDVariable y = new SDMla(sd).rope(in.mul(w), pos, RopeConfig.interleaved(4, 10000), false);
        SDVariable diff = y.sub(label);
        sd.setLossVariables(diff.mul(diff).mean().rename("loss"));
        sd.setTrainingConfig(TrainingConfig.builder().updater(new Sgd(0.1))
                .dataSetFeatureMapping("in").dataSetLabelMapping("label").build());
        return sd;
    }

    /** Saves {@link #savedGraph()} to {@code file} (the caller's JVM has mla4j installed). */
    public static void save(File file) {
        savedGraph().save(file, true);
    }

    private static DataSet feeds() {
        return new DataSet(Nd4j.rand(DataType.FLOAT, 1, 2, 1, 4), Nd4j.rand(DataType.FLOAT, 1, 2, 1, 4));
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
