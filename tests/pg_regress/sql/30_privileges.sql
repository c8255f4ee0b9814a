-- What a fresh role may do with the extension: which functions it may execute and which
-- relations it may read. Everything that reaches the network, consumes queues, mints tokens,
-- reveals values, changes keys or loads is refused.
CREATE ROLE regress_fresh_role;
SELECT p.oid::regprocedure::text AS routine,
       has_function_privilege('regress_fresh_role', p.oid, 'EXECUTE') AS may_execute
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'sqs_loader')
 ORDER BY 1;
SELECT c.oid::regclass::text AS relation,
       has_table_privilege('regress_fresh_role', c.oid, 'SELECT') AS may_select
  FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'sqs_loader') AND c.relkind IN ('r', 'v')
 ORDER BY 1;
SELECT has_schema_privilege('regress_fresh_role', 'sqs_loader', 'USAGE') AS may_use_private_schema;
SET ROLE regress_fresh_role;
SELECT regress.try($$SELECT unmask_pii('v1.x', 'key')$$);
SELECT regress.try($$SELECT mask_pii('1.2.3.4')$$);
SELECT regress.try($$SELECT * FROM sqs_pull('http://localhost:4566/000000000000/q')$$);
SELECT regress.try($$CALL load_user_logins('http://localhost:4566/000000000000/q')$$);
SELECT regress.try($$SELECT * FROM sqs_loader.vault$$);
SELECT regress.try($$SHOW sqs_loader.aws_secret_access_key$$);
SELECT app_version_text(2003000) AS harmless_functions_work;
RESET ROLE;
DROP ROLE regress_fresh_role;
