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

typedef struct ffl_client ffl_client;

/* The open client at idx (raises when closed). */
ffl_client *ffl_check_client(lua_State *L, int idx);
/* Frames to send are written here (msg.h), then sent by ffl_client_flush. */
ff_buf *ffl_client_out(ffl_client *c);
/* Sends what is in the out buffer: 0, or -1 with the reason in error(). */
int ffl_client_flush(ffl_client *c);
/* The next frame (payload valid until the next call): 0; 1 on timeout;
 * -1 when the connection is gone or broken (reason in error()). */
int ffl_client_recv(ffl_client *c, int *type, const char **p, size_t *n, int timeout_ms);
const char *ffl_client_error(ffl_client *c);
const char *ffl_client_address(ffl_client *c);

/* core.cluster_connect. */
extern const luaL_Reg ffl_client_funcs[];
/* Registers the ClusterClient metatable; called by luaopen_functionfuse_core. */
void ffl_client_open(lua_State *L);

#endif
