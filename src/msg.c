/*
 * msg.c: the codec of the cluster's messages (see msg.h, the layouts, and
 * docs/protocol.md). The one place that builds or reads a payload's bytes.
 *
 * Readers check a whole message before they hand anything out, lists
 * included: a list is walked once here to check it, then again by its
 * caller through ff_msg_next_*, which trust what was checked.
 */
#include <errno.h>
#include <string.h>

#include "fflua.h"
#include "msg.h"

/* --- lists ----------------------------------------------------------------- */

enum { L_INDEX, L_STR, L_RES, L_DEP, L_RES_STATE, L_PLACE };

static int list_read(ff_rd *r, uint64_t n, int kind, ff_msg_list *l);

/* Steps over one entry of a list of kind, checking it. */
static void skip_entry(ff_rd *r, int kind) {
    size_t len;
    switch (kind) {
    case L_INDEX:
        ff_rd_varint(r);
        break;
    case L_STR:
        ff_rd_str(r, &len);
        break;
    case L_RES:
        ff_rd_str(r, &len);
        ff_rd_varint(r);
        break;
    case L_DEP: {
        ff_rd_varint(r);
        uint64_t has = ff_rd_varint(r);
        if (has > 1)
            ff_rd_fail(r);
        else if (has)
            ff_rd_str(r, &len);
        break;
    }
    case L_RES_STATE:
        ff_rd_str(r, &len);
        ff_rd_varint(r);
        ff_rd_varint(r);
        break;
    case L_PLACE: {
        ff_msg_list res;
        ff_rd_str(r, &len);
        ff_rd_str(r, &len);
        if (len != FF_MACHINE_LEN)
            ff_rd_fail(r);
        ff_rd_varint(r);
        list_read(r, ff_rd_varint(r), L_RES_STATE, &res);
        break;
    }
    }
}

/* Checks the n entries of kind at r and makes l their list; r goes past
 * them. Every entry takes a byte at least, so a count larger than what is
 * left is malformed before anything is walked. */
static int list_read(ff_rd *r, uint64_t n, int kind, ff_msg_list *l) {
    if (!r->err && n > (uint64_t)(r->end - r->p))
        ff_rd_fail(r);
    l->r = *r;
    for (uint64_t i = 0; i < n && !r->err; i++)
        skip_entry(r, kind);
    l->r.end = r->p;
    l->n = r->err ? 0 : n;
    return r->err;
}

/* A count of resources (at most FF_MSG_RES_MAX), then that many. */
static void rd_res_list(ff_rd *r, ff_msg_list *res) {
    uint64_t nres = ff_rd_varint(r);
    if (nres > FF_MSG_RES_MAX)
        ff_rd_fail(r);
    list_read(r, nres, L_RES, res);
}

uint64_t ff_msg_next_index(ff_msg_list *l) {
    l->n--;
    return ff_rd_varint(&l->r);
}

void ff_msg_next_str(ff_msg_list *l, ff_msg_str *s) {
    l->n--;
    s->p = ff_rd_str(&l->r, &s->len);
}

void ff_msg_next_res(ff_msg_list *l, ff_msg_res *res) {
    l->n--;
    res->name = ff_rd_str(&l->r, &res->len);
    res->amount = ff_rd_varint(&l->r);
}

static void wr_res(ff_buf *b, const ff_msg_res *res, size_t n) {
    ff_wr_varint(b, n);
    for (size_t k = 0; k < n; k++) {
        ff_wr_str(b, res[k].name, res[k].len);
        ff_wr_varint(b, res[k].amount);
    }
}

/* --- the handshake ----------------------------------------------------------- */

static void wr_versions(ff_buf *b) {
    ff_versions v;
    ff_versions_local(&v);
    ff_wr_varint(b, v.proto);
    ff_wr_str(b, v.fflua, v.fflua_len);
    ff_wr_str(b, v.lua, v.lua_len);
}

static void rd_versions(ff_rd *r, ff_versions *v) {
    v->proto = ff_rd_varint(r);
    v->fflua = ff_rd_str(r, &v->fflua_len);
    v->lua = ff_rd_str(r, &v->lua_len);
}

/* The writes' failures are in b->err, which ff_frame_end checks. */
int ff_msg_hello_write(ff_buf *b, const unsigned char nonce[FF_NONCE_LEN]) {
    size_t at;
    ff_frame_begin(b, FF_M_HELLO, &at);
    ff_wr_str(b, FF_NET_MAGIC, sizeof FF_NET_MAGIC - 1);
    wr_versions(b);
    ff_wr_fixed(b, nonce, FF_NONCE_LEN);
    return ff_frame_end(b, at);
}

