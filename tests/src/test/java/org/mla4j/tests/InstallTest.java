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
import org.mla4j.tests.support.UninstalledMain;

/**
 * Without {@link org.mla4j.Mla4j#install()} an mla4j op must fail with a clear
 * IllegalStateException that says to call it, never crash the JVM. install() is global to a
 * JVM, so this runs {@link UninstalledMain} in a fresh one.
 */
class InstallTest {

    @Test
    void opsExplainTheMissingInstall() throws IOException, InterruptedException {
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
        List<String> cmd = new ArrayList<>(List.of(java, "-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=error",
                "-cp", cp, UninstalledMain.class.getName()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the child JVM did not finish in 60 s");
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), "the child JVM must exit normally (no crash); output:\n" + out);
        for (String scenario : new String[] {"eager", "samediff"}) {
            String part = section(out, scenario);
            String first = part.lines().filter(l -> l.startsWith("THROWN ")).findFirst().orElse("NO EXCEPTION");
            assertTrue(part.lines().anyMatch(l -> l.startsWith("THROWN java.lang.IllegalStateException")
                    && l.contains("Mla4j.install()")), scenario + ": expected an IllegalStateException mentioning "
                    + "Mla4j.install(); got:\n" + part);
            assertTrue(first.startsWith("THROWN java.lang.IllegalStateException"),
                    scenario + ": the exception the caller sees should be the IllegalStateException itself, got " + first);
        }
    }

    private static String section(String out, String scenario) {
        int at = out.indexOf("SCENARIO " + scenario);
        assertTrue(at >= 0, "scenario " + scenario + " did not run; output:\n" + out);
        int end = out.indexOf("SCENARIO ", at + 1);
        return out.substring(at, end < 0 ? out.length() : end);
    }
}
