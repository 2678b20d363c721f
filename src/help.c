/*
 * help.c: the texts of fflua's --help (help.h), shared with the man page.
 */
#include "help.h"
#include "cli.h"

const char ff_help_summary[] = "a workflow engine for Lua pipelines, and a Lua 5.4 interpreter.";

const char ff_help_intro[] =
    "With no script and a terminal on stdin, fflua starts an interactive REPL\n"
    "(line editing, history in ~/.fflua_history, Tab completion, 'ff' preloaded).\n";

const char *const ff_help_synopsis[] = {
    "%s [options] [script [args]]",
    "%s COMMAND [args]",
    NULL,
};

const struct ff_help_item ff_help_options[] = {
    {"-e stat", "execute string 'stat'"},
    {"-i", "enter interactive mode after executing 'script'"},
    {"-l mod", "require library 'mod' into global 'mod'"},
    {"-l g=mod", "require library 'mod' into global 'g'"},
    {"-v", "show version information"},
    {"-E", "ignore environment variables"},
    {"-W", "turn warnings on"},
    {"--", "stop handling options"},
    {"-", "stop handling options and execute stdin"},
    {"-h, --help", "show this help and exit"},
    {"--version", "show version information and exit"},
    {NULL, NULL},
};

const struct ff_help_item ff_help_commands[] = {
    {"store", "list, show and remove stored results"},
    {"head", "start a cluster head"},
    {"worker", "join a cluster as a worker"},
    {"status", "show a cluster's nodes, resources and tasks"},
    {"graph", "write the graph of a script's workflows, running no node"},
    {"report", "write an HTML page about a workflow's saved run"},
    {NULL, NULL},
};

const struct ff_help_item ff_help_environment[] = {
    {"LUA_INIT_5_4, LUA_INIT", "code or @file run before the script (as lua5.4)"},
    {"LUA_PATH_5_4, LUA_PATH, LUA_CPATH_5_4, LUA_CPATH", "module search paths"},
    {"FFLUA_TREE", "a source tree whose lua/ and stdlib/ files take precedence over the "
                   "built-in package; empty: built-in only"},
    {"FFLUA_HISTORY", "the REPL history file; empty: no history"},
    {"FFLUA_TOKEN", "a cluster token, for processes started without a token file"},
    {"FFLUA_BIN", "the fflua program a local cluster starts (default: this one)"},
    {"FFLUA_PROGRESS", "0: no progress line unless a workflow asks; N: a line every N "
                       "seconds also when stderr is not a terminal"},
    {NULL, NULL},
};

const char ff_help_head_usage[] =
    "usage: " FF_PROGNAME " head [--host HOST] [--port PORT] [--num-cpus N] [--workers N]\n"
    "                  [--resources JSON] [--token-file FILE] [--ready-file FILE]\n"
    "                  [--quiet | --verbose] [--handshake-timeout SECONDS]\n"
    "                  [--heartbeat-timeout SECONDS]\n"
    "  Starts a cluster head on HOST:PORT (127.0.0.1:6380; port 0: any free\n"
    "  port). It also runs tasks in a worker of its own with N CPUs (default:\n"
    "  the cores; 0: none) and the machine's resources ('{\"_disk\": 1}'), or\n"
    "  in --workers such workers, which share those resources, and starts\n"
    "  another when one ends. Peers prove they know the token in FILE (mode\n"
    "  600); without one the head makes a token and only its own worker can\n"
    "  join, and a HOST that is not a loopback address is refused. --ready-file gets HOST:PORT "
    "once listening; --quiet (-q) logs only\n"
    "  errors; --verbose (-v) also logs each run (submitted, ended, its task\n"
    "  counts) and each working directory received, sent and forgotten, and\n"
    "  makes its own workers verbose. A peer that has not proved it knows the\n"
    "  token within --handshake-timeout (5 s) is disconnected. Peers get a\n"
    "  PING every fifth of --heartbeat-timeout (5 s; 0.1 to 3600); a worker\n"
    "  silent that long is lost, and its tasks run again elsewhere. SIGTERM\n"
    "  or Ctrl-C stops it, telling its peers (STOPPING).\n";

const char ff_help_worker_usage[] =
    "usage: " FF_PROGNAME " worker --address HOST:PORT [--num-cpus N]\n"
    "                    [--resources JSON] [--token-file FILE] [--own-machine]\n"
    "                    [--quiet | --verbose] [--reconnect SECONDS] [--grace SECONDS]\n"
    "  Joins the cluster whose head is at HOST:PORT and runs up to N tasks at\n"
    "  once (default: the cores), each in its own Lua state. The resources\n"
    "  are this machine's, shared with its other workers; with --own-machine\n"
    "  the worker counts as a machine of its own. The token comes from FILE\n"
    "  or $FFLUA_TOKEN. It says when it joins and leaves, unless --quiet (-q);\n"
    "  --verbose (-v) also logs each working directory received, unpacked for\n"
    "  a run and removed. When its head is lost (closed, silent for the\n"
    "  heartbeat timeout, or stopping), it stops its tasks and tries to join\n"
    "  it again for --reconnect seconds (60; 0: it exits at once). SIGTERM or\n"
    "  Ctrl-C: it takes no more tasks, hands back the queued ones and lets the\n"
    "  running ones finish for --grace seconds (30), then leaves; a second\n"
    "  signal leaves at once.\n";