int ff_msg_hello_read(const char *p, size_t n, ff_msg_hello *m) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    size_t ml;
    const char *magic = ff_rd_str(&r, &ml);
    if (r.err || ml != sizeof FF_NET_MAGIC - 1 || memcmp(magic, FF_NET_MAGIC, ml) != 0)
        return FFLUA_EPROTO;
    rd_versions(&r, &m->v);
    memcpy(m->nonce, ff_rd_fixed(&r, FF_NONCE_LEN), FF_NONCE_LEN);
    return ff_rd_done(&r);
}

int ff_msg_auth_write(ff_buf *b, int role, const unsigned char nonce[FF_NONCE_LEN],
                      const unsigned char mac[FF_MAC_LEN]) {
    size_t at;
    ff_frame_begin(b, FF_M_AUTH, &at);
    wr_versions(b);
    ff_wr_varint(b, (uint64_t)role);
    ff_wr_fixed(b, nonce, FF_NONCE_LEN);
    ff_wr_fixed(b, mac, FF_MAC_LEN);
    return ff_frame_end(b, at);
}

int ff_msg_auth_read(const char *p, size_t n, ff_msg_auth *m) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    rd_versions(&r, &m->v);
    uint64_t role = ff_rd_varint(&r);
    memcpy(m->nonce, ff_rd_fixed(&r, FF_NONCE_LEN), FF_NONCE_LEN);
    memcpy(m->mac, ff_rd_fixed(&r, FF_MAC_LEN), FF_MAC_LEN);
    if (role < FF_ROLE_WORKER || role > FF_ROLE_STATUS)
        return FFLUA_EPROTO;
    m->role = (int)role;
    return ff_rd_done(&r);
}

int ff_msg_welcome_write(ff_buf *b, const unsigned char mac[FF_MAC_LEN]) {
    size_t at;
    ff_frame_begin(b, FF_M_WELCOME, &at);
    ff_wr_fixed(b, mac, FF_MAC_LEN);
    return ff_frame_end(b, at);
}

int ff_msg_welcome_read(const char *p, size_t n, unsigned char mac[FF_MAC_LEN]) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    memcpy(mac, ff_rd_fixed(&r, FF_MAC_LEN), FF_MAC_LEN);
    return ff_rd_done(&r);
}

int ff_msg_refuse_write(ff_buf *b, const char *reason) {
    size_t at;
    ff_frame_begin(b, FF_M_REFUSE, &at);
    ff_wr_str(b, reason, strlen(reason));
    return ff_frame_end(b, at);
}

int ff_msg_refuse_read(const char *p, size_t n, const char **reason, size_t *len) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *reason = ff_rd_str(&r, len);
    return ff_rd_done(&r);
}

/* --- worker -> head ---------------------------------------------------------- */

int ff_msg_register_write(ff_buf *b, const ff_msg_register *m, const ff_msg_res *res, size_t nres) {
    size_t at;
    ff_frame_begin(b, FF_M_REGISTER, &at);
    ff_wr_varint(b, m->cpus);
    wr_res(b, res, nres);
    ff_wr_str(b, m->host, m->host_len);
    ff_wr_varint(b, m->pid);
    ff_wr_str(b, (const char *)m->machine, FF_MACHINE_LEN);
    return ff_frame_end(b, at);
}

int ff_msg_register_read(const char *p, size_t n, ff_msg_register *m, ff_msg_list *res) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    m->cpus = ff_rd_varint(&r);
    rd_res_list(&r, res);
    m->host = ff_rd_str(&r, &m->host_len);
    m->pid = ff_rd_varint(&r);
    size_t len;
    m->machine = (const unsigned char *)ff_rd_str(&r, &len);
    if (len != FF_MACHINE_LEN)
        ff_rd_fail(&r);
    return ff_rd_done(&r);
}

int ff_msg_result_write(ff_buf *b, const ff_msg_result *m) {
    size_t at;
    ff_frame_begin(b, FF_M_RESULT, &at);
    ff_wr_varint(b, m->run);
    ff_wr_varint(b, m->index);
    ff_wr_varint(b, (uint64_t)m->status);
    ff_wr_str(b, m->bytes, m->len);
    ff_wr_varint(b, m->ns);
    return ff_frame_end(b, at);
}

int ff_msg_result_read(const char *p, size_t n, ff_msg_result *m) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    m->run = ff_rd_varint(&r);
    m->index = ff_rd_varint(&r);
    uint64_t status = ff_rd_varint(&r);
    m->bytes = ff_rd_str(&r, &m->len);
    m->ns = ff_rd_varint(&r);
    if (status >= FF_RESULT_LAST)
        return FFLUA_EPROTO;
    m->status = (int)status;
    return ff_rd_done(&r);
}

/* --- driver -> head ---------------------------------------------------------- */

