#!/usr/bin/env bash
# Static checks for the Grafana dashboards kept in this repository.
#
#   grafana/check.sh                 # every grafana/dashboards/*.json
#   grafana/check.sh some/file.json  # only the files given
#
# Fails (exit 1) and prints one line per problem when a dashboard is not valid JSON, has
# no panels, repeats or lacks a panel id, has a panel without a description or a unit,
# has a panel or target whose datasource is not the `${datasource}` variable, has an
# expression without `instance=~"$instance"` or with a fixed range instead of
# `[$__rate_interval]`, or lacks the `datasource` / `instance` template variables.
# Whether each expression returns data is checked by tests/api/prometheus.rs against a
# real Prometheus. Needs bash and jq.
set -uo pipefail

if ! command -v jq >/dev/null 2>&1; then
  echo "check.sh: jq is required (apt-get install jq, or run scripts/test.sh)" >&2
  exit 2
fi

if [ $# -eq 0 ]; then
  shopt -s nullglob
  set -- "$(dirname "${BASH_SOURCE[0]}")"/dashboards/*.json
  if [ $# -eq 0 ]; then
    echo "check.sh: no dashboards found under $(dirname "${BASH_SOURCE[0]}")/dashboards" >&2
    exit 1
  fi
fi

# Prints one line per problem; prints nothing for a good dashboard.
# shellcheck disable=SC2016 # `$instance`, `${datasource}` are Grafana's, not the shell's.
read -r -d '' PROGRAM <<'JQ'
def ds_var: type == "object" and . == {"type": "prometheus", "uid": "${datasource}"};
def all_panels: [.panels[]? | ., (.panels[]? // empty)];
def name: "panel \(.id // "<no id>") \"\(.title // "<no title>")\"";
def nonblank: type == "string" and (gsub("\\s"; "") | length) > 0;

. as $d
| ($d.templating.list // []) as $vars
| all_panels as $panels
| (
    # Template variables.
    (if ([$vars[] | select(.name == "datasource" and .type == "datasource" and .query == "prometheus")] | length) != 1
     then "templating: needs exactly one variable named `datasource` of type datasource with query prometheus"
     else empty end),
    ([$vars[] | select(.name == "instance")] as $inst
     | if ($inst | length) != 1 then "templating: needs exactly one variable named `instance`"
       else $inst[0]
         | (if .type != "query" then "templating: `instance` must be a query variable" else empty end),
           (if .multi != true then "templating: `instance` must be multi-value" else empty end),
           (if .includeAll != true then "templating: `instance` must include All" else empty end),
           (if (.datasource | ds_var | not) then "templating: `instance` datasource is \(.datasource | tojson), not the ${datasource} variable" else empty end),
           (if ((.query | if type == "object" then .query else . end) // "" | tostring
                | test("label_values\\(\\s*sensor_stats_build_info\\s*,\\s*instance\\s*\\)") | not)
            then "templating: `instance` must query label_values(sensor_stats_build_info, instance)" else empty end)
       end),

    # Panel ids: present and unique.
    (if ($panels | length) == 0 then "dashboard has no panels" else empty end),
    ($panels[] | select((.id | type) != "number") | "\(name): no numeric id"),
    ($panels | map(select((.id | type) == "number")) | group_by(.id)[] | select(length > 1)
     | "panel id \(.[0].id) is used \(length) times: \(map(.title) | join(", "))"),

    # Every panel, rows included: a description.
    ($panels[] | select(.description | nonblank | not) | "\(name): no description"),

    # Every panel that queries: datasource, unit, targets, expressions.
    ($panels[] | select(.type != "row") | name as $n
     | (if (.datasource | ds_var | not) then "\($n): datasource is \(.datasource | tojson), not {\"type\":\"prometheus\",\"uid\":\"${datasource}\"}" else empty end),
       (if (.fieldConfig.defaults.unit | nonblank | not) then "\($n): no unit (fieldConfig.defaults.unit)" else empty end),
       (if ((.targets // []) | length) == 0 then "\($n): no targets" else empty end),
       ((.targets // [])[]
        | "\($n) target \(.refId // "?")" as $t
        | (if (.datasource | ds_var | not) then "\($t): datasource is \(.datasource | tojson), not the ${datasource} variable" else empty end),
          (if (.expr | nonblank | not) then "\($t): empty expr"
           else
             (if (.expr | contains("instance=~\"$instance\"") | not) then "\($t): expr lacks instance=~\"$instance\": \(.expr)" else empty end),
             (if (.expr | gsub("\\[\\$__rate_interval\\]"; "") | test("\\[[^\\]]*\\]")) then "\($t): use [$__rate_interval], not a fixed range: \(.expr)" else empty end)
           end)))
  )
JQ

status=0
for file in "$@"; do
  if ! errors=$(jq -se 'length == 1 and (.[0] | type == "object")' "$file" 2>&1 >/dev/null); then
    echo "FAIL $file: not a valid JSON object: ${errors:-empty, several documents, or not an object}"
    status=1
    continue
  fi
  problems=$(jq -r "$PROGRAM" "$file" 2>&1)
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "FAIL $file: jq could not check it: $problems"
    status=1
  elif [ -n "$problems" ]; then
    echo "FAIL $file:"
    sed 's/^/  - /' <<<"$problems"
    status=1
  else
    echo "ok   $file ($(jq '[.panels[]? | ., (.panels[]? // empty)] | length' "$file") panels)"
  fi
done
exit $status
