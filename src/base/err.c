#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *vx_strerror(int code)
{
    switch (code) {
    case VX_OK:
        return "ok";
#define VX__ERR_STR(name, num, str)                                            \
    case VX_E##name:                                                           \
        return str;
        VX_ERR_MAP(VX__ERR_STR)
#undef VX__ERR_STR
    }
    return "unknown error";
}

int vx_errf(char *buf, size_t n, int code, const char *fmt, ...)
{
    if (buf != NULL && n > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, n, fmt, ap);
        va_end(ap);
    }
    return code;
}