int ff_msg_func_write(ff_buf *b, const ff_msg_func *m) {
    size_t at;
    ff_frame_begin(b, FF_M_FUNC, &at);
    ff_wr_varint(b, m->run);
    ff_wr_varint(b, m->fid);
    ff_wr_str(b, m->code, m->len);
    return ff_frame_end(b, at);
}

int ff_msg_func_read(const char *p, size_t n, ff_msg_func *m) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    m->run = ff_rd_varint(&r);
    m->fid = ff_rd_varint(&r);
    m->code = ff_rd_str(&r, &m->len);
    return ff_rd_done(&r);
}

/* The flag bits of an actor kind (FF_ACTOR_*). */
static uint64_t actor_flags(int actor) {
    return actor == FF_ACTOR_CTOR ? FF_TASK_CTOR : actor == FF_ACTOR_METHOD ? FF_TASK_METHOD : 0;
}

/* The actor kind of flags (both bits: malformed, r fails), and its
 * constructor's index when a method (which must be below limit). */
static int actor_read(ff_rd *r, uint64_t flags, uint64_t limit, uint64_t *ctor) {
    *ctor = 0;
    if ((flags & FF_TASK_CTOR) && (flags & FF_TASK_METHOD)) {
        ff_rd_fail(r);
        return FF_ACTOR_NONE;
    }
    if (flags & FF_TASK_CTOR)
        return FF_ACTOR_CTOR;
    if (!(flags & FF_TASK_METHOD))
        return FF_ACTOR_NONE;
    *ctor = ff_rd_varint(r);
    if (*ctor >= limit)
        ff_rd_fail(r);
    return FF_ACTOR_METHOD;
}

int ff_msg_subtask_write(ff_buf *b, const ff_msg_subtask *t, const uint32_t *deps,
                         const ff_msg_res *res) {
    ff_wr_varint(b, t->fid);
    ff_wr_str(b, t->name, t->name_len);
    ff_wr_varint(b, (t->leaf ? FF_TASK_LEAF : 0) | (t->save ? FF_TASK_SAVE : 0) |
                        (t->load ? FF_TASK_LOAD : 0) | actor_flags(t->actor) |
                        (t->retry_exceptions ? FF_TASK_RETRY_EXC : 0));
    if (t->save)
        ff_wr_fixed(b, t->fp, FF_MSG_FP_LEN);
    else if (t->load)
        ff_wr_str(b, (const char *)t->fp, t->fp != NULL ? FF_MSG_FP_LEN : 0);
    if (t->actor == FF_ACTOR_METHOD)
        ff_wr_varint(b, t->ctor);
    ff_wr_varint(b, t->ndeps);
    for (uint32_t j = 0; j < t->ndeps; j++)
        ff_wr_varint(b, deps[j]);
    ff_wr_str(b, t->args, t->nargs);
    ff_wr_str(b, t->pre, t->npre);
    wr_res(b, res, t->nres);
    ff_wr_varint(b, t->max_retries);
    ff_wr_varint(b, t->timeout_ms);
    ff_wr_varint(b, t->max_restarts);
    return b->err;
}

int ff_msg_submit_write(ff_buf *b, const ff_msg_submit *m, const char *tasks, size_t len) {
    size_t at;
    ff_frame_begin(b, FF_M_SUBMIT, &at);
    ff_wr_varint(b, m->run);
    ff_wr_varint(b, m->max_pending);
    ff_wr_varint(b, m->flags);
    ff_wr_varint(b, m->total);
    ff_wr_varint(b, m->first);
    ff_wr_varint(b, m->count);
    ff_wr_fixed(b, tasks, len);
    return ff_frame_end(b, at);
}

int ff_msg_submit_read(const char *p, size_t n, ff_msg_submit *m, ff_msg_tasks *tasks) {
    ff_rd *r = &tasks->r;
    ff_rd_init(r, p, n);
    m->run = ff_rd_varint(r);
    m->max_pending = ff_rd_varint(r);
    m->flags = ff_rd_varint(r);
    m->total = ff_rd_varint(r);
    m->first = ff_rd_varint(r);
    m->count = ff_rd_varint(r);
    /* A task takes a byte at least: a count larger than what is left is
     * a claim the head must not allocate for. */
    if (r->err || (m->flags & ~(uint64_t)FF_RUN_FLAGS) || m->total == 0 || m->count == 0 ||
        m->count > (uint64_t)(r->end - r->p) || m->first > m->total ||
        m->count > m->total - m->first)
        return FFLUA_EPROTO;
    tasks->next = m->first;
    tasks->end = m->first + m->count;
    return 0;
}

