/*
 * hugemem.c - see hugemem.h.
 */
#define _GNU_SOURCE
#include "base/hugemem.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Sanitizer builds take every block from calloc: LeakSanitizer does not
 * scan anonymous mappings for pointers, so heap blocks referenced only from
 * one (the label map's long ids) would be reported as leaks. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define VX_HUGE_SMALL_ONLY 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define VX_HUGE_SMALL_ONLY 1
#endif
#endif

#ifdef VX_HUGE_SMALL_ONLY
void *vx_huge_alloc(size_t bytes) { return calloc(1, bytes ? bytes : 1); }
void vx_huge_free(void *p, size_t bytes)
{
    (void)bytes;
    free(p);
}
int vx_huge_mapped(void) { return 0; }
#else
static size_t page_round(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) & ~(pg - 1);
}

void *vx_huge_alloc(size_t bytes)
{
    if (bytes < VX_HUGE_PAGE) return calloc(1, bytes ? bytes : 1);
    size_t len = page_round(bytes), span = len + VX_HUGE_PAGE;
    uint8_t *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + VX_HUGE_PAGE - 1) & ~(uintptr_t)(VX_HUGE_PAGE - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (raw + span > p + len) munmap(p + len, (size_t)(raw + span - (p + len)));
    (void)madvise(p, len & ~(VX_HUGE_PAGE - 1), MADV_HUGEPAGE); /* EINVAL where THP is off */
    return p;
}

void vx_huge_free(void *p, size_t bytes)
{
    if (p == NULL) return;
    if (bytes < VX_HUGE_PAGE) free(p);
    else munmap(p, page_round(bytes));
}

int vx_huge_mapped(void) { return 1; }
#endif
