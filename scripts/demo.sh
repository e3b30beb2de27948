#!/usr/bin/env bash
# The demo: installs what is missing, builds modelbus, starts every service
# (`modelbus up`, with its own embedded nats-server and SQLite registry), and runs
# the whole pipeline on the shipped Telco churn data: submit → validate → features
# → train → gates → signed staging approval → deploy → serve. Then it asks the
# staging endpoint for predictions, shows a bad batch being rejected, has two
# approvers sign version 1 for production, sends a second version to production
# as a canary (half the customers, then all), has an operator sign a rollback to
# version 1, replays Telco customers against production as live traffic (as
# they are, then shifted) and shows the drift the monitor found, verifies the
# audit log, writes version 1's evidence bundle (the drift decision is in it)
# and verifies it offline, and stops.
# Pass --keep-running to leave the platform up afterwards.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/bootstrap.sh"
export PATH="$root/.tools/bin:$HOME/.cargo/bin:$PATH"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

keep=0
[ "${1:-}" = "--keep-running" ] && keep=1

echo "==> building modelbus"
cargo build -q -p modelbus-cli
mb="${CARGO_TARGET_DIR:-$root/target}/debug/modelbus"
state="$root/.modelbus/demo"
rm -rf "$state"
mkdir -p "$state"

# Two approvers' keys, made before the platform starts: the deployer trusts only
# the public keys in its own configuration.
for who in alice bob olga; do
  "$mb" keygen --id "$who" --out "$state/keys/$who.pem" >/dev/null 2>&1
done
# A local receiver for notifications: CloudEvents signed with HMAC-SHA256
# (Standard Webhooks), verified before they are written down.
printf 'whsec_%s' "$(head -c 24 /dev/urandom | base64)" >"$state/webhook.secret"
python3 - "$state" >"$state/receiver.log" 2>&1 <<'PY' &
import base64, hashlib, hmac, http.server, json, sys
state = sys.argv[1]
secret = open(f"{state}/webhook.secret").read().strip()
key = base64.b64decode(secret.removeprefix("whsec_"))
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        signed = f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode() + body
        want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        ok = any(s == f"v1,{want}" for s in self.headers["webhook-signature"].split())
        self.send_response(204 if ok else 401)
        self.end_headers()
        if ok:
            with open(f"{state}/notifications.jsonl", "a") as f:
                f.write(body.decode() + "\n")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", 7099), H).serve_forever()
PY
receiver_pid=$!
cat >"$state/demo.toml" <<EOF
# Notifications of drift, degraded performance and rollbacks to the local receiver.
[[notifications.receivers]]
name = "demo-receiver"
format = "cloudevents"
url = "http://127.0.0.1:7099/events"
secret = "file://$state/webhook.secret"
events = ["drift", "performance", "rollback"]

# Demo only: a 3-second staging soak instead of the default 10 minutes.
[promotion]
staging_soak = "3s"
evaluate_interval = "500ms"
# Demo only: the one staging request below is enough traffic (default 100).
min_staging_requests = 1

[serving]
stats_interval = "1s"

[[deployer.trusted_keys]]
id = "alice"
public_key_file = "$state/keys/alice.pem.pub"
environments = ["production"]

[[deployer.trusted_keys]]
id = "bob"
public_key_file = "$state/keys/bob.pem.pub"
environments = ["production"]

# olga is an operator: her key signs rollbacks, never approvals.
[[deployer.trusted_keys]]
id = "olga"
public_key_file = "$state/keys/olga.pem.pub"
environments = ["production"]
role = "operator"

# A new production version replaces the old one in two steps, 4 seconds each,
# and is rolled back on its own if its error rate or p99 breaches the objective.
[rollout.production]
strategy = "canary"
steps = [50, 100]
bake = "4s"
EOF