int ff_msg_submit_next(ff_msg_tasks *tasks, ff_msg_subtask *t, ff_msg_list *deps,
                       ff_msg_list *res) {
    ff_rd *r = &tasks->r;
    if (tasks->next == tasks->end)
        return ff_rd_done(r) == 0 ? 1 : FFLUA_EPROTO;
    uint64_t i = tasks->next;
    t->index = i;
    t->fid = ff_rd_varint(r);
    t->name = ff_rd_str(r, &t->name_len);
    uint64_t flags = ff_rd_varint(r);
    t->leaf = (flags & FF_TASK_LEAF) != 0;
    t->retry_exceptions = (flags & FF_TASK_RETRY_EXC) != 0;
    t->save = (flags & FF_TASK_SAVE) != 0;
    t->load = (flags & FF_TASK_LOAD) != 0;
    t->fp = NULL;
    if (t->save) {
        t->fp = (const unsigned char *)ff_rd_fixed(r, FF_MSG_FP_LEN);
    } else if (t->load) {
        size_t fl;
        const char *fp = ff_rd_str(r, &fl);
        if (fl != 0 && fl != FF_MSG_FP_LEN)
            ff_rd_fail(r);
        t->fp = fl > 0 ? (const unsigned char *)fp : NULL;
    }
    t->actor = actor_read(r, flags, i, &t->ctor);
    uint64_t nd = ff_rd_varint(r);
    /* Dependencies are earlier tasks; a task loaded from the storage has
     * none, and is not saved again. */
    if (nd > i || nd > (uint64_t)(r->end - r->p) || (flags & ~(uint64_t)FF_TASK_FLAGS) ||
        (t->load && (t->save || t->actor != FF_ACTOR_NONE || nd > 0)))
        ff_rd_fail(r);
    deps->r = *r;
    for (uint64_t k = 0; k < nd && !r->err; k++)
        if (ff_rd_varint(r) >= i)
            ff_rd_fail(r);
    deps->r.end = r->p;
    deps->n = r->err ? 0 : nd;
    t->args = ff_rd_str(r, &t->nargs);
    t->pre = ff_rd_str(r, &t->npre);
    uint64_t nr = ff_rd_varint(r);
    if (nr > FF_MSG_RES_MAX)
        ff_rd_fail(r);
    list_read(r, nr, L_RES, res);
    uint64_t retries = ff_rd_varint(r);
    t->timeout_ms = ff_rd_varint(r);
    uint64_t restarts = ff_rd_varint(r);
    /* A loaded task does not run: nothing to retry or time. Only an
     * actor's constructor restarts. */
    if (retries > FF_MSG_RETRIES_MAX || restarts > FF_MSG_RETRIES_MAX ||
        (restarts > 0 && t->actor != FF_ACTOR_CTOR) ||
        (t->load && (retries > 0 || t->timeout_ms > 0 || t->retry_exceptions)))
        ff_rd_fail(r);
    if (r->err)
        return FFLUA_EPROTO;
    t->max_retries = (uint32_t)retries;
    t->max_restarts = (uint32_t)restarts;
    t->ndeps = (uint32_t)nd; /* at most the bytes of a frame */
    t->nres = (uint32_t)nr;
    tasks->next++;
    return 0;
}

int ff_msg_run_end_write(ff_buf *b, uint64_t run) {
    size_t at;
    ff_frame_begin(b, FF_M_RUN_END, &at);
    ff_wr_varint(b, run);
    return ff_frame_end(b, at);
}

int ff_msg_run_end_read(const char *p, size_t n, uint64_t *run) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *run = ff_rd_varint(&r);
    return ff_rd_done(&r);
}

int ff_msg_workdir_write(ff_buf *b, const unsigned char hash[FF_MSG_HASH_LEN], const char *blob,
                         size_t n) {
    size_t at;
    ff_frame_begin(b, FF_M_WORKDIR, &at);
    ff_wr_fixed(b, hash, FF_MSG_HASH_LEN);
    ff_wr_str(b, blob, n);
    return ff_frame_end(b, at);
}

int ff_msg_workdir_read(const char *p, size_t n, const unsigned char **hash, const char **blob,
                        size_t *len) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *hash = ff_rd_fixed(&r, FF_MSG_HASH_LEN);
    *blob = ff_rd_str(&r, len);
    return ff_rd_done(&r);
}

int ff_msg_run_workdir_write(ff_buf *b, uint64_t run, const unsigned char hash[FF_MSG_HASH_LEN]) {
    size_t at;
    ff_frame_begin(b, FF_M_RUN_WORKDIR, &at);
    ff_wr_varint(b, run);
    ff_wr_fixed(b, hash, FF_MSG_HASH_LEN);
    return ff_frame_end(b, at);
}

int ff_msg_run_workdir_read(const char *p, size_t n, uint64_t *run, const unsigned char **hash) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *run = ff_rd_varint(&r);
    *hash = ff_rd_fixed(&r, FF_MSG_HASH_LEN);
    return ff_rd_done(&r);
}

