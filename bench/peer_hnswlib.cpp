/*
 * peer_hnswlib.cpp - the C API of peer_hnswlib.h over hnswlib's
 * HierarchicalNSW<float>.  The only file of the project that includes
 * <hnswlib/hnswlib.h> (it defines non-inline functions).
 */
#include "peer_hnswlib.h"

#include <hnswlib/hnswlib.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <new>
#include <vector>

struct vx_peer {
    size_t dim;
    int metric; /* 0 l2, 1 ip, 2 cosine */
    std::unique_ptr<hnswlib::SpaceInterface<float>> space;
    std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnsw;
};

namespace
{

/* Copy v into buf normalized to unit L2 norm (a zero vector stays zero). */
const float *normalized(const float *v, size_t dim, std::vector<float> &buf)
{
    buf.resize(dim);
    double ss = 0;
    for (size_t i = 0; i < dim; i++)
        ss += (double)v[i] * v[i];
    float inv = ss > 0 ? (float)(1.0 / std::sqrt(ss)) : 0.0f;
    for (size_t i = 0; i < dim; i++)
        buf[i] = v[i] * inv;
    return buf.data();
}

/* hnswlib's inner-product space returns 1 - dot; Vectron reports -dot. */
float to_vx_distance(const vx_peer *p, float d)
{
    return p->metric == 0 ? d : d - 1.0f;
}

} // namespace

extern "C" vx_peer *vx_peer_hnswlib_new(size_t dim, int metric, size_t max_elements, size_t m,
                                        size_t ef_construction)
{
    if (dim == 0 || metric < 0 || metric > 2 || max_elements == 0 || m < 2 ||
        ef_construction == 0) {
        std::fprintf(stderr,
                     "hnswlib peer: bad argument (dim=%zu metric=%d max_elements=%zu m=%zu "
                     "ef_construction=%zu)\n",
                     dim, metric, max_elements, m, ef_construction);
        return nullptr;
    }
    try {
        std::unique_ptr<vx_peer> p(new vx_peer());
        p->dim = dim;
        p->metric = metric;
        if (metric == 0)
            p->space.reset(new hnswlib::L2Space(dim));
        else
            p->space.reset(new hnswlib::InnerProductSpace(dim));
        p->hnsw.reset(
            new hnswlib::HierarchicalNSW<float>(p->space.get(), max_elements, m, ef_construction));
        return p.release();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "hnswlib peer: new: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "hnswlib peer: new: unknown exception\n");
    }
    return nullptr;
}

extern "C" int vx_peer_hnswlib_add(vx_peer *p, const float *vec, uint64_t label)
{
    try {
        if (p->metric == 2) {
            thread_local std::vector<float> buf;
            vec = normalized(vec, p->dim, buf);
        }
        p->hnsw->addPoint(vec, (hnswlib::labeltype)label);
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "hnswlib peer: add label %llu: %s\n", (unsigned long long)label,
                     e.what());
    } catch (...) {
        std::fprintf(stderr, "hnswlib peer: add label %llu: unknown exception\n",
                     (unsigned long long)label);
    }
    return -1;
}

extern "C" void vx_peer_hnswlib_set_ef(vx_peer *p, size_t ef)
{
    p->hnsw->setEf(ef);
}

extern "C" size_t vx_peer_hnswlib_search(vx_peer *p, const float *q, size_t k, uint64_t *labels_out,
                                         float *dist_out)
{
    try {
        if (p->metric == 2) {
            thread_local std::vector<float> buf;
            q = normalized(q, p->dim, buf);
        }
        auto res = p->hnsw->searchKnn(q, k);
        /* The queue has the farthest on top: fill the outputs from the back. */
        size_t n = res.size();
        for (size_t i = n; i-- > 0;) {
            const auto &top = res.top();
            if (labels_out) labels_out[i] = (uint64_t)top.second;
            if (dist_out) dist_out[i] = to_vx_distance(p, top.first);
            res.pop();
        }
        return n;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "hnswlib peer: search: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "hnswlib peer: search: unknown exception\n");
    }
    return 0;
}

extern "C" void vx_peer_hnswlib_free(vx_peer *p)
{
    if (p == nullptr) return;
    /* Destroy the index before the space it points at. */
    p->hnsw.reset();
    p->space.reset();
    delete p;
}
