/*
 * lfs.h: the Lua binding of the file helpers of the stdlib's fs module
 * (lfs.c): content hashes, directory listings, glob matching. Not
 * installed; called from the thread that runs the state.
 */
#ifndef FFLUA_LFS_H
#define FFLUA_LFS_H

#include <lauxlib.h>

/* core.file_hash, core.dir_list, core.fnmatch. */
extern const luaL_Reg ffl_fs_funcs[];

#endif