/* Empty messages. */
static int empty_write(ff_buf *b, int type) {
    size_t at;
    ff_frame_begin(b, type, &at);
    return ff_frame_end(b, at);
}

int ff_msg_status_write(ff_buf *b) {
    return empty_write(b, FF_M_STATUS);
}

int ff_msg_status_read(const char *p, size_t n) {
    (void)p;
    return n == 0 ? 0 : FFLUA_EPROTO;
}

/* --- head -> worker ---------------------------------------------------------- */

size_t ff_msg_task_size(const ff_msg_task *m, const ff_msg_dep *deps) {
    size_t size = 1 + ff_varint_size(m->run) + ff_varint_size(m->index) + ff_varint_size(m->fid) +
                  ff_str_size(m->name_len) + ff_varint_size(m->ndeps);
    for (uint32_t d = 0; d < m->ndeps; d++)
        size += ff_varint_size(deps[d].index) + 1 + (deps[d].has ? ff_str_size(deps[d].len) : 0);
    return size + ff_str_size(m->nargs) + ff_str_size(m->npre) + ff_varint_size(m->cpus) +
           ff_varint_size(actor_flags(m->actor)) +
           (m->actor == FF_ACTOR_METHOD ? ff_varint_size(m->ctor) : 0) +
           ff_varint_size(m->timeout_ms);
}

int ff_msg_task_write(ff_buf *b, const ff_msg_task *m, const ff_msg_dep *deps) {
    size_t at;
    ff_frame_begin(b, FF_M_TASK, &at);
    ff_wr_varint(b, m->run);
    ff_wr_varint(b, m->index);
    ff_wr_varint(b, m->fid);
    ff_wr_str(b, m->name, m->name_len);
    ff_wr_varint(b, m->ndeps);
    for (uint32_t d = 0; d < m->ndeps; d++) {
        ff_wr_varint(b, deps[d].index);
        ff_wr_varint(b, deps[d].has ? 1 : 0);
        if (deps[d].has)
            ff_wr_str(b, deps[d].result, deps[d].len);
    }
    ff_wr_str(b, m->args, m->nargs);
    ff_wr_str(b, m->pre, m->npre);
    ff_wr_varint(b, m->cpus);
    ff_wr_varint(b, actor_flags(m->actor));
    if (m->actor == FF_ACTOR_METHOD)
        ff_wr_varint(b, m->ctor);
    ff_wr_varint(b, m->timeout_ms);
    return ff_frame_end(b, at);
}

int ff_msg_task_read(const char *p, size_t n, ff_msg_task *m, ff_msg_list *deps) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    m->run = ff_rd_varint(&r);
    m->index = ff_rd_varint(&r);
    m->fid = ff_rd_varint(&r);
    m->name = ff_rd_str(&r, &m->name_len);
    uint64_t nd = ff_rd_varint(&r);
    list_read(&r, nd, L_DEP, deps);
    m->args = ff_rd_str(&r, &m->nargs);
    m->pre = ff_rd_str(&r, &m->npre);
    m->cpus = ff_rd_varint(&r);
    m->actor = actor_read(&r, ff_rd_varint(&r), UINT64_MAX, &m->ctor);
    m->timeout_ms = ff_rd_varint(&r);
    m->ndeps = (uint32_t)deps->n; /* at most the bytes of a frame */
    return ff_rd_done(&r);
}

void ff_msg_next_dep(ff_msg_list *l, ff_msg_dep *d) {
    l->n--;
    d->index = ff_rd_varint(&l->r);
    d->has = ff_rd_varint(&l->r) != 0;
    d->result = NULL;
    d->len = 0;
    if (d->has)
        d->result = ff_rd_str(&l->r, &d->len);
}

int ff_msg_free_write(ff_buf *b, uint64_t run, const uint32_t *tasks, size_t n) {
    size_t at;
    ff_frame_begin(b, FF_M_FREE, &at);
    ff_wr_varint(b, run);
    ff_wr_varint(b, n);
    for (size_t k = 0; k < n; k++)
        ff_wr_varint(b, tasks[k]);
    return ff_frame_end(b, at);
}

int ff_msg_free_read(const char *p, size_t n, uint64_t *run, ff_msg_list *tasks) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *run = ff_rd_varint(&r);
    list_read(&r, ff_rd_varint(&r), L_INDEX, tasks);
    return ff_rd_done(&r);
}

/* --- head -> driver ---------------------------------------------------------- */

int ff_msg_done_write(ff_buf *b, const ff_msg_done *m) {
    size_t at;
    ff_frame_begin(b, FF_M_DONE, &at);
    ff_wr_varint(b, m->run);
    ff_wr_varint(b, m->index);
    ff_wr_varint(b, (uint64_t)m->status);
    ff_wr_str(b, m->bytes, m->len);
    ff_wr_str(b, m->worker, m->worker_len);
    ff_wr_varint(b, m->attempts);
    return ff_frame_end(b, at);
}

