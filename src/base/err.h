/*
 * err.h - the one error vocabulary of Vectron.
 *
 * Every fallible function returns 0 on success or a negative VX_E* code.
 * The codes are generated from one X-macro table so the enum and the strings
 * can never drift apart (the raft ERR_CODE_TO_STRING_MAP / libuv UV_ERRNO_MAP
 * pattern).  Long-lived objects keep an errmsg buffer for context; the code
 * says what class of failure it was, the message says where and why.
 */
#ifndef VX_BASE_ERR_H
#define VX_BASE_ERR_H

#include <stddef.h>

#define VX_ERR_MAP(X)                                                          \
    X(NOMEM, 1, "out of memory")                                               \
    X(INVAL, 2, "invalid argument")                                            \
    X(NOTFOUND, 3, "not found")                                                \
    X(EXISTS, 4, "already exists")                                             \
    X(IO, 5, "I/O error")                                                      \
    X(CORRUPT, 6, "data is corrupt")                                           \
    X(FORMAT, 7, "unsupported or foreign file format")                         \
    X(DIM, 8, "vector dimension mismatch")                                     \
    X(FULL, 9, "capacity exhausted")                                           \
    X(STATE, 10, "operation not valid in the current state")                   \
    X(FATAL, 11, "fatal storage error; replica is fail-stopped")               \
    X(RANGE, 12, "value out of range")

enum {
    VX_OK = 0,
#define VX__ERR_ENUM(name, num, str) VX_E##name = -(num),
    VX_ERR_MAP(VX__ERR_ENUM)
#undef VX__ERR_ENUM
};

/* Static string for an error code; never NULL. */
const char *vx_strerror(int code);

/* Format into buf (size n) like snprintf, return code unchanged: lets a
 * function write `return vx_errf(errbuf, n, VX_EINVAL, "dim %u", d);`. */
int vx_errf(char *buf, size_t n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
