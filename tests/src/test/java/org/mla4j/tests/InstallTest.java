package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.mla4j.Mla4j;
import org.mla4j.tests.support.UninstalledMain;

/**
 * Without {@link org.mla4j.Mla4j#install()} every way of using an mla4j op must fail with a clear
 * IllegalStateException that says to call it, never crash the JVM or fail inside ND4J with
 * another message: eager execution, SameDiff output and fit of a new graph, and for a graph
 * saved with install(): load (which succeeds: the op names are registered when ND4J starts),
 * output, eval, gradients and fit. install() is global to a JVM, so this runs
 * {@link UninstalledMain} in a fresh one.
 */
class InstallTest {
    private static final String[] FAILING = {"eager", "samediff", "fit", "loaded-output", "loaded-eval",
        "loaded-gradients", "loaded-fit"};

    @TempDir
    File dir;

    @Test
    void everyPathExplainsTheMissingInstall() throws IOException, InterruptedException {
        Mla4j.install();
        File graph = new File(dir, "rope-graph.sd");
        UninstalledMain.save(graph);

        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
        List<String> cmd = new ArrayList<>(List.of(java, "-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=error",
                "-cp", cp, UninstalledMain.class.getName(), graph.getAbsolutePath()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "the child JVM did not finish in 120 s");
        assertEquals(0, p.exitValue(), "the child JVM must exit normally (no crash); output:\n" + out);

        String load = section(out, "load");
        assertTrue(load.contains("NO EXCEPTION"), "SameDiff.load of a graph with mla4j ops must succeed "
                + "without install() (the names are registered at ND4J start-up); got:\n" + load);
        for (String scenario : FAILING) {
            String part = section(out, scenario);
            String first = part.lines().filter(l -> l.startsWith("THROWN ")).findFirst().orElse("NO EXCEPTION");
            assertTrue(first.startsWith("THROWN java.lang.IllegalStateException") && first.contains("Mla4j.install()"),
                    scenario + ": the exception the caller sees should be an IllegalStateException that says to call "
                    + "Mla4j.install(), got:\n" + part);
        }
    }

    private static String section(String out, String scenario) {
        int at = out.indexOf("SCENARIO " + scenario + "\n");
        assertTrue(at >= 0, "scenario " + scenario + " did not run; output:\n" + out);
        int end = out.indexOf("SCENARIO ", at + 1);
        return out.substring(at, end < 0 ? out.length() : end);
    }
}