int ff_msg_done_read(const char *p, size_t n, ff_msg_done *m) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    m->run = ff_rd_varint(&r);
    m->index = ff_rd_varint(&r);
    uint64_t status = ff_rd_varint(&r);
    m->bytes = ff_rd_str(&r, &m->len);
    m->worker = ff_rd_str(&r, &m->worker_len);
    m->attempts = ff_rd_varint(&r);
    if (status >= FF_DONE_LAST)
        return FFLUA_EPROTO;
    m->status = (int)status;
    return ff_rd_done(&r);
}

void ff_msg_placement_begin(ff_buf *b, uint64_t run, uint64_t nplaces, size_t *at) {
    ff_frame_begin(b, FF_M_RUN_END, at);
    ff_wr_varint(b, run);
    ff_wr_varint(b, nplaces);
}

void ff_msg_placement_name(ff_buf *b, const char *name, size_t len) {
    ff_wr_str(b, name, len);
}

void ff_msg_placement_place(ff_buf *b, uint64_t place) {
    ff_wr_varint(b, place);
}

int ff_msg_placement_end(ff_buf *b, size_t at) {
    return ff_frame_end(b, at);
}

int ff_msg_placement_read(const char *p, size_t n, uint64_t *run, ff_msg_list *names,
                          ff_msg_list *places) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *run = ff_rd_varint(&r);
    list_read(&r, ff_rd_varint(&r), L_STR, names);
    /* The places: every varint left (their count is the run's). */
    places->r = r;
    places->n = 0;
    while (!r.err && r.p < r.end) {
        ff_rd_varint(&r);
        places->n++;
    }
    if (r.err)
        places->n = 0;
    return ff_rd_done(&r);
}

/* --- head -> asker ----------------------------------------------------------- */

void ff_msg_status_reply_begin(ff_buf *b, uint64_t nplaces, size_t *at) {
    ff_frame_begin(b, FF_M_STATUS_REPLY, at);
    ff_wr_varint(b, nplaces);
}

void ff_msg_status_place(ff_buf *b, const ff_msg_place *place, uint64_t nres) {
    ff_wr_str(b, place->name, place->len);
    ff_wr_str(b, (const char *)place->machine, FF_MACHINE_LEN);
    ff_wr_varint(b, place->running);
    ff_wr_varint(b, nres);
}

void ff_msg_status_res(ff_buf *b, const ff_msg_res_state *res) {
    ff_wr_str(b, res->name, res->len);
    ff_wr_varint(b, res->total);
    ff_wr_varint(b, res->free);
}

int ff_msg_status_reply_end(ff_buf *b, size_t at, const ff_msg_status_reply *m) {
    ff_wr_varint(b, m->queued);
    ff_wr_varint(b, m->running);
    ff_wr_varint(b, m->finished);
    return ff_frame_end(b, at);
}

int ff_msg_status_reply_read(const char *p, size_t n, ff_msg_status_reply *m, ff_msg_list *places) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    list_read(&r, ff_rd_varint(&r), L_PLACE, places);
    m->queued = ff_rd_varint(&r);
    m->running = ff_rd_varint(&r);
    m->finished = ff_rd_varint(&r);
    return ff_rd_done(&r);
}

void ff_msg_next_place(ff_msg_list *l, ff_msg_place *place, ff_msg_list *res) {
    l->n--;
    place->name = ff_rd_str(&l->r, &place->len);
    size_t len;
    place->machine = (const unsigned char *)ff_rd_str(&l->r, &len);
    place->running = ff_rd_varint(&l->r);
    list_read(&l->r, ff_rd_varint(&l->r), L_RES_STATE, res);
}

void ff_msg_next_res_state(ff_msg_list *l, ff_msg_res_state *res) {
    l->n--;
    res->name = ff_rd_str(&l->r, &res->len);
    res->total = ff_rd_varint(&l->r);
    res->free = ff_rd_varint(&l->r);
}

/* --- either way -------------------------------------------------------------- */

/* --- faults ------------------------------------------------------------------- */

int ff_msg_ping_write(ff_buf *b, uint64_t timeout_ms) {
    size_t at;
    ff_frame_begin(b, FF_M_PING, &at);
    ff_wr_varint(b, timeout_ms);
    return ff_frame_end(b, at);
}

int ff_msg_ping_read(const char *p, size_t n, uint64_t *timeout_ms) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *timeout_ms = ff_rd_varint(&r);
    return ff_rd_done(&r);
}

