-- Wait (up to 60 s) until this database's sqs_loader workers have exited, after a committed
-- stop_worker(): a worker finishes its batch and its last long poll (<= 20 s) first.
-- Included by scripts/demo.sql and scripts/start.sh.
DO $$
BEGIN
  FOR i IN 1 .. 600 LOOP
    EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity
                           WHERE backend_type = 'sqs_loader worker' AND datname = current_database());
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
