#!/usr/bin/env bash
# Make a development CA and a broker certificate signed by it.
#   make-dev-ca.sh OUT_DIR [HOST ...]
# Writes OUT_DIR/ca.crt, ca.key, broker.crt, broker.key. The broker certificate names
# localhost, 127.0.0.1 and every HOST given (names or IP addresses). For development
# only: the CA key sits unencrypted beside the certificates.
set -euo pipefail
out=${1:?usage: make-dev-ca.sh OUT_DIR [HOST ...]}
shift
mkdir -p "$out"
days=825
san="DNS:localhost,IP:127.0.0.1"
for host in "$@"; do
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="$san,IP:$host"; else san="$san,DNS:$host"; fi
done

openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -sha256 \
  -subj "/CN=splitmq development CA" \
  -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null

openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
  -keyout "$out/broker.key" -out "$out/broker.csr" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$san" > "$out/broker.ext"
openssl x509 -req -in "$out/broker.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
  -CAcreateserial -days "$days" -sha256 -extfile "$out/broker.ext" -out "$out/broker.crt" 2>/dev/null
rm -f "$out/broker.csr" "$out/broker.ext" "$out/ca.srl"
chmod 600 "$out/ca.key" "$out/broker.key"
# mosquitto may run as its own user: let it read the broker key.
chmod 644 "$out/broker.key"
echo "CA and broker certificate for $san in $out"
