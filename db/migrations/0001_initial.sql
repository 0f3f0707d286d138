-- Accounts, sessions and integration keys -------------------------------------------------

CREATE TABLE accounts (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number              text NOT NULL UNIQUE CHECK (number ~ '^[A-Z0-9]{2}-[0-9A-Z]{8}$'),
    username            text NOT NULL,
    email               text NOT NULL,
    password_hash       text NOT NULL,
    role                text NOT NULL DEFAULT 'customer'
                        CHECK (role IN ('customer', 'host', 'support', 'administrator')),
    verified            boolean NOT NULL DEFAULT false,
    activated           boolean NOT NULL DEFAULT true,
    first_name          text,
    last_name           text,
    title               text CHECK (title IN ('Mr', 'Mrs', 'Ms', 'Mx')),
    date_of_birth       date,
    phone               text,
    country             text,
    first_address_line  text,
    second_address_line text,
    city                text,
    state               text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX accounts_username_key ON accounts (lower(username));
CREATE UNIQUE INDEX accounts_email_key ON accounts (lower(email));

-- Keys are stored only as SHA-256 hashes: a 128-bit random key needs no slow hash, and a
-- lookup by hash stays one index probe per request.
CREATE TABLE sessions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts (id),
    key_hash     bytea NOT NULL UNIQUE,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz
);

CREATE TABLE integration_keys (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    level      text NOT NULL CHECK (level IN ('administrator', 'payments')),
    key_hash   bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Failed password attempts, for throttling guesses per account.
CREATE TABLE login_failures (
    account_id bigint NOT NULL REFERENCES accounts (id),
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_account ON login_failures (account_id, failed_at);

-- Events and sections ---------------------------------------------------------------------

CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY (START WITH 16993717817996) PRIMARY KEY,
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    host_id     bigint REFERENCES accounts (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at >= starts_at)
);

-- `sold` and `reserved` are counters changed only by conditional UPDATEs in the same
-- transaction as the hold and ticket rows they summarise; the audit recounts them.
-- `reserved` may still include holds whose end has passed but that no transaction has
-- swept yet: readers use the live-hold sum (see db/sections.py), writers sweep first.
CREATE TABLE sections (
    id          bigint GENERATED ALWAYS AS IDENTITY (START WITH 16993717900000) PRIMARY KEY,
    event_id    bigint NOT NULL REFERENCES events (id),
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    base_price  numeric(12, 2) NOT NULL CHECK (base_price >= 0),
    sales_start timestamptz NOT NULL,
    sales_end   timestamptz NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    capacity    integer NOT NULL CHECK (capacity >= 0),
    sold        integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    reserved    integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (sold + reserved <= capacity),
    CHECK (sales_end >= sales_start)
);
CREATE INDEX sections_event ON sections (event_id);

-- Orders ----------------------------------------------------------------------------------

CREATE TABLE orders (
    number       text PRIMARY KEY,
    seq          bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- insertion order, for sorting
    customer_id  bigint NOT NULL REFERENCES accounts (id),
    status       text NOT NULL
                 CHECK (status IN ('Placed', 'Fulfilled', 'Cancelled', 'Timed Out', 'Voided', 'Returned')),
    placed_at    timestamptz NOT NULL,
    hold_expires timestamptz,
    subtotal     numeric(12, 2) NOT NULL CHECK (subtotal >= 0),
    fees         numeric(12, 2) NOT NULL CHECK (fees >= 0),
    total        numeric(12, 2) NOT NULL,
    closed_at    timestamptz,
    CHECK (total = subtotal + fees)
);
CREATE INDEX orders_customer ON orders (customer_id, placed_at);
CREATE INDEX orders_placed ON orders (placed_at);
CREATE INDEX orders_status ON orders (status, placed_at);

CREATE TABLE order_items (
    order_number text NOT NULL REFERENCES orders (number),
    section_id   bigint NOT NULL REFERENCES sections (id),
    number       text NOT NULL UNIQUE,
    quantity     integer NOT NULL CHECK (quantity > 0),
    unit_price   numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    unit_fee     numeric(12, 2) NOT NULL CHECK (unit_fee >= 0),
    PRIMARY KEY (order_number, section_id)
);

-- A hold is live while released_at IS NULL and expires_at > now(). It is released exactly
-- once: every release is an UPDATE ... WHERE released_at IS NULL.
CREATE TABLE holds (
    order_number   text NOT NULL REFERENCES orders (number),
    section_id     bigint NOT NULL REFERENCES sections (id),
    customer_id    bigint NOT NULL REFERENCES accounts (id),
    quantity       integer NOT NULL CHECK (quantity > 0),
    expires_at     timestamptz NOT NULL,
    released_at    timestamptz,
    release_reason text CHECK (release_reason IN ('sold', 'cancelled', 'timed out', 'expired')),
    PRIMARY KEY (order_number, section_id)
);
CREATE INDEX holds_unreleased ON holds (section_id, expires_at) WHERE released_at IS NULL;
CREATE INDEX holds_customer_unreleased ON holds (customer_id, section_id) WHERE released_at IS NULL;

-- One row per ticket; (order, section, unit) is unique so an order's tickets can only ever
-- be issued once, whatever retries happen.
CREATE TABLE tickets (
    serial       text PRIMARY KEY CHECK (serial ~ '^[0-9A-Z]{6}-[0-9A-Z]{12}$'),
    order_number text NOT NULL REFERENCES orders (number),
    section_id   bigint NOT NULL REFERENCES sections (id),
    unit         integer NOT NULL,
    owner_id     bigint NOT NULL REFERENCES accounts (id),
    status       text NOT NULL DEFAULT 'Issued',
    issued_at    timestamptz NOT NULL DEFAULT now(),
    redeemed_at  timestamptz,
    UNIQUE (order_number, section_id, unit)
);
CREATE INDEX tickets_owner ON tickets (owner_id, issued_at);
CREATE INDEX tickets_section ON tickets (section_id);

-- Every payment and settlement attempt, whatever its outcome. `attempt_id` is chosen by
-- the workflow (or the API) before the write, so a retried write records nothing twice.
CREATE TABLE payments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempt_id   text NOT NULL UNIQUE,
    order_number text NOT NULL REFERENCES orders (number),
    reference    text,
    amount       numeric NOT NULL,
    source       text NOT NULL CHECK (source IN ('card', 'signal', 'http')),
    outcome      text NOT NULL,
    card_last4   text CHECK (card_last4 ~ '^[0-9]{4}$'),
    detail       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_order ON payments (order_number, created_at);
-- A reference fulfils at most one order, once.
CREATE UNIQUE INDEX payments_applied_reference ON payments (order_number, reference)
    WHERE outcome IN ('Authorised', 'Settled');
