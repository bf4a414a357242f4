/*
 * hugemem.h - large tables in transparent huge pages.
 *
 * The store's label map is read at random by every search (one slot per
 * hit, right after the graph search has filled the TLB with the index's
 * pages); with 4 KiB pages nearly every such read also misses the TLB.
 * Where the kernel runs transparent huge pages in madvise mode (the usual
 * default) a region must ask for them.
 *
 * vx_huge_alloc maps a block of 2 MiB or more aligned to 2 MiB and asks for
 * huge pages on the whole 2 MiB pages inside it; the tail stays in small
 * pages, so no memory goes to rounding.  The memory is zero and, as with
 * calloc's large blocks, a page takes memory only once touched (a huge page
 * then takes 2 MiB at once: callers keep small tables in small pages).
 * Blocks under 2 MiB come from calloc, and so does every block in
 * sanitizer builds (LeakSanitizer does not scan anonymous mappings).  Free
 * with vx_huge_free and the same size.
 *
 * Not used for the index's record chunks yet: a prototype that put whole
 * chunks in huge pages (rounding each up to 2 MiB, up to half a chunk
 * wasted) measured +7-10% in-process queries/s on SIFT-100k, but with only
 * the whole 2 MiB pages inside each chunk (no waste) +1.5-3%, within the
 * noise; the way to both is to carve chunks from larger huge-page slabs.
 */
#ifndef VX_BASE_HUGEMEM_H
#define VX_BASE_HUGEMEM_H

#include <stddef.h>

#define VX_HUGE_PAGE ((size_t)2 << 20)

/* bytes of zeroed memory, or NULL; huge pages are a hint the kernel may
 * ignore (THP off, none free), never a failure. */
void *vx_huge_alloc(size_t bytes);
void vx_huge_free(void *p, size_t bytes);
/* Whether blocks of 2 MiB or more are mapped (aligned, huge pages asked
 * for); false in sanitizer builds. */
int vx_huge_mapped(void);

#endif
