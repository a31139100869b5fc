-- A fenced transaction that claims no term at all (a controller that leads no shard, or no
-- longer leads any) may not write rows without a function (kv, modules) either: a deposed
-- leader's late "last applied commit" must be refused like its journal writes.
CREATE OR REPLACE FUNCTION gitopsd_fence() RETURNS TRIGGER
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
