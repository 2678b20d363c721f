/*
 * lcodec.h: the Lua binding of the codec (lcodec.c): encode, decode and
 * the registration of classes and serializers. Not installed; called from
 * the thread that runs the state.
 */
#ifndef FFLUA_LCODEC_H
#define FFLUA_LCODEC_H

#include <lauxlib.h>

/* The codec's functions of functionfuse.core. */
extern const luaL_Reg ffl_codec_funcs[];

#endif
