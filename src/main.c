/*
 * main.c: the fflua program.
 *
 * fflua is a Lua 5.4 interpreter that behaves as the stock `lua5.4` command
 * (options, `arg`, LUA_INIT, exit status, error reports) with the fflua
 * package built in, an interactive REPL with line editing and completion
 * (repl.c), and subcommands for the cluster and the store. This file
 * parses the arguments and dispatches; protected calls, reports and
 * signals are cli.c's. The structure follows lua.c: everything after the
 * state is created runs in protected mode under pmain, so even a memory
 * error is reported and the state is always closed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "cli.h"
#include "cluster.h"
#include "fflua.h"
#include "help.h"
#include "repl.h"
#include "sched.h"

/* --- options ------------------------------------------------------------- */

enum {
    HAS_ERROR = 1, /* bad option */
    HAS_I = 2,     /* -i */
    HAS_V = 4,     /* -v */
    HAS_E = 8,     /* -e */
    HAS_NOENV = 16 /* -E */
};

/* Scans the options before the script name. *first becomes the index of the
 * script name (argc when there is none) or of the bad option. */
static int collect_args(char **argv, int *first) {
    int flags = 0, i;
    for (i = 1; argv[i] != NULL; i++) {
        *first = i;
        const char *a = argv[i];
        if (a[0] != '-')
            return flags; /* the script */
        switch (a[1]) {
        case '-': /* "--" */
            if (a[2] != '\0')
                return HAS_ERROR;
            *first = i + 1;
            return flags;
        case '\0': /* "-": the script is stdin */
            return flags;
        case 'E':
            if (a[2] != '\0')
                return HAS_ERROR;
            flags |= HAS_NOENV;
            break;
        case 'W':
            if (a[2] != '\0')
                return HAS_ERROR;
            break;
        case 'i':
            flags |= HAS_I; /* -i implies -v */
            /* fallthrough */
        case 'v':
            if (a[2] != '\0')
                return HAS_ERROR;
            flags |= HAS_V;
            break;
        case 'e':
            flags |= HAS_E;
            /* fallthrough */
        case 'l':
            if (a[2] == '\0') {
                i++;
                if (argv[i] == NULL || argv[i][0] == '-') {
                    *first = i - 1;
                    return HAS_ERROR;
                }
            }
            break;
        default:
            return HAS_ERROR;
        }
    }
    *first = i;
    return flags;
}

/* Prints items as "  NAME  TEXT", the texts in a column from width on
 * (or two spaces after a longer name) and wrapped before column 79. */
static void print_items(FILE *f, const struct ff_help_item *items, int width) {
    for (const struct ff_help_item *it = items; it->name != NULL; it++) {
        int col = fprintf(f, "  %-*s", width - 2, it->name);
        if ((int)strlen(it->name) > width - 4)
            col += fprintf(f, "  ");
        const char *t = it->text;
        while (*t != '\0') {
            size_t n = strlen(t), room = col < 79 ? (size_t)(79 - col) : 1;
            if (n > room) { /* break at the last space that fits */
                size_t cut = room;
                while (cut > 0 && t[cut] != ' ')
                    cut--;
                n = cut > 0 ? cut : strcspn(t, " ");
            }
            fprintf(f, "%.*s\n", (int)n, t);
            t += n;
            t += strspn(t, " ");
            if (*t != '\0')
                col = fprintf(f, "%*s", width, "");
        }
    }
}

/* The usage, with the program called name (argv[0] after a bad option, as
 * lua.c prints it). */
static void print_usage(FILE *f, const char *name) {
    for (int i = 0; ff_help_synopsis[i] != NULL; i++) {
        fputs(i == 0 ? "usage: " : "       ", f);
        fprintf(f, ff_help_synopsis[i], name);
        fputc('\n', f);
    }
    fputs("Options (as in lua5.4):\n", f);
    print_items(f, ff_help_options, 14);
}

