/* cairn_err.c - strings for the CAIRN_E* codes (see cairn_err.h). */
#include "cairn_err.h"

#include <stdarg.h>
#include <stdio.h>

const char *cairn_strerror(int err)
{
    switch (err) {
    case CAIRN_OK:
        return "ok";
#define CAIRN_ERR_STR_(name, str) \
    case CAIRN_E##name:           \
        return str;
        CAIRN_ERRNO_MAP(CAIRN_ERR_STR_)
#undef CAIRN_ERR_STR_
    default:
        return "unknown error";
    }
}

void cairn_errbuf_set(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (!errbuf || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}
