package org.mla4j.tests.readme;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** The fenced code blocks of a Markdown file, with their language tag and first line. */
public final class ReadmeBlocks {
    private ReadmeBlocks() {}

    /** A fenced block: its tag ("" when untagged), the line of its opening fence (1-based), its text. */
    public static final class Block {
        public final String language;
        public final int fenceLine;
        public final String text;

        Block(String language, int fenceLine, String text) {
            this.language = language;
            this.fenceLine = fenceLine;
            this.text = text;
        }

        /** Line of the README holding the block's first line of code. */
        public int firstCodeLine() {
            return fenceLine + 1;
        }

        @Override
        public String toString() {
            return "README.md line " + fenceLine + " (```" + language + ")";
        }
    }

    /** The README of the repository: found from the working directory upwards. */
    public static Path readme() {
        for (Path dir = Path.of("").toAbsolutePath(); dir != null; dir = dir.getParent()) {
            Path p = dir.resolve("README.md");
            if (Files.isRegularFile(p) && Files.isRegularFile(dir.resolve("op-native/include/mla/mla.h"))) return p;
        }
        throw new IllegalStateException("README.md of the repository not found above " + Path.of("").toAbsolutePath());
    }

    /** Every fenced block (``` or ~~~ fences at the start of a line, up to 3 spaces of indent). */
    public static List<Block> parse(Path markdown) {
        List<String> lines;
        try {
            lines = Files.readAllLines(markdown);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        List<Block> blocks = new ArrayList<>();
        for (int i = 0; i < lines.size(); i++) {
            String fence = fence(lines.get(i));
            if (fence == null) continue;
            String language = lines.get(i).trim().substring(fence.length()).trim();
            StringBuilder text = new StringBuilder();
            int j = i + 1;
            while (j < lines.size() && !isClosing(lines.get(j), fence)) text.append(lines.get(j++)).append('\n');
            if (j == lines.size()) throw new IllegalStateException("README.md line " + (i + 1) + ": unclosed code block");
            blocks.add(new Block(language, i + 1, text.toString()));
            i = j;
        }
        return blocks;
    }

    private static String fence(String line) {
        String t = line.stripLeading();
        if (line.length() - t.length() > 3) return null;
        if (t.startsWith("```")) return t.substring(0, t.length() - t.replaceFirst("^`+", "").length());
        if (t.startsWith("~~~")) return t.substring(0, t.length() - t.replaceFirst("^~+", "").length());
        return null;
    }

    private static boolean isClosing(String line, String fence) {
        String t = line.strip();
        return t.startsWith(fence) && t.chars().allMatch(c -> c == fence.charAt(0));
    }
}
