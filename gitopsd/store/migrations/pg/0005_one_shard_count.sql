-- Every write is fenced by the shard count the database agreed (kv 'ha:shards', absent for
-- 1), not by the count the writer says it uses: a controller frozen past its lease while the
-- others were stopped and restarted with another count would otherwise lead shard k of its
-- old count while another leads the same functions under the new one, and both would pass.
CREATE OR REPLACE FUNCTION gitopsd_fence() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
DECLARE
    fence JSONB := nullif(current_setting('gitopsd.fence', true), '')::jsonb;
    agreed TEXT;
    fn TEXT;
    claimed TEXT;
BEGIN
    IF fence IS NULL THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    agreed := coalesce((SELECT k.value FROM kv k WHERE k.key = 'ha:shards'), '1');
    IF agreed <> (fence ->> 'shards') THEN
        RAISE EXCEPTION USING ERRCODE = 'GD001',
            MESSAGE = format('fenced: %s uses %s shards, the controllers on this database %s',
                             fence ->> 'holder', fence ->> 'shards', agreed);
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
        IF NOT EXISTS (SELECT 1 FROM jsonb_object_keys(fence -> 'terms')) THEN
            RAISE EXCEPTION USING ERRCODE = 'GD001',
                MESSAGE = format('fenced: %s leads no shard', fence ->> 'holder');
        END IF;
        FOR claimed IN SELECT jsonb_object_keys(fence -> 'terms') LOOP
            PERFORM gitopsd_check_term(fence, claimed::integer);
        END LOOP;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