/* --- subcommands ----------------------------------------------------------
 * The first argument, when it is exactly one of these names, selects a
 * subcommand; a script with such a name runs as ./name. */
struct subcommand {
    const char *name;                    /* as in ff_help_commands, which --help lists */
    const char *module;                  /* the Lua module whose main(args) implements it */
    int (*cmain)(int argc, char **argv); /* or the C function that does */
};

static int head_main(int argc, char **argv);
static int worker_main(int argc, char **argv);

static const struct subcommand subcommands[] = {
    {"store", "functionfuse.cli.store", NULL},
    {"head", NULL, head_main},
    {"worker", NULL, worker_main},
    {"status", "functionfuse.cli.status", NULL},
    {"graph", "functionfuse.cli.graph", NULL},
    {"report", "functionfuse.cli.report", NULL},
    {NULL, NULL, NULL},
};

/* --- head and worker ------------------------------------------------------ */

/* The value of option argv[*i] ("--opt value" or "--opt=value"), or NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *name) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

static int bad_option(const char *cmd, const char *arg, const char *usage) {
    fprintf(stderr, FF_PROGNAME " %s: bad or incomplete option '%s'\n%s", cmd, arg, usage);
    return 2;
}

/* What an option's value must be. */
enum { OPT_INT, OPT_REAL, OPT_CPUS };

/* Parses the value v of option opt of `fflua cmd` into *out: a plain
 * decimal number (no "inf", "nan", hex or spaces) from min to max, an
 * integer for OPT_INT, with at most 4 decimals for OPT_CPUS. Otherwise
 * prints "fflua CMD: bad OPT 'V': WHAT expected" and returns -1. */
static int opt_number(const char *cmd, const char *opt, const char *v, int kind, double min,
                      double max, const char *what, double *out) {
    char *end = (char *)v;
    double d = 0;
    const char *digits = kind == OPT_INT ? "0123456789" : "0123456789.eE+-";
    int64_t units;
    if (v[0] != '\0' && strspn(v, digits) == strlen(v))
        d = strtod(v, &end);
    if (end == v || *end != '\0' || !(d >= min && d <= max) ||
        (kind == OPT_CPUS && ff_sched_amount(d, &units) != 0)) {
        fprintf(stderr, FF_PROGNAME " %s: bad %s '%s': %s expected\n", cmd, opt, v, what);
        return -1;
    }
    *out = d;
    return 0;
}

/* The name of option argv[i] without "=value", for messages. */
static const char *opt_name(const char *arg, char *buf, size_t cap) {
    snprintf(buf, cap, "%.*s", (int)strcspn(arg, "="), arg);
    return buf;
}

#define CPUS_WHAT                                                                                  \
    "a number of CPUs from 0 to " FFLUA_STRINGIFY(FF_MAX_CPUS) ", with at most 4 decimals"

