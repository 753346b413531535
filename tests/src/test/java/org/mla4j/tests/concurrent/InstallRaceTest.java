package org.mla4j.tests.concurrent;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * {@link org.mla4j.Mla4j#install()} called by many threads at once in a fresh JVM (install is
 * global to a JVM, so this runs {@link InstallRaceMain} in a process of its own): the native
 * library loads once, the ops register once, one executioner serves every thread, and every
 * thread's first op runs correctly.
 */
class InstallRaceTest {

    @Test
    void racingInstallsLoadAndRegisterOnce() throws Exception {
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
        Path log = Files.createTempFile("mla4j-install-race", ".log");
        Process p = new ProcessBuilder(List.of(java, "-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=error",
                "-cp", cp, InstallRaceMain.class.getName())).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        boolean finished = p.waitFor(120, TimeUnit.SECONDS);
        if (!finished) p.destroyForcibly();
        String text = Files.readString(log, StandardCharsets.UTF_8);
        Files.deleteIfExists(log);
        assertTrue(finished, "the child JVM did not finish in 120 s; output:\n" + text);
        assertEquals(0, p.exitValue(), "the child JVM must exit normally; output:\n" + text);
        assertTrue(text.contains("DONE"), "the child JVM did not finish its checks; output:\n" + text);
        assertTrue(text.lines().noneMatch(l -> l.startsWith("FAIL")), text);
    }
}
