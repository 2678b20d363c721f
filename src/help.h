/*
 * help.h: the texts of `fflua --help` and of the head's and the worker's
 * --help, in one place for the two programs that print them: fflua itself
 * (main.c) and mangen (tools/mangen.c), which writes the man page fflua.1
 * from them at build time, so the page and --help cannot drift apart.
 *
 * Everything here is constant data: static strings and tables ending with
 * an entry whose first field is NULL. Any thread may read it.
 */
#ifndef FFLUA_HELP_H
#define FFLUA_HELP_H

/* One option, command or environment variable and what it does. */
struct ff_help_item {
    const char *name;
    const char *text;
};

/* One line: what fflua is (after "fflua VERSION: "). */
extern const char ff_help_summary[];

/* A paragraph after the summary: what fflua does without arguments. */
extern const char ff_help_intro[];

/* The synopsis lines, each with %s where the program's name goes. */
extern const char *const ff_help_synopsis[];

/* The interpreter's options, as lua5.4's, and --help, --version. */
extern const struct ff_help_item ff_help_options[];

/* The subcommands and what each does; "fflua COMMAND --help" says more. */
extern const struct ff_help_item ff_help_commands[];

/* The environment variables fflua reads. */
extern const struct ff_help_item ff_help_environment[];

/* The usage of `fflua head` and of `fflua worker`: a "usage:" line and its
 * continuations, then a paragraph indented by two spaces. */
extern const char ff_help_head_usage[];
extern const char ff_help_worker_usage[];

#endif /* FFLUA_HELP_H */
