-- Leadership: one lease per shard with a term that grows each time the lease changes hands
-- (or lapses and is taken again). Times here are the DATABASE's clock (now()): every process
-- compares against the same clock, and no process's clock skew can make two leaders.
CREATE TABLE leases (
    shard INTEGER PRIMARY KEY,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    since TIMESTAMPTZ NOT NULL,
    term BIGINT NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);

-- The shard of a function: the first 32 bits of md5(name) modulo n (gitopsd/store/shards.py).
CREATE FUNCTION gitopsd_shard(name TEXT, n INTEGER) RETURNS INTEGER
LANGUAGE sql IMMUTABLE STRICT
AS $$ SELECT (('x' || substr(md5(name), 1, 8))::bit(32)::bigint % n)::integer $$;

-- Fencing. A leader's transactions say which terms they act under:
--   SET LOCAL gitopsd.fence = '{"holder": "...", "shards": N, "terms": {"0": 7, ...}}'
-- and every row they write is checked here against the lease of the row's shard, which is
-- locked FOR SHARE until the write commits: a standby cannot take the lease in between, and a
-- write from a deposed term is rejected (SQLSTATE GD001) however late it arrives. A row with
-- no function (kv, modules) needs every claimed term to be current. Transactions that claim
-- nothing (operator commands, `gitopsd state migrate`) are not fenced: they never act for a
-- leader.
CREATE FUNCTION gitopsd_check_term(fence JSONB, shard INTEGER) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    claimed BIGINT := (fence -> 'terms' ->> shard::text)::bigint;
    held RECORD;
BEGIN
    IF claimed IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GD001',
            MESSAGE = format('fenced: %s does not lead shard %s', fence ->> 'holder', shard);
    END IF;
    SELECT l.holder, l.term INTO held FROM leases l WHERE l.shard = gitopsd_check_term.shard
        FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'GD001',
            MESSAGE = format('fenced: shard %s has no lease', shard);
    END IF;
    IF held.term <> claimed OR held.holder <> fence ->> 'holder' THEN
        RAISE EXCEPTION USING ERRCODE = 'GD001',
            MESSAGE = format('fenced: term %s of shard %s is deposed (now term %s, held by %s)',
                             claimed, shard, held.term, held.holder);
    END IF;
END $$;

CREATE FUNCTION gitopsd_fence() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
DECLARE
    fence JSONB := nullif(current_setting('gitopsd.fence', true), '')::jsonb;
    fn TEXT;
    claimed TEXT;
BEGIN
    IF fence IS NULL THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_TABLE_NAME = 'journal' THEN
        SELECT r.function INTO fn FROM rollouts r
            WHERE r.id = CASE WHEN TG_OP = 'DELETE' THEN OLD.rollout_id ELSE NEW.rollout_id END;
    ELSIF TG_TABLE_NAME IN ('rollouts', 'controls', 'retirements') THEN
        fn := CASE WHEN TG_OP = 'DELETE' THEN OLD.function ELSE NEW.function END;
    END IF;
    IF fn IS NOT NULL THEN
        PERFORM gitopsd_check_term(fence, gitopsd_shard(fn, (fence ->> 'shards')::integer));
    ELSE
        FOR claimed IN SELECT jsonb_object_keys(fence -> 'terms') LOOP
            PERFORM gitopsd_check_term(fence, claimed::integer);
        END LOOP;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER rollouts_fence BEFORE INSERT OR UPDATE OR DELETE ON rollouts
    FOR EACH ROW EXECUTE FUNCTION gitopsd_fence();
CREATE TRIGGER journal_fence BEFORE INSERT OR UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION gitopsd_fence();
CREATE TRIGGER controls_fence BEFORE INSERT OR UPDATE OR DELETE ON controls
    FOR EACH ROW EXECUTE FUNCTION gitopsd_fence();
CREATE TRIGGER retirements_fence BEFORE INSERT OR UPDATE OR DELETE ON retirements
    FOR EACH ROW EXECUTE FUNCTION gitopsd_fence();
CREATE TRIGGER kv_fence BEFORE INSERT OR UPDATE OR DELETE ON kv
    FOR EACH ROW EXECUTE FUNCTION gitopsd_fence();
CREATE TRIGGER modules_fence BEFORE INSERT OR UPDATE OR DELETE ON modules
    FOR EACH ROW EXECUTE FUNCTION gitopsd_fence();
