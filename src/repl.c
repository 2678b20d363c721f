/*
 * repl.c: fflua's interactive loop.
 *
 * It reads as lua.c's REPL does: a line is first tried as `return <line>`
 * so expressions print their values, then as a statement; a statement the
 * parser finds unfinished (its error ends in "<eof>") continues on the next
 * line under the _PROMPT2 prompt. Values print through the global `print`.
 *
 * On a terminal it reads with libedit: line editing, history kept in
 * $FFLUA_HISTORY or ~/.fflua_history, and Tab completion of global names and
 * table fields (also through an __index table, and methods after ':').
 * Ctrl-C at a prompt abandons the input; Ctrl-C while code runs interrupts
 * it (cli.c). Without a terminal it reads stdin with plain stdio.
 */
#include <errno.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>

#include <editline/readline.h>
#include <lauxlib.h>
#include <lua.h>

#include "cli.h"
#include "repl.h"

#define REPL_CANCELLED (-2) /* Ctrl-C abandoned the input */
#define HISTORY_MAX 1000

struct repl {
    lua_State *L;
    int tty;        /* reading through libedit */
    char *history;  /* history file, or NULL; owned */
    char **matches; /* completion candidates of the current Tab; owned */
    size_t nmatches, next;
    sigset_t waitmask; /* the signal mask to wait for input with */
    size_t lines;      /* lines of the chunks compiled so far */
};

/* The registry field holding the text of every chunk the REPL compiled, one
 * after the other: a chunk's lines are numbered after the lines before it,
 * so each function typed has a line of its own ("stdin:12:"), where the
 * package reads its definition to name it (functionfuse._names). */
#define SESSION_KEY "functionfuse.stdin"

/* luaL_loadbuffer of text (len bytes) as chunk "=stdin", numbered after
 * the session's lines. */
static int load_chunk(struct repl *r, const char *text, size_t len) {
    lua_State *L = r->L;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, r->lines + len);
    memset(p, '\n', r->lines);
    memcpy(p + r->lines, text, len);
    luaL_pushresultsize(&b, r->lines + len); /* [.., padded] */
    const char *padded = lua_tostring(L, -1);
    int status = luaL_loadbuffer(L, padded, r->lines + len, "=stdin");
    lua_remove(L, -2);
    return status;
}

/* A chunk compiled: its text joins the session's. */
static void session_add(struct repl *r, const char *text, size_t len) {
    lua_State *L = r->L;
    lua_getfield(L, LUA_REGISTRYINDEX, SESSION_KEY);
    if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "");
    }
    lua_pushlstring(L, text, len);
    lua_pushliteral(L, "\n");
    lua_concat(L, 3);
    lua_setfield(L, LUA_REGISTRYINDEX, SESSION_KEY);
    r->lines++;
    for (size_t i = 0; i < len; i++)
        r->lines += text[i] == '\n';
}

/* libedit's completion callbacks take no user pointer; this is the REPL
 * they serve. There is one terminal per process, hence one REPL at a time. */
static struct repl *completing;

/* --- completion ---------------------------------------------------------- */

static const char *const keywords[] = {
    "and",      "break",  "do",   "else", "elseif", "end",   "false", "for",
    "function", "goto",   "if",   "in",   "local",  "nil",   "not",   "or",
    "repeat",   "return", "then", "true", "until",  "while", NULL,
};

static int is_ident_char(char c, int first) {
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (!first && c >= '0' && c <= '9');
}

static int is_identifier(const char *s, size_t len) {
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!is_ident_char(s[i], i == 0))
            return 0;
    for (const char *const *k = keywords; *k; k++)
        if (strlen(*k) == len && memcmp(*k, s, len) == 0)
            return 0;
    return 1;
}

/* Replaces the value on top with its metatable's __index when that is a
 * table; otherwise with nil. No metamethod runs. */
