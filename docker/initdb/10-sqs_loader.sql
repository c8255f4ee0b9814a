-- Runs once, when the container's database is first initialised.
CREATE EXTENSION pg_cron;
CREATE EXTENSION sqs_loader;
-- Inside the compose network LocalStack is the host "localstack".
ALTER SYSTEM SET sqs_loader.allowed_hosts = '*.amazonaws.com,localhost,127.0.0.1,localstack';
SELECT pg_reload_conf();
ALTER DATABASE postgres SET sqs_loader.queue_url = 'http://localstack:4566/000000000000/login-queue';
\set pub `cat /keys/public_key.pem`
SELECT set_rsa_public_key(:'pub');
-- Load every minute (remove the job with SELECT cron.unschedule('load-user-logins')).
SELECT cron.schedule('load-user-logins', '* * * * *', 'CALL load_user_logins()');
