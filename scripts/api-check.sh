#!/usr/bin/env bash
# The API as its users and their tools see it, against a live server on 127.0.0.1:
#   1. GET /openapi.json validates as OpenAPI 3.1 (openapi-spec-validator);
#   2. schemathesis runs every check on every operation of that document (examples,
#      coverage, fuzzing and stateful phases, a bounded number of examples each) and
#      must find nothing;
#   3. headless Chromium loads /docs: the page must show every operation, and its
#      network log must hold no request to anything but the server itself.
#
#   scripts/api-check.sh [path/to/sensor-stats]    # default: target/debug/sensor-stats
#
# Installs what it needs when missing: schemathesis and openapi-spec-validator (pinned in
# scripts/api-requirements.txt) in a venv under ~/.cache/sensor-stats, and Debian's
# chromium (as root). Environment: API_CHECK_EXAMPLES (default 25 per operation and
# phase), API_CHECK_SEED (default 1, so a run is reproducible; any integer explores more).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
binary=${1:-target/debug/sensor-stats}
examples=${API_CHECK_EXAMPLES:-25}
seed=${API_CHECK_SEED:-1}

venv=${XDG_CACHE_HOME:-$HOME/.cache}/sensor-stats/venv-api
requirements=scripts/api-requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
  echo "== installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing chromium (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "chromium is missing: run 'sudo apt-get install chromium' or run this as root" >&2
    exit 1
  fi
fi
if [ ! -x "$binary" ]; then
  cargo build --locked --bin sensor-stats
fi

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
[ -z "${API_CHECK_KEEP:-}" ] || trap - EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
SENSOR_STATS_HOST=127.0.0.1 SENSOR_STATS_PORT=$port SENSOR_STATS_LOG_LEVEL=warn \
  "$binary" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/healthz")" = 204 ] && break
  sleep 0.1
done
curl -sf "$base/openapi.json" -o "$work/openapi.json"

echo "== openapi-spec-validator: GET /openapi.json is OpenAPI 3.1"
"$venv/bin/python" - "$work/openapi.json" <<'PY'
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator
spec = json.load(open(sys.argv[1]))
assert spec["openapi"].startswith("3.1."), spec["openapi"]
validate(spec, cls=OpenAPIV31SpecValidator)
print(f"valid: OpenAPI {spec['openapi']}, {sum(len(v) for v in spec['paths'].values())} operations")
PY

# Every check but use_after_free, whose premise (a deleted resource answers 404 or 410)
# CONTRACT.md contradicts: after DELETE /statistics/{sensor}, GET answers 200 with the
# unknown form, as for any sensor never seen. The statuses a request may get because of
# earlier ones (422 for a reused Idempotency-Key) are in scripts/schemathesis.toml; the
# 256-byte limit of sensor ids, which maxLength cannot state, in scripts/schemathesis_hooks.py.
echo "== schemathesis: every check (but use_after_free), every phase, $examples examples per operation (seed $seed)"
start=$(date +%s)
status=0
(cd "$work" && SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$root/scripts" "$venv/bin/st" --config-file "$root/scripts/schemathesis.toml" run "$base/openapi.json" \
  --checks all --exclude-checks use_after_free --max-examples "$examples" --seed "$seed" --workers 2 \
  --generation-database none --request-timeout 10 --no-color \
  --report junit --report-dir "$work/report") >"$work/schemathesis.log" 2>&1 || status=$?
grep -E '^(API|Operations|Test cases|Test Phases|Summary|SUMMARY|Seed)|passed|failed|skipped|errors|(✅|❌|⏭|🚫)' "$work/schemathesis.log" | tail -n 30 || true
echo "schemathesis took $(( $(date +%s) - start ))s"
if [ "$status" -ne 0 ]; then
  cat "$work/schemathesis.log" >&2
  echo "schemathesis found something (exit $status)" >&2
  exit 1
fi

echo "== headless Chromium: /docs shows every operation, and nothing leaves 127.0.0.1:$port"
chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --disable-default-apps --user-data-dir="$work/chromium" \
  --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
  --virtual-time-budget=20000 --log-net-log="$work/netlog.json" --net-log-capture-mode=Default \
  --enable-logging=stderr --v=0 --dump-dom "$base/docs" >"$work/dom.html" 2>"$work/chromium.log" || {
  cat "$work/chromium.log" >&2
  exit 1
}
"$venv/bin/python" - "$work/openapi.json" "$work/dom.html" "$work/netlog.json" "$work/chromium.log" "$base" <<'PY'
import json, re, sys
spec_path, dom_path, netlog_path, log_path, base = sys.argv[1:]
spec = json.load(open(spec_path))
dom = open(dom_path, encoding="utf-8").read()
problems = []
# Swagger UI renders one block per operation with the method and the path as data attributes.
shown = set(re.findall(r'id="operations-[^"]*"', dom))
for path, item in spec["paths"].items():
    for method in item:
        if f'data-path="{path}"' not in dom:
            problems.append(f"{method.upper()} {path} is not on the page")
blocks = len(re.findall(r'class="opblock opblock-', dom))
operations = sum(len(item) for item in spec["paths"].values())
if blocks != operations:
    problems.append(f"the page shows {blocks} operation blocks, the document has {operations}")
# Every URL the browser asked for, from the net log's URL_REQUEST_START_JOB events. The
# page's own requests carry its origin as initiator (the navigation to /docs carries
# none); Chromium's own services (update checks, accounts) carry "not an origin" and are
# listed but not the page's doing. The host resolver rules above make every name but
# 127.0.0.1 unresolvable, so nothing can leave the machine even by mistake.
netlog = json.load(open(netlog_path))
types = {v: k for k, v in netlog["constants"]["logEventTypes"].items()}
starts = [e["params"] for e in netlog.get("events", [])
          if types.get(e["type"]) == "URL_REQUEST_START_JOB" and e.get("params", {}).get("url")]
urls = [p["url"] for p in starts if p.get("initiator") != "not an origin"]
browser = sorted({p["url"].split("?")[0] for p in starts if p.get("initiator") == "not an origin"})
outside = sorted({u for u in urls if not u.startswith(base + "/")})
if outside:
    problems.append(f"the page made requests outside {base}: {outside}")
if not any(u == base + "/openapi.json" for u in urls):
    problems.append("the page did not load /openapi.json")
refused = [l for l in open(log_path, encoding="utf-8", errors="replace") if "Refused to" in l or "Uncaught" in l]
if refused:
    problems.append("console errors: " + " | ".join(l.strip() for l in refused[:5]))
if problems:
    sys.exit("docs page check failed:\n  " + "\n  ".join(problems))
print(f"/docs shows all {operations} operations; the page made {len(urls)} requests, all to {base}")
if browser:
    print(f"(Chromium's own background requests, not the page's, none resolvable: {browser})")
PY