static int head_main(int argc, char **argv) {
    ff_head_opts o = {.host = "127.0.0.1", .port = FF_DEFAULT_PORT, .num_cpus = -1, .workers = -1};
    for (int i = 2; i < argc; i++) {
        const char *v, *opt = argv[i];
        char name[64];
        double d;
        opt_name(opt, name, sizeof name);
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(ff_help_head_usage, stdout);
            return 0;
        } else if ((v = opt_value(argc, argv, &i, "--host")) != NULL) {
            o.host = v;
        } else if ((v = opt_value(argc, argv, &i, "--port")) != NULL) {
            if (opt_number("head", name, v, OPT_INT, 0, 65535, "an integer from 0 to 65535", &d) !=
                0)
                return 2;
            o.port = (int)d;
        } else if ((v = opt_value(argc, argv, &i, "--num-cpus")) != NULL) {
            if (opt_number("head", name, v, OPT_CPUS, 0, FF_MAX_CPUS, CPUS_WHAT, &o.num_cpus))
                return 2;
        } else if ((v = opt_value(argc, argv, &i, "--workers")) != NULL) {
            if (opt_number("head", name, v, OPT_INT, 0, FF_MAX_LOCAL_WORKERS,
                           "an integer from 0 "
                           "to " FFLUA_STRINGIFY(FF_MAX_LOCAL_WORKERS),
                           &d) != 0)
                return 2;
            o.workers = (int)d;
        } else if ((v = opt_value(argc, argv, &i, "--resources")) != NULL) {
            o.resources = v;
        } else if ((v = opt_value(argc, argv, &i, "--token-file")) != NULL) {
            o.token_file = v;
        } else if ((v = opt_value(argc, argv, &i, "--ready-file")) != NULL) {
            o.ready_file = v;
        } else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            o.quiet = 1;
        } else if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
            o.verbose = 1;
        } else if ((v = opt_value(argc, argv, &i, "--handshake-timeout")) != NULL) {
            if (opt_number("head", name, v, OPT_REAL, 0.01, 3600,
                           "a number of seconds from 0.01 "
                           "to 3600",
                           &o.handshake_timeout) != 0)
                return 2;
        } else if ((v = opt_value(argc, argv, &i, "--heartbeat-timeout")) != NULL) {
            if (opt_number("head", name, v, OPT_REAL, 0.1, 3600,
                           "a number of seconds from 0.1 to 3600", &o.heartbeat_timeout) != 0)
                return 2;
        } else {
            return bad_option("head", opt, ff_help_head_usage);
        }
    }
    ff_cli_sigpipe_install();
    return ff_head_main(&o);
}

static int worker_main(int argc, char **argv) {
    ff_worker_opts o = {.num_cpus = -1, .reconnect = 60, .grace = 30, .argv = argv};
    for (int i = 2; i < argc; i++) {
        const char *v, *opt = argv[i];
        char name[64];
        opt_name(opt, name, sizeof name);
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(ff_help_worker_usage, stdout);
            return 0;
        } else if ((v = opt_value(argc, argv, &i, "--address")) != NULL) {
            o.address = v;
        } else if ((v = opt_value(argc, argv, &i, "--num-cpus")) != NULL) {
            if (opt_number("worker", name, v, OPT_CPUS, 0, FF_MAX_CPUS, CPUS_WHAT, &o.num_cpus))
                return 2;
        } else if ((v = opt_value(argc, argv, &i, "--resources")) != NULL) {
            o.resources = v;
        } else if ((v = opt_value(argc, argv, &i, "--token-file")) != NULL) {
            o.token_file = v;
        } else if ((v = opt_value(argc, argv, &i, "--reconnect")) != NULL) {
            if (opt_number("worker", name, v, OPT_REAL, 0, 86400,
                           "a number of seconds from 0 to 86400", &o.reconnect) != 0)
                return 2;
        } else if ((v = opt_value(argc, argv, &i, "--grace")) != NULL) {
            if (opt_number("worker", name, v, OPT_REAL, 0, 86400,
                           "a number of seconds from 0 to 86400", &o.grace) != 0)
                return 2;
        } else if (strcmp(argv[i], "--own-machine") == 0) {
            o.own_machine = 1;
        } else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            o.quiet = 1;
        } else if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
            o.verbose = 1;
        } else {
            return bad_option("worker", opt, ff_help_worker_usage);
        }
    }
    if (o.address == NULL) {
        fprintf(stderr, FF_PROGNAME " worker: --address HOST:PORT is required\n%s",
                ff_help_worker_usage);
        return 2;
    }
    ff_cli_sigpipe_install();
    return ff_worker_main(&o);
}

static void print_help(void) {
    printf("fflua %s: %s\n%s\n", FFLUA_VERSION, ff_help_summary, ff_help_intro);
    print_usage(stdout, FF_PROGNAME);
    puts("\nCommands (fflua COMMAND --help for more):");
    print_items(stdout, ff_help_commands, 12);
    puts("\nEnvironment:");
    print_items(stdout, ff_help_environment, 17);
}

/* A new state with the collector stopped (no collections while the
 * libraries open), or NULL after saying why. */