/* STARTED and HANDBACK: a run and task indices. */
static int tasks_write(ff_buf *b, int type, uint64_t run, const uint64_t *tasks, size_t n) {
    size_t at;
    ff_frame_begin(b, type, &at);
    ff_wr_varint(b, run);
    ff_wr_varint(b, n);
    for (size_t k = 0; k < n; k++)
        ff_wr_varint(b, tasks[k]);
    return ff_frame_end(b, at);
}

static int tasks_read(const char *p, size_t n, uint64_t *run, ff_msg_list *tasks) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *run = ff_rd_varint(&r);
    list_read(&r, ff_rd_varint(&r), L_INDEX, tasks);
    return ff_rd_done(&r);
}

int ff_msg_started_write(ff_buf *b, uint64_t run, const uint64_t *tasks, size_t n) {
    return tasks_write(b, FF_M_STARTED, run, tasks, n);
}

int ff_msg_started_read(const char *p, size_t n, uint64_t *run, ff_msg_list *tasks) {
    return tasks_read(p, n, run, tasks);
}

int ff_msg_handback_write(ff_buf *b, uint64_t run, const uint64_t *tasks, size_t n) {
    return tasks_write(b, FF_M_HANDBACK, run, tasks, n);
}

int ff_msg_handback_read(const char *p, size_t n, uint64_t *run, ff_msg_list *tasks) {
    return tasks_read(p, n, run, tasks);
}

int ff_msg_progress_write(ff_buf *b, const ff_msg_progress *m) {
    size_t at;
    ff_frame_begin(b, FF_M_PROGRESS, &at);
    ff_wr_varint(b, m->run);
    ff_wr_varint(b, m->done);
    ff_wr_varint(b, m->running);
    ff_wr_varint(b, m->failed);
    ff_wr_varint(b, m->retried);
    return ff_frame_end(b, at);
}

int ff_msg_progress_read(const char *p, size_t n, ff_msg_progress *m) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    m->run = ff_rd_varint(&r);
    m->done = ff_rd_varint(&r);
    m->running = ff_rd_varint(&r);
    m->failed = ff_rd_varint(&r);
    m->retried = ff_rd_varint(&r);
    return ff_rd_done(&r);
}

void ff_msg_times_begin(ff_buf *b, uint64_t run, uint64_t ntasks, size_t *at) {
    ff_frame_begin(b, FF_M_RUN_TIMES, at);
    ff_wr_varint(b, run);
    ff_wr_varint(b, ntasks);
}

void ff_msg_times_task(ff_buf *b, const uint64_t v[5]) {
    for (int k = 0; k < 5; k++)
        ff_wr_varint(b, v[k]);
}

int ff_msg_times_end(ff_buf *b, size_t at) {
    return ff_frame_end(b, at);
}

int ff_msg_times_read(const char *p, size_t n, uint64_t *run, uint64_t *ntasks,
                      ff_msg_list *tasks) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *run = ff_rd_varint(&r);
    *ntasks = ff_rd_varint(&r);
    if (*ntasks > n) /* 5 varints of a byte at least each */
        ff_rd_fail(&r);
    list_read(&r, *ntasks * 5, L_INDEX, tasks);
    if (*ntasks > 0 && tasks->n == 0)
        ff_rd_fail(&r);
    return ff_rd_done(&r);
}

int ff_msg_stopping_write(ff_buf *b, const char *why, size_t len) {
    size_t at;
    ff_frame_begin(b, FF_M_STOPPING, &at);
    ff_wr_str(b, why, len);
    return ff_frame_end(b, at);
}

int ff_msg_stopping_read(const char *p, size_t n, const char **why, size_t *len) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *why = ff_rd_str(&r, len);
    return ff_rd_done(&r);
}

int ff_msg_bye_write(ff_buf *b) {
    return empty_write(b, FF_M_BYE);
}

int ff_msg_bye_read(const char *p, size_t n) {
    (void)p;
    return n == 0 ? 0 : FFLUA_EPROTO;
}

/* --- storage ------------------------------------------------------------------ */

static void wr_strs(ff_buf *b, const ff_msg_str *args, size_t n) {
    ff_wr_varint(b, n);
    for (size_t i = 0; i < n; i++)
        ff_wr_str(b, args[i].p, args[i].len);
}

/* A list of strs: its count, checked against what is left, then the list. */
static void rd_strs(ff_rd *r, ff_msg_list *args) {
    list_read(r, ff_rd_varint(r), L_STR, args);
}

static void wr_machine(ff_buf *b, const unsigned char *machine) {
    ff_wr_str(b, (const char *)machine, machine != NULL ? FF_MACHINE_LEN : 0);
}

static const unsigned char *rd_machine(ff_rd *r) {
    size_t len;
    const char *p = ff_rd_str(r, &len);
    if (len != 0 && len != FF_MACHINE_LEN)
        ff_rd_fail(r);
    return len == FF_MACHINE_LEN ? (const unsigned char *)p : NULL;
}