static void to_index_table(lua_State *L) {
    if (lua_getmetatable(L, -1)) { /* [v, mt] */
        lua_pushliteral(L, "__index");
        lua_rawget(L, -2);  /* [v, mt, index] */
        lua_replace(L, -3); /* [index, mt] */
        lua_pop(L, 1);      /* [index] */
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
    } else {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

/* Replaces the value on top with its field `key`, found with raw gets along
 * the __index chain (so completion never runs user code); nil if absent. */
static void safe_field(lua_State *L, const char *key, size_t len) {
    for (int depth = 0; depth < 16 && !lua_isnil(L, -1); depth++) {
        if (lua_istable(L, -1)) {
            lua_pushlstring(L, key, len);
            lua_rawget(L, -2); /* [v, field] */
            if (!lua_isnil(L, -1)) {
                lua_remove(L, -2);
                return;
            }
            lua_pop(L, 1);
        }
        to_index_table(L);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
}

/* Adds to the set at `set` the keys of the value on top (and of its __index
 * chain) that start with prefix; pops the value. */
static void add_keys(lua_State *L, int set, const char *prefix, size_t plen, int methods) {
    for (int depth = 0; depth < 16 && !lua_isnil(L, -1); depth++) {
        if (lua_istable(L, -1)) {
            lua_pushnil(L);
            while (lua_next(L, -2)) { /* [v, key, value] */
                int fn = lua_type(L, -1) == LUA_TFUNCTION;
                if (!fn && luaL_getmetafield(L, -1, "__call") != LUA_TNIL) {
                    lua_pop(L, 1);
                    fn = 1;
                }
                lua_pop(L, 1); /* [v, key] */
                size_t klen;
                if (lua_type(L, -1) == LUA_TSTRING) {
                    const char *k = lua_tolstring(L, -1, &klen);
                    if ((!methods || fn) && klen >= plen && memcmp(k, prefix, plen) == 0 &&
                        is_identifier(k, klen)) {
                        lua_pushvalue(L, -1);
                        lua_pushboolean(L, 1);
                        lua_rawset(L, set);
                    }
                }
            }
        }
        to_index_table(L);
    }
    lua_pop(L, 1);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Protected: (text) -> sequence of full completions of text. */
static int collect_candidates(lua_State *L) {
    size_t tlen;
    const char *text = luaL_checklstring(L, 1, &tlen);
    lua_newtable(L); /* [text, set] */
    int set = lua_gettop(L);
    const char *sep = NULL;
    for (const char *p = text; *p; p++)
        if (*p == '.' || *p == ':')
            sep = p;
    const char *prefix = sep ? sep + 1 : text;
    size_t plen = tlen - (size_t)(prefix - text);

    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); /* [text, set, G] */
    if (sep != NULL) {
        /* Walk the dotted path before the last separator. */
        const char *p = text;
        while (p < sep && !lua_isnil(L, -1)) {
            const char *dot = memchr(p, '.', (size_t)(sep - p));
            const char *end = dot ? dot : sep;
            if (memchr(p, ':', (size_t)(end - p)) != NULL || !is_identifier(p, (size_t)(end - p))) {
                lua_pop(L, 1);
                lua_pushnil(L);
                break;
            }
            safe_field(L, p, (size_t)(end - p));
            p = end + 1;
        }
    } else {
        for (const char *const *k = keywords; *k; k++) {
            if (strncmp(*k, prefix, plen) == 0) {
                lua_pushboolean(L, 1);
                lua_setfield(L, set, *k);
            }
        }
    }
    add_keys(L, set, prefix, plen, sep != NULL && *sep == ':');

    /* Sorted sequence of text-before-prefix .. key. */
    lua_newtable(L); /* [text, set, out] */
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, set)) {
        lua_pop(L, 1);
        lua_pushlstring(L, text, (size_t)(prefix - text));
        lua_pushvalue(L, -2);
        lua_concat(L, 2);
        lua_rawseti(L, -3, ++n);
    }
    return 1;
}

static void free_matches(struct repl *r) {
    for (size_t i = 0; i < r->nmatches; i++)
        free(r->matches[i]);
    free(r->matches);
    r->matches = NULL;
    r->nmatches = r->next = 0;
}

static void compute_matches(struct repl *r, const char *text) {
    lua_State *L = r->L;
    free_matches(r);
    int top = lua_gettop(L);
    lua_pushcfunction(L, collect_candidates);
    lua_pushstring(L, text);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
        size_t n = (size_t)lua_rawlen(L, -1);
        r->matches = calloc(n ? n : 1, sizeof *r->matches);
        for (size_t i = 0; r->matches && i < n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            char *s = strdup(lua_tostring(L, -1));
            lua_pop(L, 1);
            if (s == NULL)
                break;
            r->matches[r->nmatches++] = s;
        }
        if (r->nmatches > 1)
            qsort(r->matches, r->nmatches, sizeof *r->matches, cmp_str);
    }
    lua_settop(L, top);
}

static char *complete_next(const char *text, int state) {
    struct repl *r = completing;
    if (r == NULL)
        return NULL;
    if (state == 0)
        compute_matches(r, text);
    if (r->next < r->nmatches) {
        char *s = r->matches[r->next];
        r->matches[r->next++] = NULL; /* libedit takes ownership */
        return s;
    }
    return NULL;
}

