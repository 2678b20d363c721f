/*
 * lgraph.h: the Lua binding of the workflow graph (lgraph.c).
 */
#ifndef FF_LGRAPH_H
#define FF_LGRAPH_H

#include <lauxlib.h>
#include <lua.h>

typedef struct ffl_ctx ffl_ctx;

/// The state's engine context, made on first use. Applies queued node
/// releases. Raises if the engine is closed.
ffl_ctx *ffl_ctx_get(lua_State *L);

/// Registers the metatables; called by luaopen_functionfuse_core.
void ffl_graph_open(lua_State *L);

/// The graph functions of functionfuse.core.
extern const luaL_Reg ffl_graph_funcs[];

#endif
