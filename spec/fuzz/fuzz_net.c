/*
 * fuzz_net.c: libFuzzer target for what a hostile peer can send: the
 * handshake messages and every message the head reads after it (see
 * ff_head_fuzz). Must never crash, leak or read out of bounds.
 */
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "net.h"
#include "text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data;
    ff_hello h;
    ff_authmsg a;
    ff_hello_read(p, size, &h);
    ff_authmsg_read(p, size, &a);
    int type;
    const char *payload;
    size_t plen, total;
    ff_frame_parse(p, size, FF_FRAME_MAX, &type, &payload, &plen, &total);
    ff_head_fuzz(p, size);
    /* What a peer says reaches logs escaped: printable, never a line end. */
    char esc[80];
    ff_text_escape(esc, sizeof esc, p, size);
    for (const char *q = esc; *q != '\0'; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            __builtin_trap();
    if (ff_text_escape_check(p, size) > size)
        __builtin_trap();
    return 0;
}