echo "==> starting the platform (modelbus up --state-dir $state --config $state/demo.toml)"
"$mb" up --state-dir "$state" --config "$state/demo.toml" >"$state/up.log" 2>&1 &
up_pid=$!
cleanup() {
  kill "$receiver_pid" 2>/dev/null || true
  [ "$keep" = 1 ] || kill "$up_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 120); do
  # The registry writes the first admin token to the state dir on its first start.
  if [ -s "$state/admin.token" ] && curl -fsS http://127.0.0.1:7070/readyz >/dev/null 2>&1 \
    && curl -fsS -H "Authorization: Bearer $(cat "$state/admin.token")" http://127.0.0.1:7070/v1/datasets/telco-churn >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$up_pid" 2>/dev/null; then
    echo "modelbus up exited:" >&2
    cat "$state/up.log" >&2
    exit 1
  fi
  sleep 0.5
done
sed -n '/applied dataset spec/,/Ctrl-C/p' "$state/up.log"
# Every API needs a bearer token; the demo acts as the first admin.
MODELBUS_TOKEN=$(cat "$state/admin.token")
export MODELBUS_TOKEN

echo
echo "==> modelbus submit --dataset telco-churn data/telco-churn/telco_customer_churn.csv --wait"
start=$(date +%s%N)
"$mb" submit --dataset telco-churn data/telco-churn/telco_customer_churn.csv --wait
end=$(date +%s%N)
echo "    submit → deployed to staging in $(( (end - start) / 1000000 )) ms"

echo
echo "==> modelbus models show telco-churn"
"$mb" models show telco-churn

echo
echo "==> staging predicts raw records (POST :7080/v1/models/telco-churn:predict)"
curl -fsS -X POST http://127.0.0.1:7080/v1/models/telco-churn:predict \
  -H 'content-type: application/json' \
  -d '{"instances": [
        {"customerID": "7590-VHVEG", "gender": "Female", "SeniorCitizen": 0, "Partner": "Yes", "Dependents": "No",
         "tenure": 1, "PhoneService": "No", "MultipleLines": "No phone service", "InternetService": "DSL",
         "OnlineSecurity": "No", "OnlineBackup": "Yes", "DeviceProtection": "No", "TechSupport": "No",
         "StreamingTV": "No", "StreamingMovies": "No", "Contract": "Month-to-month", "PaperlessBilling": "Yes",
         "PaymentMethod": "Electronic check", "MonthlyCharges": 29.85, "TotalCharges": 29.85},
        {"customerID": "5575-GNVDE", "gender": "Male", "SeniorCitizen": 0, "Partner": "No", "Dependents": "No",
         "tenure": 34, "PhoneService": "Yes", "MultipleLines": "No", "InternetService": "DSL",
         "OnlineSecurity": "Yes", "OnlineBackup": "No", "DeviceProtection": "Yes", "TechSupport": "No",
         "StreamingTV": "No", "StreamingMovies": "No", "Contract": "One year", "PaperlessBilling": "No",
         "PaymentMethod": "Mailed check", "MonthlyCharges": 56.95, "TotalCharges": 1889.5}]}'
echo

echo
echo "==> a bad batch (a gender outside its set, text in tenure) is rejected and kept in quarantine"
bad="$state/bad-batch.csv"
awk -F, 'BEGIN{OFS=","} NR==4{$2="Unknown"} NR==6{$6="twelve"} {print}' data/telco-churn/telco_customer_churn.csv >"$bad"
set +e
"$mb" submit --dataset telco-churn "$bad" --wait
code=$?
set -e
echo "    exit code $code (3 = rejected); staging still serves version 1:"
curl -fsS http://127.0.0.1:7080/v1/models/telco-churn | grep -o '"model_version":[0-9]*' 
echo
echo "==> modelbus runs list"
"$mb" runs list

echo
echo "==> governance: two approvers sign version 1 for production"
for who in alice bob; do
  "$mb" approvers add --id "$who" --public-key-file "$state/keys/$who.pem.pub" --role approver
done
alice_token=$("$mb" tokens create --name alice --role approver 2>/dev/null)
bob_token=$("$mb" tokens create --name bob --role approver 2>/dev/null)
sleep 3 # the staging soak of this demo's configuration
MODELBUS_TOKEN=$alice_token "$mb" approve --model telco-churn --version 1 --env production \
  --key "$state/keys/alice.pem" --comment "holdout AUC and slices reviewed"
start=$(date +%s%N)
MODELBUS_TOKEN=$bob_token "$mb" approve --model telco-churn --version 1 --env production \
  --key "$state/keys/bob.pem" --comment "second approval"
for _ in $(seq 1 1500); do
  if curl -fsS http://127.0.0.1:7081/v1/models/telco-churn >/dev/null 2>&1; then break; fi
  sleep 0.02
done
end=$(date +%s%N)
echo "    second signature → serving in production in $(( (end - start) / 1000000 )) ms; production now serves:"
curl -fsS http://127.0.0.1:7081/v1/models/telco-churn | grep -o '"model_version":[0-9]*'

echo
echo "==> a second version goes to production as a canary: half the customers first"
# For the demo only: let a version trained on fewer rows reach staging whatever
# its holdout AUC against the champion.
sed 's/^max_roc_auc_drop = 0.01/max_roc_auc_drop = 1.0/' config/datasets/telco-churn.toml \
  >"$state/telco-churn-relaxed.toml"
