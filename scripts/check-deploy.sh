#!/usr/bin/env bash
# Offline checks of the deployment files under deploy/ (no cluster, no Docker, no network
# except PyPI the first time, to install kubernetes-validate).
#
#   scripts/check-deploy.sh                              # from any directory
#   KUBERNETES_VERSION=1.33.0 scripts/check-deploy.sh    # validate against another version
#
# 1. Kubernetes: every manifest in deploy/k8s and deploy/k8s/single (not
#    kustomization.yaml) is validated in
#    strict mode (unknown fields are errors) against the schemas of Kubernetes
#    $KUBERNETES_VERSION shipped by kubernetes-validate (pinned below, installed into a
#    venv under ${XDG_CACHE_HOME:-$HOME/.cache}/sensor-stats/venv). kustomization.yaml must
#    list exactly the manifests of the directory. When kubectl (or kustomize) is on the
#    PATH, the kustomize output is rendered and validated too.
# 2. nginx: `nginx -t` on a copy of deploy/nginx.conf in a temporary prefix, with the
#    upstream host names (compose services, which do not resolve here) replaced by
#    127.0.0.1 and nginx's temporary directories moved into the prefix; /etc/nginx is
#    never read or written. An nginx older than 1.27.3 does not know the upstream
#    `resolve` parameter: it is left out of the copy, and the script says so.
# 3. Compose: deploy/compose.yaml and deploy/compose.scaled.yaml parse as YAML and have
#    services; every bind-mounted file or directory, config/secret/env file and build
#    context they refer to exists; named volumes are declared; published ports are bound
#    to 127.0.0.1; depends_on names existing services. The replicas that nginx.conf and
#    prometheus.scaled.yml name are services of compose.scaled.yaml, and every replica of
#    compose.scaled.yaml is in both.
# 4. Prometheus: `promtool check config` on deploy/prometheus*.yml when promtool is
#    installed (scripts/test.sh installs it).
#
# Prints one line per check (ok / FAIL / skip) and exits 1 if any check failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.31.0}"
KUBERNETES_VALIDATE_VERSION=1.37.0
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/sensor-stats/venv"

