package org.mla4j.tests.readme;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.io.StringWriter;
import java.lang.reflect.InvocationTargetException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import javax.tools.Diagnostic;
import javax.tools.DiagnosticCollector;
import javax.tools.JavaCompiler;
import javax.tools.JavaFileObject;
import javax.tools.StandardJavaFileManager;
import javax.tools.ToolProvider;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import org.mla4j.Mla4j;
import org.mla4j.gpu.Gpu;

/**
 * Every Java code block of README.md compiles and runs as written. The blocks are read from
 * README.md when the test runs (a new block is picked up by itself); each becomes the body of a
 * method in a class with {@link ReadmeFixture}'s imports and the fixture variables it uses,
 * compiled with javac against the test class path and run. A block whose first line is
 * {@code // needs a GPU} is compiled everywhere and run only where a CUDA device is usable.
 * Blocks in other languages must say which ({@code ```bash}, {@code ```xml}, {@code ```text}).
 */
class ReadmeSnippetsTest {
    static final String GPU_MARK = "// needs a GPU";
    private static final Set<String> OTHER_LANGUAGES = Set.of("bash", "sh", "xml", "text", "properties", "json",
            "c", "cpp", "python", "groovy", "kotlin");

    @TempDir
    static Path classes;

    @Test
    void everyBlockSaysItsLanguage() {
        List<String> untagged = ReadmeBlocks.parse(ReadmeBlocks.readme()).stream()
                .filter(b -> !b.language.equals("java") && !OTHER_LANGUAGES.contains(b.language.toLowerCase(Locale.ROOT)))
                .map(b -> b + ": tag it ```java, ```bash, ```xml or ```text")
                .collect(Collectors.toList());
        assertTrue(untagged.isEmpty(), "README code blocks without a known language:\n" + String.join("\n", untagged));
    }

    @TestFactory
    Stream<DynamicTest> everyJavaBlockCompilesAndRuns() throws IOException {
        List<ReadmeBlocks.Block> java = ReadmeBlocks.parse(ReadmeBlocks.readme()).stream()
                .filter(b -> b.language.equals("java")).collect(Collectors.toList());
        assertFalse(java.isEmpty(), "README.md has no ```java blocks");
        List<Source> sources = new ArrayList<>();
        for (ReadmeBlocks.Block b : java) sources.add(Source.of(b, classes));
        Map<Source, String> errors = compileAll(sources, classes);
        return sources.stream().map(src -> DynamicTest.dynamicTest(src.block.toString(), () -> {
            if (errors.containsKey(src)) fail(errors.get(src));
            run(src);
        }));
    }

    /** The generated class of one block. */
    private static final class Source {
        final ReadmeBlocks.Block block;
        final String className;
        final Path file;
        final int firstSnippetLine;

        private Source(ReadmeBlocks.Block block, String className, Path file, int firstSnippetLine) {
            this.block = block;
            this.className = className;
            this.file = file;
            this.firstSnippetLine = firstSnippetLine;
        }

        static Source of(ReadmeBlocks.Block block, Path dir) throws IOException {
            String name = "ReadmeBlockAtLine" + block.fenceLine;
            StringBuilder src = new StringBuilder();
            for (String i : ReadmeFixture.IMPORTS) src.append("import ").append(i).append(";\n");
            src.append("public class ").append(name).append(" {\n")
                    .append("    public static void run() throws Exception {\n");
            for (String d : ReadmeFixture.declarationsFor(block.text)) src.append("        ").append(d).append('\n');
            int first = (int) src.chars().filter(c -> c == '\n').count() + 1;
            src.append(block.text).append("    }\n}\n");
            Path file = dir.resolve(name + ".java");
            Files.writeString(file, src);
            return new Source(block, name, file, first);
        }

        boolean needsGpu() {
            return block.text.strip().startsWith(GPU_MARK);
        }
    }

    /** Compiles every block in one javac run; returns the error report of each block that failed. */
    private static Map<Source, String> compileAll(List<Source> sources, Path out) throws IOException {
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        if (javac == null) fail("no Java compiler in this runtime (run the tests on a JDK)");
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        DiagnosticCollector<JavaFileObject> diagnostics = new DiagnosticCollector<>();
        try (StandardJavaFileManager files = javac.getStandardFileManager(diagnostics, Locale.ROOT, null)) {
            List<String> options = List.of("-classpath", cp, "-d", out.toString(), "-proc:none", "-nowarn");
            javac.getTask(new StringWriter(), files, diagnostics, options, null,
                    files.getJavaFileObjectsFromPaths(sources.stream().map(s -> s.file).collect(Collectors.toList())))
                    .call();
        }
        Map<Source, String> errors = new HashMap<>();
        for (Diagnostic<? extends JavaFileObject> d : diagnostics.getDiagnostics()) {
            if (d.getKind() != Diagnostic.Kind.ERROR || d.getSource() == null) continue;
            for (Source s : sources) {
                if (!Path.of(d.getSource().toUri()).equals(s.file)) continue;
                long line = d.getLineNumber() - s.firstSnippetLine;
                String where = line >= 0 ? "README.md line " + (s.block.firstCodeLine() + line)
                        : "fixture or imports (line " + d.getLineNumber() + " of " + s.file + ")";
                errors.merge(s, s.block + " does not compile (a variable the README assumes can be added to "
                        + "ReadmeFixture):\n", (a, b) -> a);
                errors.merge(s, "  " + where + ": " + d.getMessage(Locale.ROOT).replace("\n", "\n    ") + "\n",
                        String::concat);
            }
        }
        return errors;
    }

    private static void run(Source src) throws Exception {
        if (src.needsGpu()) {
            Mla4j.install();
            Assumptions.assumeTrue(Gpu.available(), src.block + " needs a GPU: compiled, not run (no CUDA device)");
        }
        try (URLClassLoader loader = new URLClassLoader(new URL[] {classes.toUri().toURL()},
                ReadmeSnippetsTest.class.getClassLoader())) {
            loader.loadClass(src.className).getMethod("run").invoke(null);
        } catch (InvocationTargetException e) {
            throw new AssertionError(src.block + " failed when run" + (src.needsGpu() ? "" : " (if it needs a GPU, "
                    + "start it with " + GPU_MARK + ")") + ": " + e.getCause(), e.getCause());
        }
    }
}