"$mb" datasets apply "$state/telco-churn-relaxed.toml"
head -n -700 data/telco-churn/telco_customer_churn.csv >"$state/batch-2.csv"
"$mb" submit --dataset telco-churn "$state/batch-2.csv" --wait | tail -1
# The soak counts requests that reached the model: one staging prediction of v2.
curl -fsS -X POST http://127.0.0.1:7080/v1/models/telco-churn:predict \
  -H 'content-type: application/json' \
  -d '{"instances": [{"customerID": "7590-VHVEG"}]}' >/dev/null
sleep 3 # the staging soak
for who in alice bob; do
  token_var="${who}_token"
  MODELBUS_TOKEN=${!token_var} "$mb" approve --model telco-churn --version 2 --env production \
    --key "$state/keys/$who.pem" --comment "canary it" >/dev/null
done
for _ in $(seq 1 500); do
  curl -fsS http://127.0.0.1:7081/v1/models/telco-churn 2>/dev/null | grep -qE '"model_version":2[,}]' && break
  sleep 0.02
done
echo "    production: $(curl -fsS http://127.0.0.1:7081/v1/models/telco-churn | grep -o '"canary":{[^}]*}')"
echo "    each customer stays on one version (a SHA-256 of the customer id picks it):"
python3 - <<'PY'
import csv, json, urllib.request
rows = list(csv.DictReader(open("data/telco-churn/telco_customer_churn.csv")))[:8]
for r in rows:
    r.pop("Churn")
req = urllib.request.Request("http://127.0.0.1:7081/v1/models/telco-churn:predict",
    data=json.dumps({"instances": rows}).encode(), headers={"content-type": "application/json"})
answer = json.load(urllib.request.urlopen(req))
for r, v in zip(rows, answer.get("model_versions") or [answer["model_version"]] * len(rows)):
    print(f"      {r['customerID']} -> v{v}")
PY

echo
echo "==> olga, an operator, signs a rollback to version 1"
olga_token=$("$mb" tokens create --name olga --role operator 2>/dev/null)
"$mb" approvers add --id olga --public-key-file "$state/keys/olga.pem.pub" --role operator
start=$(date +%s%N)
MODELBUS_TOKEN=$olga_token "$mb" rollback --env production --key "$state/keys/olga.pem" \
  --reason "demo: back to the version the auditors reviewed"
for _ in $(seq 1 500); do
  curl -fsS http://127.0.0.1:7081/v1/models/telco-churn 2>/dev/null | grep -qE '"model_version":1[,}]' && break
  sleep 0.02
done
end=$(date +%s%N)
echo "    production serves version 1 again, $(( (end - start) / 1000000 )) ms after the signature"
echo "==> modelbus deployments --model telco-churn --env production"
"$mb" deployments --model telco-churn --env production

echo
echo "==> the dataset asks to be retrained on drift ([monitor.retrain], with 500 labelled records)"
cp config/datasets/telco-churn.toml "$state/telco-churn-retrain.toml"
printf '\n[monitor.retrain]\nmin_labels = 500\n' >>"$state/telco-churn-retrain.toml"
"$mb" datasets apply "$state/telco-churn-retrain.toml" | tail -1
echo
echo "==> live traffic: 1,000 Telco customers as they are, then 1,000 with monthly charges"
echo "    × 1.10 + 5 and a third of the contracts switched to two years (production, v1)"
python3 - "$state" <<'PY'
import csv, json, sys, urllib.request
rows = list(csv.DictReader(open("data/telco-churn/telco_customer_churn.csv")))
truth = [r.pop("Churn") for r in rows]
def predict(batch):
    req = urllib.request.Request("http://127.0.0.1:7081/v1/models/telco-churn:predict",
        data=json.dumps({"instances": batch}).encode(), headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))
normal = predict(rows[1000:2000])
# The outcomes, known weeks later: by prediction id for the first window, by
# customer id for the second (each goes to the customer's latest prediction).
with open(f"{sys.argv[1]}/labels-by-id.csv", "w") as f:
    f.write("prediction_id,Churn\n")
    for p, t in zip(normal["predictions"], truth[1000:2000]):
        f.write(f"{p['prediction_id']},{t}\n")
with open(f"{sys.argv[1]}/labels-by-customer.csv", "w") as f:
    f.write("customerID,Churn\n")
    for r, t in zip(rows[2000:3000], truth[2000:3000]):
        f.write(f"{r['customerID']},{t}\n")
