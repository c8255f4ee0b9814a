"""Create an IAM user with full SQS access on a moto server started with
INITIAL_NO_AUTH_ACTION_COUNT=3, and print its access key as shell assignments. After these
three unauthenticated calls, moto verifies every SigV4 signature.

Also prints temporary credentials of an assumed role (what an EC2 instance role or an ECS task
role hands out): moto checks their session token too."""
import sys

import boto3

endpoint = sys.argv[1]


def client(service, key="bootstrap", secret="bootstrap", token=None):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, aws_session_token=token)


iam = client("iam")
iam.create_user(UserName="sqs-loader-test")
key = iam.create_access_key(UserName="sqs-loader-test")["AccessKey"]
iam.put_user_policy(
    UserName="sqs-loader-test", PolicyName="test",
    PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
                   '"Action":["sqs:*","sts:AssumeRole","iam:CreateRole","iam:PutRolePolicy"],"Resource":"*"}]}')
user = (key["AccessKeyId"], key["SecretAccessKey"])
print(f"MOTO_ACCESS_KEY_ID={user[0]}")
print(f"MOTO_SECRET_ACCESS_KEY={user[1]}")

iam = client("iam", *user)
iam.create_role(
    RoleName="sqs-loader-role",
    AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
                             '"Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}')
iam.put_role_policy(
    RoleName="sqs-loader-role", PolicyName="sqs",
    PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sqs:*","Resource":"*"}]}')
tmp = client("sts", *user).assume_role(
    RoleArn="arn:aws:iam::123456789012:role/sqs-loader-role", RoleSessionName="sqs-loader",
    DurationSeconds=43200)["Credentials"]
client("sqs", tmp["AccessKeyId"], tmp["SecretAccessKey"], tmp["SessionToken"]).list_queues()
print(f"MOTO_TEMP_ACCESS_KEY_ID={tmp['AccessKeyId']}")
print(f"MOTO_TEMP_SECRET_ACCESS_KEY={tmp['SecretAccessKey']}")
print(f"MOTO_TEMP_SESSION_TOKEN={tmp['SessionToken']}")
