/*
 * mangen: writes the man page fflua.1 from the texts of fflua's --help.
 *
 *   mangen OUT.1
 *
 * The texts are help.c's, which the program prints for --help, so the page
 * says what the program says. The page has the sections NAME, SYNOPSIS,
 * DESCRIPTION, OPTIONS, COMMANDS (with the usage of head and worker),
 * ENVIRONMENT and SEE ALSO, and no date, so that a build is reproducible.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fflua.h"
#include "help.h"

/* Writes s[0..n) escaped for roff: backslashes and dashes escaped, and a
 * leading '.' or '\'' (control characters at a line's start) made text. */
static void put_text(FILE *f, const char *s, size_t n, int line_start) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (line_start && (c == '.' || c == '\''))
            fputs("\\&", f);
        line_start = c == '\n';
        if (c == '\\')
            fputs("\\e", f);
        else if (c == '-')
            fputs("\\-", f);
        else
            fputc(c, f);
    }
}

static void put_str(FILE *f, const char *s) {
    put_text(f, s, strlen(s), 1);
}

/* A tagged paragraph per item, the name in bold. */
static void put_items(FILE *f, const struct ff_help_item *items) {
    for (const struct ff_help_item *it = items; it->name != NULL; it++) {
        fputs(".TP\n\\fB", f);
        put_text(f, it->name, strlen(it->name), 0);
        fputs("\\fR\n", f);
        put_str(f, it->text);
        fputc('\n', f);
    }
}

/* A usage text of help.h: its "usage:" lines as they are (no fill), then
 * its paragraph, whose lines start with two spaces, filled. */
static void put_usage(FILE *f, const char *name, const char *usage) {
    fprintf(f, ".SS \"fflua %s\"\n.nf\n", name);
    const char *p = usage;
    while (*p != '\0' && !(p[0] == ' ' && p[1] == ' ' && p[2] != ' ')) {
        size_t n = strcspn(p, "\n");
        /* Without "usage: ", and continuations indented as much less. */
        if (n >= 7 && (strncmp(p, "usage: ", 7) == 0 || strncmp(p, "       ", 7) == 0))
            p += 7, n -= 7;
        put_text(f, p, n, 1);
        fputc('\n', f);
        p += n + (p[n] == '\n');
    }
    fputs(".fi\n", f);
    while (*p != '\0') {
        p += strspn(p, " ");
        size_t n = strcspn(p, "\n");
        put_text(f, p, n, 1);
        fputc('\n', f);
        p += n + (p[n] == '\n');
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fputs("usage: mangen OUT.1\n", stderr);
        return 2;
    }
    FILE *f = fopen(argv[1], "w");
    if (f == NULL) {
        perror(argv[1]);
        return 1;
    }
    fputs(".\\\" Written by tools/mangen.c from src/help.c, the texts of fflua --help.\n", f);
    fprintf(f, ".TH FFLUA 1 \"\" \"fflua %s\" \"User Commands\"\n.nh\n.ad l\n", FFLUA_VERSION);
    fputs(".SH NAME\nfflua \\- ", f);
    put_text(f, ff_help_summary, strlen(ff_help_summary) - 1, 0); /* without its period */
    fputs("\n.SH SYNOPSIS\n", f);
    for (int i = 0; ff_help_synopsis[i] != NULL; i++) {
        if (i > 0)
            fputs(".br\n", f);
        const char *rest = strstr(ff_help_synopsis[i], "%s") + 2;
        fputs("\\fB" FF_PROGNAME "\\fR", f);
        put_text(f, rest, strlen(rest), 0);
        fputc('\n', f);
    }
    fputs(".SH DESCRIPTION\n", f);
    put_str(f, "fflua runs Lua 5.4 scripts as the stock lua5.4 interpreter does, with the "
               "functionfuse package built in: require \"functionfuse\" gives workflows of Lua "
               "functions, run by fflua's C engine in the calling process or on a cluster.\n");
    fputs(".PP\n", f);
    put_str(f, ff_help_intro);
    fputs(".SH OPTIONS\n", f);
    put_items(f, ff_help_options);
    fputs(".SH COMMANDS\nThe first argument, when it is one of these names, selects a command; "
          "\\fBfflua\\fR \\fICOMMAND\\fR \\fB\\-\\-help\\fR describes it.\n",
          f);
    put_items(f, ff_help_commands);
    put_usage(f, "head", ff_help_head_usage);
    put_usage(f, "worker", ff_help_worker_usage);
    fputs(".SH ENVIRONMENT\n", f);
    put_items(f, ff_help_environment);
    fputs(".SH SEE ALSO\n.BR lua5.4 (1)\n.PP\nThe documentation in the fflua source tree: "
          "README.md, docs/guide.md, docs/cli.md, docs/cluster.md, docs/embedding.md.\n",
          f);
    if (fclose(f) != 0) {
        perror(argv[1]);
        return 1;
    }
    return 0;
}