shifted = []
for i, r in enumerate(rows[2000:3000]):
    r = dict(r)
    r["MonthlyCharges"] = f"{float(r['MonthlyCharges']) * 1.10 + 5:.2f}"
    if i % 3 == 0:
        r["Contract"] = "Two year"
    shifted.append(r)
answer = predict(shifted)
print(f"      e.g. {answer['predictions'][0]['prediction_id']}: probability {answer['predictions'][0]['probability']:.3f}")
PY
# The monitor closes a window every 1,000 predictions (monitor.window_rows).
for _ in $(seq 1 150); do
  n=$("$mb" monitor status --model telco-churn --env production --json 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["windows"]))' 2>/dev/null || echo 0)
  [ "$n" -ge 2 ] && break
  sleep 0.2
done
echo "==> modelbus monitor status --model telco-churn --env production"
"$mb" monitor status --model telco-churn --env production --limit 2
for _ in $(seq 1 100); do
  grep -q '"io.modelbus.drift.detected"' "$state/notifications.jsonl" 2>/dev/null && break
  sleep 0.2
done
echo "==> the local receiver got the drift notification (signature verified):"
grep '"io.modelbus.drift.detected"' "$state/notifications.jsonl" 2>/dev/null | head -1 \
  | python3 -c 'import json,sys; e=json.load(sys.stdin); print("    ", e["type"], e["subject"], "-", e["data"]["summary"])' \
  || echo "    (none received: see $state/receiver.log)"
echo
echo "==> ground truth arrives: modelbus labels submit (by prediction id, then by customer id)"
"$mb" labels submit --dataset telco-churn "$state/labels-by-id.csv"
"$mb" labels submit --dataset telco-churn "$state/labels-by-customer.csv"
for _ in $(seq 1 150); do
  n=$("$mb" monitor status --model telco-churn --env production --json 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["performance"]))' 2>/dev/null || echo 0)
  [ "$n" -ge 2 ] && break
  sleep 0.2
done
echo "==> realised beside estimated performance (modelbus monitor status)"
"$mb" monitor status --model telco-churn --env production --limit 2 | grep -E "closed by|estimated|realised|performance" || true
echo "==> the retraining run the drift asked for, once the labels came (modelbus runs list)"
for _ in $(seq 1 300); do
  "$mb" runs list --dataset telco-churn --json 2>/dev/null | python3 -c '
import json, sys
runs = [r for r in json.load(sys.stdin)["pipeline_runs"] if "retrain" in r["submitted_by"]]
sys.exit(0 if runs and runs[0]["state"] in ("deployed", "rejected", "failed") else 1)' && break
  sleep 0.5
done
"$mb" runs list --dataset telco-churn --json | python3 -c '
import json, sys
for r in json.load(sys.stdin)["pipeline_runs"]:
    if "retrain" in r["submitted_by"]:
        print("    %s %s v%s (%s rows), submitted by %s" % (r["id"], r["state"], r["model_version"], r["rows"], r["submitted_by"]))
        for why in r["reasons"]:
            print("      - " + why)
        break'
echo "==> the same drift offline, on two files (modelbus drift, like an Evidently report)"
python3 - "$state" <<'PY'
import csv, sys
rows = list(csv.DictReader(open("data/telco-churn/telco_customer_churn.csv")))
with open(f"{sys.argv[1]}/shifted.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=rows[0].keys())
    w.writeheader()
    for i, r in enumerate(rows[2000:3000]):
        r["MonthlyCharges"] = f"{float(r['MonthlyCharges']) * 1.10 + 5:.2f}"
        if i % 3 == 0:
            r["Contract"] = "Two year"
        w.writerow(r)
PY
"$mb" drift --dataset telco-churn --reference data/telco-churn/telco_customer_churn.csv \
  --current "$state/shifted.csv" --html "$state/drift.html" | grep -E "DRIFT" || true
echo "    report: $state/drift.html"

echo
echo "==> modelbus audit verify"
"$mb" audit verify

echo
echo "==> modelbus evidence --model telco-churn --version 1 --out $state/evidence-v1"
"$mb" evidence --model telco-churn --version 1 --out "$state/evidence-v1" | tail -1
echo "==> modelbus evidence verify (offline, with the keys the auditor holds)"
"$mb" evidence verify "$state/evidence-v1" --trusted-key "$state/keys/alice.pem.pub" \
  --trusted-key "$state/keys/bob.pem.pub" --trusted-key "$state/keys/olga.pem.pub" \
  --trusted-key "$state/keys/automation.pem.pub"

if [ "$keep" = 1 ]; then
  echo
  echo "The platform keeps running (pid $up_pid, log $state/up.log); stop it with: kill $up_pid"
  trap - EXIT
fi