static lua_State *new_state(void) {
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        ff_cli_message(ff_cli_progname(), "cannot create state: not enough memory");
        return NULL;
    }
    lua_gc(L, LUA_GCSTOP);
    return L;
}

/* Protected: require(module).main({args...}) -> exit status. */
static int smain(lua_State *L) {
    const struct subcommand *c = lua_touserdata(L, 1);
    int argc = (int)lua_tointeger(L, 2);
    char **argv = lua_touserdata(L, 3);
    luaL_openlibs(L);
    if (fflua_open(L) != 0)
        return luaL_error(L, "cannot install the functionfuse package loader");
    lua_gc(L, LUA_GCRESTART);
    lua_getglobal(L, "require");
    lua_pushstring(L, c->module);
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (int i = 2; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_call(L, 1, 1);
    return 1;
}

static int run_subcommand(const struct subcommand *c, int argc, char **argv) {
    if (c->cmain != NULL)
        return c->cmain(argc, argv);
    lua_State *L = new_state();
    if (L == NULL)
        return EXIT_FAILURE;
    ff_cli_sigint_install(L);
    lua_pushcfunction(L, smain);
    lua_pushlightuserdata(L, (void *)c);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = ff_cli_docall(L, 3, 1);
    int code = EXIT_FAILURE;
    if (status == LUA_OK)
        code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : EXIT_SUCCESS;
    else
        ff_cli_report(L, status, 0);
    ff_cli_close_state(L);
    return code;
}

/* --- running chunks ------------------------------------------------------ */

static int dochunk(lua_State *L, int status) {
    if (status == LUA_OK)
        status = ff_cli_docall(L, 0, 0);
    return ff_cli_report(L, status, 0);
}

static int dofile(lua_State *L, const char *name) {
    return dochunk(L, luaL_loadfile(L, name));
}

static int dostring(lua_State *L, const char *s, const char *name) {
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod or -l g=mod: g = require(mod) */
static int dolibrary(lua_State *L, const char *spec) {
    const char *eq = strchr(spec, '=');
    const char *mod = eq ? eq + 1 : spec;
    lua_getglobal(L, "require");
    lua_pushstring(L, mod);
    int status = ff_cli_docall(L, 1, 1); /* [module] */
    if (status == LUA_OK) {
        if (eq != NULL)
            lua_pushlstring(L, spec, (size_t)(eq - spec));
        else
            lua_pushstring(L, spec); /* [module, globname] */
        lua_insert(L, -2);           /* [globname, module] */
        lua_setglobal(L, lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    return ff_cli_report(L, status, 0);
}

/* arg = { [-n..-1] = interpreter and options, [0] = script, [1..] = args } */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
    if (script == argc)
        script = 0; /* no script: the interpreter is arg[0] */
    lua_createtable(L, argc - (script + 1), script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int push_script_args(lua_State *L) {
    if (lua_getglobal(L, "arg") != LUA_TTABLE)
        luaL_error(L, "'arg' is not a table");
    int n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (int i = 1; i <= n; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -n - 1);
    return n;
}

/* Whether s could be a command's name: a lowercase word, maybe with
 * dashes, as every subcommand's is. */
static int looks_like_command(const char *s) {
    static const char word[] = "abcdefghijklmnopqrstuvwxyz0123456789-";
    return s[0] >= 'a' && s[0] <= 'z' && s[strspn(s, word)] == '\0';
}

/* Runs the script argv[0]; first: it is the program's first argument. */
static int handle_script(lua_State *L, char **argv, int first) {
    const char *fname = argv[0];
    if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0)
        fname = NULL; /* stdin */
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = push_script_args(L);
        status = ff_cli_docall(L, n, LUA_MULTRET);
    } else if (status == LUA_ERRFILE && first && fname != NULL && looks_like_command(fname) &&
               access(fname, F_OK) != 0) {
        /* "fflua stats": most likely a command mistyped, not a script. */
        lua_pushfstring(L, "%s\n'%s' is not a command either ('" FF_PROGNAME " --help' lists them)",
                        lua_tostring(L, -1), fname);
        lua_remove(L, -2);
    }
    return ff_cli_report(L, status, 0);
}

/* Runs -e, -l and -W in the order given. Returns 0 on the first failure. */
static int run_args(lua_State *L, char **argv, int limit) {
    for (int i = 1; i < limit; i++) {
        int opt = argv[i][1];
        if (opt == 'e' || opt == 'l') {
            const char *extra = argv[i] + 2;
            if (*extra == '\0')
                extra = argv[++i];
            int status = opt == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
            if (status != LUA_OK)
                return 0;
        } else if (opt == 'W') {
            lua_warning(L, "@on", 0);
        }
    }
    return 1;
}

static int handle_luainit(lua_State *L) {
    const char *name = "=LUA_INIT_5_4";
    const char *init = getenv(name + 1);
    if (init == NULL) {
        name = "=LUA_INIT";
        init = getenv(name + 1);
    }
    if (init == NULL)
        return LUA_OK;
    if (init[0] == '@')
        return dofile(L, init + 1);
    return dostring(L, init, name);
}

/* Runs the REPL. As lua.c's doREPL, errors are reported without the
 * program's name meanwhile, also one that ends the REPL (a _PROMPT whose
 * __tostring fails), which main reports. */
static void repl(lua_State *L) {
    const char *name = ff_cli_progname();
    ff_cli_set_progname(NULL);
    ff_repl_run(L);
    ff_cli_set_progname(name);
}

static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    int script = argc;
    int flags = collect_args(argv, &script);
    int limit = script < argc ? script : argc;
    luaL_checkversion(L);
    if (flags & HAS_ERROR) {
        const char *bad = argv[script];
        const char *name = ff_cli_progname();
        if (bad[1] == 'e' || bad[1] == 'l')
            fprintf(stderr, "%s: '%s' needs argument\n", name, bad);
        else
            fprintf(stderr, "%s: unrecognized option '%s'\n", name, bad);
        print_usage(stderr, name);
        return 0;
    }
    if (flags & HAS_V)
        ff_cli_print_version();
    if (flags & HAS_NOENV) {
        lua_pushboolean(L, 1); /* the package library reads this */
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    if (fflua_open(L) != 0)
        return luaL_error(L, "cannot install the functionfuse package loader");
    create_arg_table(L, argv, argc, script);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    ff_cli_sigint_install(L);
    if (!(flags & HAS_NOENV) && handle_luainit(L) != LUA_OK)
        return 0;
    if (!run_args(L, argv, limit))
        return 0;
    if (script < argc && handle_script(L, argv + script, script == 1) != LUA_OK)
        return 0;
    if (flags & HAS_I) {
        repl(L);
    } else if (script == argc && !(flags & (HAS_E | HAS_V))) {
        if (isatty(STDIN_FILENO)) {
            ff_cli_print_version();
            repl(L);
        } else if (dofile(L, NULL) != LUA_OK) {
            return 0;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

int main(int argc, char **argv) {
    if (argv[0] != NULL && argv[0][0] != '\0')
        ff_cli_set_progname(argv[0]); /* as lua.c */
    if (argc >= 2) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            print_help();
            return EXIT_SUCCESS;
        }
        if (strcmp(argv[1], "--version") == 0) {
            ff_cli_print_version();
            return EXIT_SUCCESS;
        }
        for (const struct subcommand *c = subcommands; c->name; c++)
            if (strcmp(argv[1], c->name) == 0)
                return run_subcommand(c, argc, argv);
    }
    lua_State *L = new_state();
    if (L == NULL)
        return EXIT_FAILURE;
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int ok = lua_toboolean(L, -1);
    ff_cli_report(L, status, 0);
    ff_cli_close_state(L); /* storages commit here */
    ff_cli_reraise_term();
    return (ok && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}