int ff_msg_store_write(ff_buf *b, const ff_msg_store *m, const ff_msg_res *res,
                       const ff_msg_str *args, size_t nargs) {
    size_t at;
    ff_frame_begin(b, FF_M_STORE, &at);
    ff_wr_varint(b, m->req);
    wr_res(b, res, m->nres);
    wr_machine(b, m->machine);
    ff_wr_varint(b, m->op);
    wr_strs(b, args, nargs);
    return ff_frame_end(b, at);
}

int ff_msg_store_read(const char *p, size_t n, ff_msg_store *m, ff_msg_list *res,
                      ff_msg_list *args) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    m->req = ff_rd_varint(&r);
    rd_res_list(&r, res);
    m->nres = (uint32_t)res->n;
    m->machine = rd_machine(&r);
    m->op = ff_rd_varint(&r);
    m->args = (const char *)r.p;
    rd_strs(&r, args);
    m->args_len = (size_t)((const char *)r.p - m->args);
    if (m->op == 0 || m->op >= FF_STORE_OP_LAST)
        ff_rd_fail(&r);
    return ff_rd_done(&r);
}

int ff_msg_store_call_write(ff_buf *b, uint64_t req, uint64_t op, const ff_msg_str *args,
                            size_t nargs) {
    size_t at;
    ff_frame_begin(b, FF_M_STORE_CALL, &at);
    ff_wr_varint(b, req);
    ff_wr_varint(b, op);
    wr_strs(b, args, nargs);
    return ff_frame_end(b, at);
}

int ff_msg_store_call_forward(ff_buf *b, uint64_t req, const ff_msg_store *m) {
    size_t at;
    ff_frame_begin(b, FF_M_STORE_CALL, &at);
    ff_wr_varint(b, req);
    ff_wr_varint(b, m->op);
    ff_wr_fixed(b, m->args, m->args_len);
    return ff_frame_end(b, at);
}

int ff_msg_store_call_read(const char *p, size_t n, uint64_t *req, uint64_t *op,
                           ff_msg_list *args) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    *req = ff_rd_varint(&r);
    *op = ff_rd_varint(&r);
    rd_strs(&r, args);
    if (*op == 0 || *op >= FF_STORE_OP_LAST)
        ff_rd_fail(&r);
    return ff_rd_done(&r);
}

int ff_msg_store_reply_write(ff_buf *b, uint64_t req, int ok, const ff_msg_str *out, size_t n) {
    size_t at;
    ff_frame_begin(b, FF_M_STORE_REPLY, &at);
    ff_wr_varint(b, req);
    ff_wr_varint(b, ok ? 1 : 0);
    wr_strs(b, out, n);
    return ff_frame_end(b, at);
}

int ff_msg_store_reply_read(const char *p, size_t n, ff_msg_store_reply *m, ff_msg_list *out) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    m->req = ff_rd_varint(&r);
    uint64_t ok = ff_rd_varint(&r);
    m->out = (const char *)r.p;
    rd_strs(&r, out);
    m->out_len = (size_t)((const char *)r.p - m->out);
    if (ok > 1)
        ff_rd_fail(&r);
    m->ok = (int)ok;
    return ff_rd_done(&r);
}

int ff_msg_store_reply_forward(ff_buf *b, uint64_t req, const ff_msg_store_reply *m) {
    size_t at;
    ff_frame_begin(b, FF_M_STORE_REPLY, &at);
    ff_wr_varint(b, req);
    ff_wr_varint(b, m->ok ? 1 : 0);
    ff_wr_fixed(b, m->out, m->out_len);
    return ff_frame_end(b, at);
}

int ff_msg_run_store_write(ff_buf *b, const ff_msg_run_store *m, const ff_msg_res *res) {
    size_t at;
    ff_frame_begin(b, FF_M_RUN_STORE, &at);
    ff_wr_varint(b, m->run);
    wr_res(b, res, m->nres);
    wr_machine(b, m->machine);
    ff_wr_str(b, m->path, m->path_len);
    ff_wr_str(b, m->wf, m->wf_len);
    return ff_frame_end(b, at);
}

int ff_msg_run_store_read(const char *p, size_t n, ff_msg_run_store *m, ff_msg_list *res) {
    ff_rd r;
    ff_rd_init(&r, p, n);
    m->run = ff_rd_varint(&r);
    rd_res_list(&r, res);
    m->nres = (uint32_t)res->n;
    m->machine = rd_machine(&r);
    m->path = ff_rd_str(&r, &m->path_len);
    m->wf = ff_rd_str(&r, &m->wf_len);
    if (m->path_len == 0 || m->wf_len == 0)
        ff_rd_fail(&r);
    return ff_rd_done(&r);
}
