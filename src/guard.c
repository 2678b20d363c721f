/*
 * guard.c: recovery points for faults inside LMDB (see guard.h).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "guard.h"

/* The calling thread's innermost guard. Thread-local, so each thread jumps
 * only to its own recovery points. */
static __thread ff_guard *cur;

/* The handlers that were installed before ours: written once, under
 * pthread_once, then only read. */
static struct sigaction old_segv, old_bus;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void on_fault(int sig, siginfo_t *si, void *uc) {
    ff_guard *g = cur;
    /* Only a fault the hardware raised in this thread jumps: a SIGSEGV sent
     * with kill() is meant to kill. */
    if (g != NULL && si != NULL && si->si_code > 0) {
        cur = g->prev;
        g->sig = sig;
        g->msg[0] = '\0';
        /* SA_NODEFER left the signal unblocked, so the mask need not be
         * restored: sigsetjmp(jb, 0) saved none. */
        siglongjmp(g->jb, 1);
    }
    const struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
    if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction != NULL) {
        old->sa_sigaction(sig, si, uc);
        return;
    }
    if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* No handler before ours: die of the signal, as without a guard. A
     * fault raised by the hardware repeats when the handler returns; one
     * sent with kill() must be raised again. */
    signal(sig, SIG_DFL);
    if (si == NULL || si->si_code <= 0)
        raise(sig);
}

static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
}

void ff_guard_push(ff_guard *g) {
    pthread_once(&once, install);
    g->prev = cur;
    g->sig = 0;
    g->msg[0] = '\0';
    cur = g;
}

void ff_guard_pop(ff_guard *g) {
    cur = g->prev;
}

void ff_guard_assert(const char *msg) {
    ff_guard *g = cur;
    if (g == NULL)
        return;
    cur = g->prev;
    g->sig = 0;
    snprintf(g->msg, sizeof g->msg, "%s", msg);
    siglongjmp(g->jb, 1);
}

const char *ff_guard_what(const ff_guard *g) {
    if (g->sig == SIGBUS)
        return "a read past the end of the file";
    if (g->sig == SIGSEGV)
        return "a read outside the file";
    return "an internal check failed";
}
