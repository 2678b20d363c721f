/*
 * progress.c: a run's progress on a terminal or in a log (progress.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"

#define TTY_TICK_MS 200

struct ff_progress {
    ff_progress_count c;
    int fd, tty;
    uint64_t interval_ns; /* plain lines */
    uint64_t t0;
    pthread_t thread;
    pthread_mutex_t mu; /* guards shown, stop and the writes */
    pthread_cond_t cv;
    int shown; /* the tty line is on the screen */
    int stop;
    char title[96];
};

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

ff_progress_count *ff_progress_counts(ff_progress *p) {
    return &p->c;
}

static size_t put_duration(char *buf, size_t cap, double s) {
    long t = (long)(s + 0.5);
    if (s < 60)
        return (size_t)snprintf(buf, cap, "%.1f s", s);
    if (t < 3600)
        return (size_t)snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
    return (size_t)snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

#define LOAD(x) ((uint64_t)atomic_load_explicit(&(x), memory_order_relaxed))

size_t ff_progress_line(char *buf, size_t cap, const char *title, const ff_progress_count *c,
                        uint64_t elapsed_ns) {
    uint64_t total = LOAD(c->total), started = LOAD(c->started), done = LOAD(c->done),
             loaded = LOAD(c->loaded), failed = LOAD(c->failed);
    uint64_t finished = done + loaded + failed;
    uint64_t running = started > done + failed ? started - done - failed : 0;
    double el = (double)elapsed_ns / 1e9;
    char t[32], left[48] = "";
    put_duration(t, sizeof t, el);
    /* The rate of the nodes that ran so far, once there is one to go by. */
    if (done > 0 && el >= 1 && total > finished) {
        char d[32];
        put_duration(d, sizeof d, el * (double)(total - finished) / (double)done);
        snprintf(left, sizeof left, ", about %s left", d);
    }
    int n = snprintf(
        buf, cap, "fflua: %s: %llu/%llu nodes, %llu running, %llu loaded, %llu failed, %s%s", title,
        (unsigned long long)finished, (unsigned long long)total, (unsigned long long)running,
        (unsigned long long)loaded, (unsigned long long)failed, t, left);
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Writes all of s, as far as the descriptor takes it. */
static void put(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Draws the line; under mu. */
static void draw(ff_progress *p) {
    char line[512];
    size_t cap = sizeof line - 8;
    if (p->tty) {
        struct winsize ws;
        /* One column short of the width: a full line would wrap on some
         * terminals. */
        if (ioctl(p->fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && (size_t)ws.ws_col - 1 < cap)
            cap = ws.ws_col - 1;
    }
    char *s = line + (p->tty ? 1 : 0);
    size_t n = ff_progress_line(s, cap + 1, p->title, &p->c, mono_ns() - p->t0);
    if (p->tty) {
        line[0] = '\r';
        memcpy(s + n, "\033[K", 3);
        put(p->fd, line, n + 4);
        p->shown = 1;
    } else {
        s[n] = '\n';
        put(p->fd, s, n + 1);
    }
}

static void *run(void *arg) {
    ff_progress *p = arg;
    uint64_t tick = p->tty ? (uint64_t)TTY_TICK_MS * 1000000u : p->interval_ns;
    pthread_mutex_lock(&p->mu);
    uint64_t next = p->t0 + tick;
    while (!p->stop) {
        struct timespec ts = {(time_t)(next / 1000000000u), (long)(next % 1000000000u)};
        int rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        if (p->stop)
            break;
        if (rc == ETIMEDOUT || mono_ns() >= next) {
            draw(p);
            next += tick;
            uint64_t now = mono_ns();
            if (next < now) /* fell behind (a stopped process): from now on */
                next = now + tick;
        }
    }
    if (p->shown)
        put(p->fd, "\r\033[K", 4);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int ff_progress_start(ff_progress **out, int fd, int tty, double interval, const char *title) {
    ff_progress *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    p->fd = fd;
    p->tty = tty;
    /* From 0.1 s to a day (NaN included: the former). */
    p->interval_ns =
        (uint64_t)((interval >= 0.1 ? (interval <= 86400 ? interval : 86400) : 0.1) * 1e9);
    snprintf(p->title, sizeof p->title, "%s", title);
    p->t0 = mono_ns();
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        free(p);
        return -rc;
    }
    pthread_mutex_init(&p->mu, NULL);
    if ((rc = pthread_create(&p->thread, NULL, run, p)) != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return -rc;
    }
    *out = p;
    return 0;
}

void ff_progress_hold(ff_progress *p) {
    pthread_mutex_lock(&p->mu);
    if (p->shown) {
        put(p->fd, "\r\033[K", 4);
        p->shown = 0;
    }
}

void ff_progress_release(ff_progress *p) {
    pthread_mutex_unlock(&p->mu);
}

void ff_progress_stop(ff_progress *p) {
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
