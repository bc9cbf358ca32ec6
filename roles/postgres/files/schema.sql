-- Sapphire trading schema: the five time-partitioned tables of the health contract.
-- Idempotent: safe to run on every deploy. TimescaleDB hypertables where the extension
-- is available, native range partitions by day otherwise (with a DEFAULT partition so a
-- write never fails for lack of a partition). Both carry (symbol, timestamp) indexes.

CREATE TABLE IF NOT EXISTS trades (
    timestamp   TIMESTAMPTZ   NOT NULL,
    symbol      VARCHAR(20)   NOT NULL,
    agent_id    VARCHAR(63)   NOT NULL,
    side        VARCHAR(4)    NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity    NUMERIC(28,10) NOT NULL,
    price       NUMERIC(28,10) NOT NULL,
    pnl         NUMERIC(28,10) NOT NULL DEFAULT 0,
    order_id    VARCHAR(64)
) PARTITION BY RANGE (timestamp);

CREATE TABLE IF NOT EXISTS agent_decisions (
    timestamp   TIMESTAMPTZ   NOT NULL,
    agent_id    VARCHAR(63)   NOT NULL,
    symbol      VARCHAR(20)   NOT NULL,
    decision    VARCHAR(16)   NOT NULL,
    confidence  DOUBLE PRECISION,
    rationale   TEXT
) PARTITION BY RANGE (timestamp);

CREATE TABLE IF NOT EXISTS signals (
    timestamp   TIMESTAMPTZ   NOT NULL,
    symbol      VARCHAR(20)   NOT NULL,
    agent_id    VARCHAR(63)   NOT NULL,
    signal      VARCHAR(32)   NOT NULL,
    strength    DOUBLE PRECISION
) PARTITION BY RANGE (timestamp);

CREATE TABLE IF NOT EXISTS liquidations (
    timestamp   TIMESTAMPTZ   NOT NULL,
    symbol      VARCHAR(20)   NOT NULL,
    side        VARCHAR(5)    NOT NULL,
    quantity    NUMERIC(28,10) NOT NULL,
    price       NUMERIC(28,10) NOT NULL
) PARTITION BY RANGE (timestamp);

CREATE TABLE IF NOT EXISTS whale_transactions (
    timestamp   TIMESTAMPTZ   NOT NULL,
    symbol      VARCHAR(20)   NOT NULL,
    amount      NUMERIC(38,10) NOT NULL,
    usd_value   NUMERIC(28,2),
    from_address VARCHAR(128),
    to_address  VARCHAR(128)
) PARTITION BY RANGE (timestamp);

-- Default partitions and today's +/- a few days' partitions; sapphire_ensure_partitions()
-- is also what the postgres role's maintenance calls to roll partitions forward.
CREATE OR REPLACE FUNCTION sapphire_ensure_partitions(days_back integer DEFAULT 1,
                                                      days_ahead integer DEFAULT 7)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    t text;
    d date;
    part text;
    created integer := 0;
BEGIN
    FOREACH t IN ARRAY ARRAY['trades', 'agent_decisions', 'signals', 'liquidations', 'whale_transactions'] LOOP
        IF to_regclass(t || '_default') IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
            created := created + 1;
        END IF;
        FOR d IN SELECT generate_series(current_date - days_back, current_date + days_ahead, interval '1 day')::date LOOP
            part := t || '_p' || to_char(d, 'YYYYMMDD');
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               part, t, d::timestamptz, (d + 1)::timestamptz);
                created := created + 1;
            END IF;
        END LOOP;
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (symbol, timestamp DESC)',
                       t || '_symbol_timestamp_idx', t);
    END LOOP;
    RETURN created;
END;
$$;

SELECT sapphire_ensure_partitions();

CREATE INDEX IF NOT EXISTS agent_decisions_agent_timestamp_idx ON agent_decisions (agent_id, timestamp DESC);
CREATE INDEX IF NOT EXISTS trades_agent_timestamp_idx ON trades (agent_id, timestamp DESC);
