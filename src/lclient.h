/*
 * lclient.h: the cluster client binding (lclient.c): the ClusterClient
 * type, and the blocking connection the cluster driver (ldriver.c) runs
 * its workflows over. Not installed; called from the thread that runs the
 * state.
 */
#ifndef FFLUA_LCLIENT_H
#define FFLUA_LCLIENT_H

#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>

#include "buf.h"
#include "msg.h"

typedef struct ffl_client ffl_client;

/* The open client at idx (raises when closed). */
ffl_client *ffl_check_client(lua_State *L, int idx);
/* Frames to send are written here (msg.h), then sent by ffl_client_flush. */
ff_buf *ffl_client_out(ffl_client *c);
/* Sends what is in the out buffer: 0, or -1 with the reason in error()
 * (also when the head takes nothing for its heartbeat timeout). */
int ffl_client_flush(ffl_client *c);
/* The next frame (payload valid until the next call): 0; 1 on timeout;
 * -1 when the connection is gone or broken (reason in error()). PINGs
 * are consumed here (they set the heartbeat timeout), and a STOPPING from
 * the head fails with its reason. With timeout_ms < 0 it waits as long as
 * the head shows signs of life: nothing from it for its heartbeat timeout
 * (FF_HEARTBEAT_MS until its first PING) fails, and breaks the client. */
int ffl_client_recv(ffl_client *c, int *type, const char **p, size_t *n, int timeout_ms);
const char *ffl_client_error(ffl_client *c);
const char *ffl_client_address(ffl_client *c);

/* Reads where a storage is, from the table at idx ({ resources = {name =
 * amount}, machine = hex }), into res (names kept by the table) and
 * machine; returns whether a machine was given. Raises on bad values. */
int ffl_client_store_where(lua_State *L, int idx, ff_msg_res *res, uint32_t *nres,
                           unsigned char machine[FF_MACHINE_LEN]);
/* Sends the STORE m (its req set here) and waits for its reply, skipping
 * the frames of runs that ended: 0 and the outputs in out, or 1 when the
 * storage failed (out holds its message). Out points into the client's
 * buffer until the next receive. Raises when the connection fails. */
int ffl_client_store(lua_State *L, ffl_client *c, ff_msg_store *m, const ff_msg_res *res,
                     const ff_msg_str *args, size_t n, ff_msg_list *out);

/* core.cluster_connect. */
extern const luaL_Reg ffl_client_funcs[];
/* Registers the ClusterClient metatable; called by luaopen_functionfuse_core. */
void ffl_client_open(lua_State *L);

#endif
