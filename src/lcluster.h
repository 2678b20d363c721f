/*
 * lcluster.h: the cluster client binding (lcluster.c), used by the cluster
 * driver in ldriver.c.
 */
#ifndef FF_LCLUSTER_H
#define FF_LCLUSTER_H

#include <lauxlib.h>
#include <lua.h>

#include "codec.h"

typedef struct ffl_client ffl_client;

/// The open client at idx (raises when closed).
ffl_client *ffl_check_client(lua_State *L, int idx);
/// Frames to send are appended here, then sent by ffl_client_flush.
ff_buf *ffl_client_out(ffl_client *c);
/// Sends what is in the out buffer: 0, or -1 with the reason in error().
int ffl_client_flush(ffl_client *c);
/// The next frame (payload valid until the next call): 0; 1 on timeout;
/// -1 when the connection is gone or broken (reason in error()).
int ffl_client_recv(ffl_client *c, int *type, const char **p, size_t *n, int timeout_ms);
const char *ffl_client_error(ffl_client *c);
const char *ffl_client_address(ffl_client *c);

extern const luaL_Reg ffl_cluster_funcs[];
void ffl_cluster_open(lua_State *L);

#endif
