/*
 * retry_budget.h - how many retries the gateway may spend (issue 6).
 *
 * Retries help against a single slow or failed replica and hurt in a
 * cluster-wide failure: every caller retrying multiplies the load on what is
 * left.  The budget bounds them: each call deposits per_call tokens (0.2: at
 * most one retry per five calls, sustained), the bucket also fills at per_s
 * tokens a second (retries stay possible when traffic is low), and holds at
 * most cap.  Each retry -- another replica after a failed attempt, or
 * another round after a backoff pause -- withdraws one token; when none is
 * left the call ends with its last error instead (counted in `denied`).
 * Following a not-leader answer to the leader it names is routing, not a
 * retry, and costs nothing (it is bounded per call on its own).
 *
 * The same scheme as Finagle's RetryBudget and gRPC's retry throttling.
 * Thread-safe; the time is the caller's (monotonic ms), so tests drive it.
 */
#ifndef VX_GATEWAY_RETRY_BUDGET_H
#define VX_GATEWAY_RETRY_BUDGET_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct vx_retry_budget {
    pthread_mutex_t mu;
    double tokens, per_call, per_s, cap;
    long long last_ms;
    uint64_t granted, denied;
} vx_retry_budget;

/* Starts full. */
void vx_retry_budget_init(vx_retry_budget *b, double per_call, double per_s, double cap, long long now_ms);
void vx_retry_budget_destroy(vx_retry_budget *b);
void vx_retry_budget_deposit(vx_retry_budget *b, long long now_ms);  /* a call begins */
bool vx_retry_budget_withdraw(vx_retry_budget *b, long long now_ms); /* may it retry? */
void vx_retry_budget_counts(vx_retry_budget *b, uint64_t *granted, uint64_t *denied);

#endif
