package org.mla4j.tests;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectPackage;

import java.io.PrintWriter;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.TagFilter;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;
import org.junit.platform.launcher.listeners.TestExecutionSummary;
import org.junit.platform.engine.TestExecutionResult;
import org.mla4j.Mla4j;

/**
 * Runs the tests tagged "gpu" (they need a CUDA device; CI never runs them) with no build tool:
 * the GPU bundle's entry point. Prints each test as it ends and a summary; exits 1 on any
 * failure.
 *
 * <pre>java -cp 'lib/*' org.mla4j.tests.GpuSuite</pre>
 */
public final class GpuSuite {
    private GpuSuite() {}

    public static void main(String[] args) {
        Mla4j.install();
        System.out.println("mla4j GPU suite: " + Mla4j.nativeInfo());
        LauncherDiscoveryRequest request = LauncherDiscoveryRequestBuilder.request()
                .selectors(selectPackage("org.mla4j.tests"))
                .filters(TagFilter.includeTags("gpu"))
                .build();
        Launcher launcher = LauncherFactory.create();
        SummaryGeneratingListener summary = new SummaryGeneratingListener();
        TestExecutionListener progress = new TestExecutionListener() {
            private long start;

            @Override
            public void executionStarted(TestIdentifier id) {
                start = System.nanoTime();
            }

            @Override
            public void executionFinished(TestIdentifier id, TestExecutionResult result) {
                if (!id.isTest()) return;
                String status = result.getStatus() == TestExecutionResult.Status.SUCCESSFUL ? "ok" : "FAILED";
                System.out.printf("  %-6s %6.2f s  %s%n", status, (System.nanoTime() - start) / 1e9,
                        id.getLegacyReportingName() + " " + id.getUniqueId().replaceAll(".*\\[class:([^\\]]*)\\].*", "$1"));
                result.getThrowable().ifPresent(t -> System.out.println("         " + t));
            }
        };
        launcher.execute(request, summary, progress);
        TestExecutionSummary s = summary.getSummary();
        s.printFailuresTo(new PrintWriter(System.out), 40);
        s.printTo(new PrintWriter(System.out));
        if (s.getTestsFoundCount() == 0) System.out.println("no gpu-tagged tests found");
        System.exit(s.getTotalFailureCount() == 0 && s.getTestsFoundCount() > 0 ? 0 : 1);
    }
}
