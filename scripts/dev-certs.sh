#!/usr/bin/env bash
# Makes a private CA and certificates for trying jobwire's TLS on one machine, and for the Python
# and TypeScript clients' TLS tests (the Rust tests make theirs with rcgen). Not for production:
# the CA key sits next to the certificates, unencrypted.
#
#   scripts/dev-certs.sh DIR [CLIENT_NAME]
#
# writes, in DIR (created if missing), all PEM, ECDSA P-256, valid 30 days:
#   ca.pem, ca.key           the CA
#   server.pem, server.key   CN=jobwire, for localhost and 127.0.0.1 (serverAuth)
#   client.pem, client.key   CN=CLIENT_NAME (default "dev-client"), for mutual TLS (clientAuth)
#
# then:
#   jobwire serve --tls-cert DIR/server.pem --tls-key DIR/server.key [--tls-client-ca DIR/ca.pem]
#   jobwire health --tls-ca-cert DIR/ca.pem [--tls-client-cert DIR/client.pem --tls-client-key DIR/client.key]
# Needs openssl (1.1.1 or 3.x).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [CLIENT_NAME]" >&2
    exit 2
fi
dir="$1"
client_name="${2:-dev-client}"
mkdir -p "$dir"
cd "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# signed NAME SUBJECT EXTENSIONS: NAME.key and NAME.pem, signed by the CA.
signed() {
    key "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

key ca.key
openssl req -x509 -new -key ca.key -subj "/CN=jobwire dev CA" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem

signed server "/CN=jobwire" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"

signed client "/CN=$client_name" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

rm -f ca.srl
# The certificates are public; the keys stay readable by their owner only.
chmod 644 ca.pem server.pem client.pem
echo "wrote $(pwd)/{ca,server,client}.{pem,key}"
