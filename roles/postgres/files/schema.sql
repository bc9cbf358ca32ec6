-- Sapphire trading schema: the five time-partitioned tables of the health contract.
-- Idempotent: safe to run on every deploy. TimescaleDB hypertables where the extension
-- is available, native range partitions by day otherwise (with a DEFAULT partition so a
-- write never fails for lack of a partition). Both carry (symbol, timestamp) indexes.
-- The block between the `sapphire:tables` markers is also what the postgres role turns
-- into TimescaleDB hypertables (templates/timescale.sql.j2): keep the columns there only.

-- sapphire:tables begin

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
-- sapphire:tables end

-- Whether the DEFAULT partition of table t holds rows of day d.
CREATE OR REPLACE FUNCTION sapphire_default_has_rows(t text, d date)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    found boolean;
BEGIN
    IF to_regclass(t || '_default') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE timestamp >= %L AND timestamp < %L)',
                   t || '_default', d::timestamptz, (d + 1)::timestamptz) INTO found;
    RETURN found;
END;
$$;

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
            -- A day whose rows already landed in the DEFAULT partition cannot get its own
            -- partition (PostgreSQL refuses); leave it there rather than fail the deploy.
            IF to_regclass(part) IS NULL AND NOT sapphire_default_has_rows(t, d) THEN
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

-- Retention: the daily partitions of each table older than its retention (days, from a
-- JSON object {"trades": 90, ...}). Returns "table.partition" names; drops them only when
-- do_drop is true (the role passes postgres_retention_enforce, default false). The DEFAULT
-- partition is never dropped.
CREATE OR REPLACE FUNCTION sapphire_expire_partitions(retention jsonb, do_drop boolean DEFAULT false)
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    t text;
    keep integer;
    part record;
    expired text[] := ARRAY[]::text[];
BEGIN
    FOR t, keep IN SELECT key, value::integer FROM jsonb_each_text(retention) LOOP
        FOR part IN
            SELECT c.relname
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass(t)
              AND c.relname ~ ('^' || t || '_p[0-9]{8}$')
              AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= current_date - keep
            ORDER BY c.relname
        LOOP
            expired := expired || (t || '.' || part.relname);
            IF do_drop THEN
                EXECUTE format('DROP TABLE %I', part.relname);
            END IF;
        END LOOP;
    END LOOP;
    RETURN expired;
END;
$$;
