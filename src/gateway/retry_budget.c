/*
 * retry_budget.c - see retry_budget.h.
 */
#include "gateway/retry_budget.h"

static void refill(vx_retry_budget *b, long long now_ms)
{
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) / 1000.0 * b->per_s;
        if (b->tokens > b->cap) b->tokens = b->cap;
        b->last_ms = now_ms;
    }
}

void vx_retry_budget_init(vx_retry_budget *b, double per_call, double per_s, double cap, long long now_ms)
{
    pthread_mutex_init(&b->mu, NULL);
    b->per_call = per_call;
    b->per_s = per_s;
    b->cap = cap;
    b->tokens = cap;
    b->last_ms = now_ms;
    b->granted = b->denied = 0;
}

void vx_retry_budget_destroy(vx_retry_budget *b) { pthread_mutex_destroy(&b->mu); }

void vx_retry_budget_deposit(vx_retry_budget *b, long long now_ms)
{
    pthread_mutex_lock(&b->mu);
    refill(b, now_ms);
    b->tokens += b->per_call;
    if (b->tokens > b->cap) b->tokens = b->cap;
    pthread_mutex_unlock(&b->mu);
}

bool vx_retry_budget_withdraw(vx_retry_budget *b, long long now_ms)
{
    pthread_mutex_lock(&b->mu);
    refill(b, now_ms);
    bool ok = b->tokens >= 1.0;
    if (ok) {
        b->tokens -= 1.0;
        b->granted++;
    } else {
        b->denied++;
    }
    pthread_mutex_unlock(&b->mu);
    return ok;
}

void vx_retry_budget_counts(vx_retry_budget *b, uint64_t *granted, uint64_t *denied)
{
    pthread_mutex_lock(&b->mu);
    *granted = b->granted;
    *denied = b->denied;
    pthread_mutex_unlock(&b->mu);
}
