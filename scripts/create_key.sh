#!/usr/bin/env bash
# Write a new RSA key pair (3072 bits) for sqs_loader's PII recovery:
#   $KEY_DIR/private_key.pem  (PKCS#8, mode 0600: keep it OFF the database server)
#   $KEY_DIR/public_key.pem   (install it with SELECT set_rsa_public_key(...))
# Refuses to overwrite an existing key pair unless FORCE=1.
source "$(dirname "$0")/lib.sh"
KEY_DIR=${KEY_DIR:-$ROOT/keys}
if [ -f "$KEY_DIR/private_key.pem" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "key pair exists: $KEY_DIR/private_key.pem (FORCE=1 to replace it)"
  exit 0
fi
mkdir -p "$KEY_DIR"; chmod 700 "$KEY_DIR"
(umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$KEY_DIR/private_key.pem" 2>/dev/null)
openssl pkey -in "$KEY_DIR/private_key.pem" -pubout -out "$KEY_DIR/public_key.pem"
chmod 600 "$KEY_DIR/private_key.pem"; chmod 644 "$KEY_DIR/public_key.pem"
echo "wrote $KEY_DIR/private_key.pem (0600) and $KEY_DIR/public_key.pem"
