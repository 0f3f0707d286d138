-- Idempotency-Key (IETF httpapi idempotency-key draft): one row per caller and key.
-- `token` is chosen when the key is first seen (for POST /orders: the order number), so a
-- retry after a cut-off answer reaches the same workflow instead of placing a second order.
CREATE TABLE idempotency_keys (
    caller          text NOT NULL,
    key             text NOT NULL,
    fingerprint     bytea NOT NULL,
    token           text NOT NULL,
    state           text NOT NULL CHECK (state IN ('running', 'done', 'retryable')),
    response_status integer,
    response_body   jsonb,
    response_headers jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
