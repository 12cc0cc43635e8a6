#!/usr/bin/env bash
# A complete local KMS installation for tests and the demo, in OUTDIR:
# throwaway SoftHSM token, key ceremony (psc-kmsctl init), KMS certificate
# issued by the test CA for the ceremony's CSR, CURVE keys, PIN file, kms.yaml.
# Usage: mkkms.sh OUTDIR CA_DIR BIN_DIR PORT [POLICY]
# Prints KMS_CONFIG=..., KMS_CERT=..., KMS_CURVE_PUB=..., SOFTHSM2_CONF=... lines.
set -euo pipefail
out=${1:?usage: mkkms.sh OUTDIR CA_DIR BIN_DIR PORT [POLICY]}
ca=${2:?}; bin=${3:?}; port=${4:?}
here=$(cd "$(dirname "$0")" && pwd)
policy=${5:-$here/policy.yaml}
mkdir -p "$out"; out=$(cd "$out" && pwd)
export $("$here/../fixtures/mktoken.sh" "$out/token" psc-test 1234 5678)
mkdir -p "$out/curve" "$out/audit" "$out/state"
umask 077
printf '1234\n' > "$out/user.pin"
cp "$policy" "$out/policy.yaml"
cat > "$out/kms.yaml" <<CONF
kms_id: kms-test.1
overlay: $(cat "$ca/overlay")
listen: tcp://127.0.0.1:$port
admin_socket: ipc://$out/admin.sock
curve:
  enabled: true
  secret_key_file: curve/kms.secret
  public_key_file: curve/kms.public
hsm:
  module: /usr/lib/softhsm/libsofthsm2.so
  token_label: psc-test
  pin_file: user.pin
  workers: ${PSC_TEST_WORKERS:-2}
identity:
  certificate: kms.crt.pem
trust:
  ca_file: $ca/ca.crt.pem
  crl_file: $ca/crl.pem
  crl_reload_s: ${PSC_TEST_CRL_RELOAD_S:-300}
policy_file: policy.yaml
audit:
  dir: audit
  checkpoint_every: 100
  checkpoint_interval_s: 60
state_db: state/state.db
timers:
  refresh_default_s: 3600
  freshness_window_s: 300
  query_timeout_ms: ${PSC_TEST_QUERY_MS:-3000}
  invite_timeout_ms: ${PSC_TEST_INVITE_MS:-3000}
  liveness_timeout_ms: ${PSC_TEST_LIVENESS_MS:-1500}
  old_epoch_grace_ms: 2000
limits:
  max_message_bytes: 1048576
  per_connection_msgs_per_s: ${PSC_TEST_RATE:-200}
  per_connection_burst: ${PSC_TEST_BURST:-400}
CONF
init=$("$bin/psc-kmsctl" init -c "$out/kms.yaml" --subject "/O=PSC Test/OU=kms/CN=kms")
node=$(sed -n 's/^KMS Node-ID \([0-9a-f]*\)$/\1/p' <<<"$init")
[ -n "$node" ] || { echo "mkkms: ceremony output: $init" >&2; exit 1; }
# ctest runs tests in parallel: `openssl ca` updates the CA's index and serial
# files and must not run twice at once.
PSC_SAN="URI:reload://$node@$(cat "$ca/overlay")/" flock "$ca/ca/.lock" openssl ca -batch -config "$ca/ca/ca.cnf" \
	-extensions v3_peer -notext -days 30 -in "$out/kms.crt.pem.csr" -out "$out/kms.crt.pem" 2>/dev/null
echo "KMS_CONFIG=$out/kms.yaml"
echo "KMS_CERT=$out/kms.crt.pem"
echo "KMS_CURVE_PUB=$(cat "$out/curve/kms.public")"
echo "KMS_NODE_ID=$node"
echo "SOFTHSM2_CONF=$SOFTHSM2_CONF"