failures=0
ok() { printf 'ok    %s\n' "$*"; }
fail() {
  printf 'FAIL  %s\n' "$*"
  failures=$((failures + 1))
}
skip() { printf 'skip  %s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/        /'; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --------------------------------------------------------------------------- venv
# A venv with the pinned kubernetes-validate (and PyYAML, its dependency, used below).
ensure_venv() {
  if [ -x "$VENV/bin/python" ] &&
    [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" = "$KUBERNETES_VALIDATE_VERSION" ]; then
    return 0
  fi
  if ! command -v python3 >/dev/null 2>&1; then
    echo "check-deploy.sh: python3 is required (apt-get install python3 python3-venv)" >&2
    exit 1
  fi
  # Debian splits venv/ensurepip into python3-venv.
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "check-deploy.sh: installing python3-venv (python3 -m venv needs it)" >&2
      if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      fi
    else
      echo "check-deploy.sh: \`python3 -m venv\` is not available (Debian's python3-venv package is" >&2
      echo "missing); install it (sudo apt-get install python3-venv) and run this again." >&2
      exit 1
    fi
  fi
  echo "check-deploy.sh: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! python3 -m venv "$VENV" >&2 ||
    ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2; then
    rm -rf "$VENV"
    echo "check-deploy.sh: could not install kubernetes-validate from PyPI into $VENV" >&2
    exit 1
  fi
}
ensure_venv
PY="$VENV/bin/python"
validate() { "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$KUBERNETES_VERSION" "$@"; }

# ----------------------------------------------------------------------- kubernetes
section "Kubernetes manifests (deploy/k8s), strict, against Kubernetes $KUBERNETES_VERSION"
manifests=()
for f in deploy/k8s/*.yaml deploy/k8s/*.yml; do
  [ -e "$f" ] || continue
  case "$(basename "$f")" in
    kustomization.yaml | kustomization.yml) ;;
    *) manifests+=("$f") ;;
  esac
done
if [ "${#manifests[@]}" -eq 0 ]; then
  fail "no manifests under deploy/k8s"
else
  if out="$(validate "${manifests[@]}" 2>&1)"; then
    ok "kubernetes-validate: ${#manifests[@]} files"
    indent <<<"$out"
  else
    fail "kubernetes-validate:"
    indent <<<"$out"
  fi
fi

# The single-instance variant (deploy/k8s/single: StatefulSet with a PVC, durable store).
single=(deploy/k8s/single/configmap.yaml deploy/k8s/single/statefulset.yaml deploy/k8s/single/service.yaml)
if out="$(validate "${single[@]}" 2>&1)"; then
  ok "kubernetes-validate: deploy/k8s/single, ${#single[@]} files"
  indent <<<"$out"
else
  fail "kubernetes-validate deploy/k8s/single:"
  indent <<<"$out"
fi

# kustomization.yaml lists exactly the manifests of the directory.
if out="$("$PY" - "${manifests[@]}" <<'PY' 2>&1
import os, sys, yaml
k = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
listed = set(k.get("resources") or [])
files = {os.path.basename(p) for p in sys.argv[1:]}
problems = [f"{r} is listed but missing" for r in sorted(listed - files) if not os.path.exists(os.path.join("deploy/k8s", r))]
problems += [f"{f} is not listed in resources" for f in sorted(files - listed)]
images = [i.get("name") for i in k.get("images") or []]
if "sensor-stats" not in images:
    problems.append("images: has no entry for sensor-stats")
print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
)"; then
  ok "kustomization.yaml lists every manifest and has an images: entry for sensor-stats"
else
  fail "kustomization.yaml:"
  indent <<<"$out"
fi

# The kustomize output, when a kustomize is at hand.
kustomize_cmd=()
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  kustomize_cmd=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
  kustomize_cmd=(kustomize build)
fi
if [ "${#kustomize_cmd[@]}" -eq 0 ]; then
  skip "kustomize build: neither kubectl nor kustomize is installed"
elif ! "${kustomize_cmd[@]}" deploy/k8s >"$tmp/kustomized.yaml" 2>"$tmp/kustomize.err"; then
  fail "${kustomize_cmd[*]} deploy/k8s:"
  indent <"$tmp/kustomize.err"
elif out="$(validate --quiet "$tmp/kustomized.yaml" 2>&1)"; then
  ok "${kustomize_cmd[*]} deploy/k8s renders $(grep -c '^kind:' "$tmp/kustomized.yaml") resources, all valid"
else
  fail "${kustomize_cmd[*]} deploy/k8s output:"
  indent <<<"$out"
fi

# ---------------------------------------------------------------------------- nginx
section "nginx (deploy/nginx.conf)"
if ! command -v nginx >/dev/null 2>&1; then
  fail "nginx -t: nginx is not installed (apt-get install nginx-light)"
else
  nginx_version="$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9][0-9.]*\).*|\1|p')"
  prefix="$tmp/nginx"
  mkdir -p "$prefix"
  # Upstream `server NAME:PORT` lines (not `server {` blocks) point at 127.0.0.1, and the
  # temporary directories nginx creates move into the prefix.
  sed_args=(
    -E
    -e 's/^([[:space:]]*server[[:space:]]+)[A-Za-z][A-Za-z0-9.-]*(:[0-9]+)/\1127.0.0.1\2/'
    -e "/^http[[:space:]]*\\{/a\\    client_body_temp_path $prefix/body; proxy_temp_path $prefix/proxy; fastcgi_temp_path $prefix/fastcgi; uwsgi_temp_path $prefix/uwsgi; scgi_temp_path $prefix/scgi;"
  )
  note=""
  if [ -n "$nginx_version" ] && [ "$(printf '%s\n' "$nginx_version" 1.27.3 | sort -V | head -n1)" != 1.27.3 ]; then
    sed_args+=(-e 's/[[:space:]]+resolve([[:space:]]*;)/\1/')
    note=" (nginx $nginx_version here predates the upstream \`resolve\` parameter of 1.27.3: checked without it)"
  fi
  sed "${sed_args[@]}" deploy/nginx.conf >"$prefix/nginx.conf"
  if out="$(nginx -t -q -p "$prefix/" -c "$prefix/nginx.conf" -e stderr 2>&1)"; then
    ok "nginx -t, upstream hosts as 127.0.0.1$note"
  else
    fail "nginx -t$note:"
    indent <<<"$out"
  fi
fi

# -------------------------------------------------------------------------- compose
section "Compose files (deploy/compose.yaml, deploy/compose.scaled.yaml)"
if out="$("$PY" - <<'PY' 2>&1
import os, re, sys, yaml

failed = False
def ok(msg): print(f"ok    {msg}")
def fail(msg):
    global failed
    failed = True
    print(f"FAIL  {msg}")

def load(path):
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        fail(f"{path}: {e}")
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict) or not doc["services"]:
        fail(f"{path}: no services")
        return None
    ok(f"{path} parses as YAML: services {', '.join(doc['services'])}")
    return doc

def expand(s):
    # ${VAR:-default} / ${VAR-default} / ${VAR}: the default, or the environment.
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: os.environ.get(m.group(1), m.group(2) or ""), s)

def check(path):
    doc = load(path)
    if doc is None:
        return None
    base = os.path.dirname(path)
    services = doc["services"]
    declared_volumes = set((doc.get("volumes") or {}).keys())
    problems = []
    files = 0

    def need(what, rel, kind="any"):
        nonlocal files
        p = os.path.normpath(os.path.join(base, expand(rel)))
        exists = {"any": os.path.exists, "file": os.path.isfile, "dir": os.path.isdir}[kind](p)
        if exists:
            files += 1
        else:
            problems.append(f"{what}: {rel} -> {p} does not exist" + ("" if kind == "any" else f" (as a {kind})"))

    for name, svc in services.items():
        svc = svc or {}
        for v in svc.get("volumes") or []:
            if isinstance(v, str):
                src = v.split(":", 1)[0] if ":" in v else None
                if src is None:
                    continue  # anonymous volume
                if src.startswith((".", "/", "~", "$")):
                    need(f"{name} volume", src)
                elif src not in declared_volumes:
                    problems.append(f"{name}: named volume {src} is not declared under volumes:")
            elif isinstance(v, dict):
                if v.get("type") == "bind":
                    need(f"{name} volume", v["source"])
                elif v.get("type", "volume") == "volume" and v.get("source") and v["source"] not in declared_volumes:
                    problems.append(f"{name}: named volume {v['source']} is not declared under volumes:")
        for key in ("configs", "secrets"):
            top = doc.get(key) or {}
            for ref in svc.get(key) or []:
                ref_name = ref if isinstance(ref, str) else ref.get("source")
                if ref_name not in top:
                    problems.append(f"{name}: {key[:-1]} {ref_name} is not declared under {key}:")
                elif "file" in (top[ref_name] or {}):
                    need(f"{name} {key[:-1]} {ref_name}", top[ref_name]["file"], "file")
        env_files = svc.get("env_file") or []
        for e in [env_files] if isinstance(env_files, str) else env_files:
            need(f"{name} env_file", e if isinstance(e, str) else e["path"], "file")
        build = svc.get("build")
        if build is not None:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            need(f"{name} build context", ctx, "dir")
            if isinstance(build, dict) and "dockerfile" in build:
                need(f"{name} dockerfile", os.path.join(ctx, build["dockerfile"]), "file")
        for port in svc.get("ports") or []:
            spec = str(port) if not isinstance(port, dict) else f"{port.get('host_ip', '')}:{port.get('published', '')}:{port.get('target')}"
            if not spec.startswith("127.0.0.1:"):
                problems.append(f"{name}: port {spec} is not bound to 127.0.0.1")
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problems.append(f"{name}: depends_on {dep}, which is not a service")
    if problems:
        for p in problems:
            fail(f"{path}: {p}")
    else:
        ok(f"{path}: {files} referenced files/directories exist; volumes declared; ports on 127.0.0.1; depends_on resolve")
    return doc

check("deploy/compose.yaml")
scaled = check("deploy/compose.scaled.yaml")

# The replicas named by nginx.conf and prometheus.scaled.yml are the compose services.
if scaled is not None:
    services = scaled["services"]
    replicas = {n for n in services if re.fullmatch(r"sensor-stats-\d+", n)}
    upstream = set(re.findall(r"^\s*server\s+([A-Za-z][\w.-]*):8080\b", open("deploy/nginx.conf").read(), re.M))
    prom = yaml.safe_load(open("deploy/prometheus.scaled.yml"))
    targets = {t.rsplit(":", 1)[0] for job in prom.get("scrape_configs") or [] for sc in job.get("static_configs") or [] for t in sc.get("targets") or []}
    for what, names in (("nginx.conf upstream", upstream), ("prometheus.scaled.yml targets", targets)):
        if not replicas:
            fail("compose.scaled.yaml: no sensor-stats-N replica services")
        elif names == replicas:
            ok(f"{what} = the {len(replicas)} replicas of compose.scaled.yaml ({', '.join(sorted(names))})")
        else:
            fail(f"{what} {sorted(names)} != compose.scaled.yaml replicas {sorted(replicas)}")

sys.exit(1 if failed else 0)
PY
)"; then
  printf '%s\n' "$out"
else
  printf '%s\n' "$out"
  failures=$((failures + $(grep -c '^FAIL' <<<"$out" || true)))
  if ! grep -q '^FAIL' <<<"$out"; then failures=$((failures + 1)); fi
fi

# ----------------------------------------------------------------------- prometheus
section "Prometheus (deploy/prometheus*.yml)"
if command -v promtool >/dev/null 2>&1; then
  for f in deploy/prometheus*.yml; do
    if out="$(promtool check config "$f" 2>&1)"; then
      ok "promtool check config $f"
    else
      fail "promtool check config $f:"
      indent <<<"$out"
    fi
  done
else
  skip "promtool check config: promtool is not installed (apt-get install prometheus; scripts/test.sh does)"
fi

echo
if [ "$failures" -gt 0 ]; then
  echo "check-deploy.sh: $failures check(s) failed"
  exit 1
fi
echo "check-deploy.sh: all checks passed"