static char **complete(const char *text, int start, int end) {
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    rl_completion_append_character = '\0';
    return rl_completion_matches(text, complete_next);
}

/* --- reading lines -------------------------------------------------------
 * SIGINT (and SIGTERM, SIGHUP) is blocked while libedit runs and unblocked
 * only while waiting for input, in ppoll(). So a Ctrl-C is either seen by
 * that wait or delivered when readline() returns; it can never slip in
 * between a check and a blocking read and be lost. */

/* libedit's character source: one character (decoded from the locale's
 * multibyte encoding) or -1 at end of input or on Ctrl-C. */
static int repl_getc(FILE *f) {
    struct repl *r = completing;
    int fd = fileno(f);
    mbstate_t st;
    memset(&st, 0, sizeof st);
    for (;;) {
        if (ff_cli_interrupt_pending() || ff_cli_terminate_pending())
            return -1;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (ppoll(&pfd, 1, NULL, r ? &r->waitmask : NULL) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        unsigned char byte;
        ssize_t n = read(fd, &byte, 1);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return -1;
        wchar_t wc;
        char c = (char)byte;
        size_t k = mbrtowc(&wc, &c, 1, &st);
        if (k == (size_t)-2)
            continue; /* more bytes of this character to come */
        if (k == (size_t)-1)
            return byte; /* not valid here: pass the byte on */
        return (int)wc;
    }
}

/* Reads a line with libedit with SIGINT, SIGTERM and SIGHUP blocked outside
 * the wait for input. */
static char *edit_line(struct repl *r, const char *prompt) {
    sigset_t intr;
    sigemptyset(&intr);
    sigaddset(&intr, SIGINT);
    sigaddset(&intr, SIGTERM);
    sigaddset(&intr, SIGHUP);
    sigset_t old;
    sigprocmask(SIG_BLOCK, &intr, &old);
    r->waitmask = old;
    sigdelset(&r->waitmask, SIGINT);
    sigdelset(&r->waitmask, SIGTERM);
    sigdelset(&r->waitmask, SIGHUP);
    char *line = readline(prompt);
    sigprocmask(SIG_SETMASK, &old, NULL); /* a pending SIGINT lands here */
    if (ff_cli_interrupt_pending()) {
        free(line);
        return NULL;
    }
    return line;
}

static const char *get_prompt(lua_State *L, int first) {
    if (lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2") == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushstring(L, first ? "> " : ">> ");
        return lua_tostring(L, -1);
    }
    const char *p = luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    return p;
}

/* Reads one line and pushes it (without its newline). Returns 1, 0 at end
 * of input, or REPL_CANCELLED after Ctrl-C. */
static int push_line(struct repl *r, int first) {
    lua_State *L = r->L;
    const char *prompt = get_prompt(L, first); /* [prompt] */
    char *line = NULL;
    size_t len = 0;
    if (ff_cli_terminate_pending()) {
        lua_pop(L, 1);
        return 0;
    }
    if (r->tty) {
        line = edit_line(r, prompt);
        if (line == NULL) {
            lua_pop(L, 1);
            if (ff_cli_take_interrupt()) {
                fputc('\n', stdout);
                fflush(stdout);
                return REPL_CANCELLED;
            }
            return 0;
        }
        len = strlen(line);
    } else {
        size_t cap = 0;
        fputs(prompt, stdout);
        fflush(stdout);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            free(line);
            lua_pop(L, 1);
            if (ff_cli_take_interrupt()) {
                clearerr(stdin);
                fputc('\n', stdout);
                return REPL_CANCELLED;
            }
            return 0;
        }
        len = (size_t)n;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
    }
    lua_pop(L, 1);                    /* the prompt */
    if (ff_cli_terminate_pending()) { /* SIGTERM: leave as at end of input */
        free(line);
        return 0;
    }
    if (first && line[0] == '=') /* 5.2-style "=expr" */
        lua_pushfstring(L, "return %s", line + 1);
    else
        lua_pushlstring(L, line, len);
    free(line);
    return 1;
}

static void save_line(struct repl *r, const char *line) {
    if (!r->tty || line[0] == '\0')
        return;
    add_history(line);
    if (r->history != NULL && write_history(r->history) == 0)
        chmod(r->history, 0600); /* history may hold secrets */
}

/* Tries `return <line>`; on success leaves the chunk above the line. */
static int try_return(struct repl *r) {
    lua_State *L = r->L;
    const char *line = lua_tostring(L, -1);
    const char *ret = lua_pushfstring(L, "return %s;", line);
    int status = load_chunk(r, ret, strlen(ret));
    if (status == LUA_OK) {
        session_add(r, ret, strlen(ret));
        lua_remove(L, -2); /* the "return" text */
        save_line(r, line);
    } else {
        lua_pop(L, 2); /* error and "return" text */
    }
    return status;
}

