-- The extension in a fresh database, and try(): 'ok' or 'SQLSTATE: message' for a statement,
-- so that the expected output shows which error each refusal gives.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS sqs_loader CASCADE;
DROP TABLE IF EXISTS user_logins;
CREATE EXTENSION sqs_loader;
RESET client_min_messages;
CREATE SCHEMA regress;
GRANT USAGE ON SCHEMA regress TO PUBLIC;
CREATE FUNCTION regress.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT extversion FROM pg_extension WHERE extname = 'sqs_loader';