static int incomplete(lua_State *L, int status) {
    if (status == LUA_ERRSYNTAX) {
        size_t len;
        const char *msg = lua_tolstring(L, -1, &len);
        static const char eof[] = "<eof>";
        if (len >= sizeof eof - 1 && strcmp(msg + len - (sizeof eof - 1), eof) == 0) {
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

/* Reads continuation lines until the chunk parses or fails for good. */
static int read_statement(struct repl *r) {
    lua_State *L = r->L;
    for (;;) {
        size_t len;
        const char *line = lua_tolstring(L, 1, &len);
        int status = load_chunk(r, line, len);
        if (!incomplete(L, status)) {
            if (status == LUA_OK)
                session_add(r, line, len);
            save_line(r, line);
            return status;
        }
        int got = push_line(r, 0);
        if (got == REPL_CANCELLED)
            return REPL_CANCELLED;
        if (got == 0) { /* end of input: report the unfinished chunk */
            status = load_chunk(r, line, len);
            save_line(r, line);
            return status;
        }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

/* Returns LUA_OK with the chunk on the stack, an error status with the
 * message on the stack, -1 at end of input or REPL_CANCELLED. */
static int load_line(struct repl *r) {
    lua_State *L = r->L;
    lua_settop(L, 0);
    int got = push_line(r, 1);
    if (got <= 0)
        return got == 0 ? -1 : REPL_CANCELLED;
    int status = try_return(r);
    if (status != LUA_OK)
        status = read_statement(r);
    if (status == REPL_CANCELLED) {
        lua_settop(L, 0);
        return status;
    }
    lua_remove(L, 1); /* the line */
    return status;
}

static void print_results(lua_State *L) {
    int n = lua_gettop(L);
    if (n == 0)
        return;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getglobal(L, "print");
    lua_insert(L, 1);
    if (lua_pcall(L, n, 0, 0) != LUA_OK) {
        fprintf(stderr, "error calling 'print' (%s)\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

/* --- setup --------------------------------------------------------------- */

static char *history_path(void) {
    const char *env = getenv("FFLUA_HISTORY");
    if (env != NULL)
        return env[0] ? strdup(env) : NULL;
    const char *home = getenv("HOME");
    if (home == NULL || home[0] == '\0')
        return NULL;
    size_t n = strlen(home) + sizeof "/.fflua_history";
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/.fflua_history", home);
    return p;
}

static void preload_ff(lua_State *L) {
    if (lua_getglobal(L, "ff") != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "functionfuse");
    if (ff_cli_docall(L, 1, 1) == LUA_OK) {
        lua_setglobal(L, "ff");
    } else {
        fprintf(stderr, "warning: cannot preload 'ff': %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

void ff_repl_run(lua_State *L) {
    struct repl r = {.L = L, .tty = isatty(STDIN_FILENO)};
    preload_ff(L);
    if (r.tty) {
        r.history = history_path();
        rl_readline_name = "fflua";
        rl_catch_signals = 0; /* cli.c's handler sees Ctrl-C */
        rl_getc_function = repl_getc;
        /* Typed text is in the terminal's encoding; where the locale names
         * none, take UTF-8 rather than losing every non-ASCII character.
         * Only LC_CTYPE changes: Lua's number formatting is untouched. */
        const char *loc = setlocale(LC_CTYPE, "");
        if (loc == NULL || strcmp(loc, "C") == 0 || strcmp(loc, "POSIX") == 0)
            setlocale(LC_CTYPE, "C.UTF-8");
        static const char breaks[] = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#";
        rl_basic_word_break_characters = breaks;
        rl_completer_word_break_characters = (char *)breaks;
        rl_attempted_completion_function = complete;
        using_history();
        stifle_history(HISTORY_MAX);
        if (r.history != NULL)
            read_history(r.history);
        completing = &r;
    }
    int status;
    while ((status = load_line(&r)) != -1) {
        if (status == REPL_CANCELLED)
            continue;
        if (status == LUA_OK)
            status = ff_cli_docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK)
            print_results(L);
        else
            ff_cli_report(L, status, 1);
    }
    lua_settop(L, 0);
    fputc('\n', stdout);
    fflush(stdout);
    if (r.tty) {
        completing = NULL;
        free_matches(&r);
        clear_history();
        free(r.history);
    }
}
