#!/bin/sh
# api-contract.sh: the API against its own OpenAPI description, with
# schemathesis, once per role certificate, on a fresh demo consortium.
# POSIX sh; needs curl, and python3 with schemathesis and openapi-python-client
# (python3 -m pip install schemathesis openapi-python-client).
set -eu

prog=api-contract.sh
. "$(dirname "$0")/bench-common.sh"

usage() {
	cat <<EOF
Usage: $prog --alliance PATH [--examples N] [--dir DIR]

Starts a demo consortium with the alliance binary at PATH and runs
schemathesis against node 1's GET /v1/openapi.json four times: as org1's
app, org1's partner, org1's admin, and org2's app. A run fails on a 5xx, an
answer that breaks the description (body, status, content type or headers),
an invalid request accepted, a method a route does not take answered other
than 405, and any success the README's role table forbids
(scripts/api-contract-hooks.py). Before those runs (which change the
demo's accounts) it generates a Python client from the description with
openapi-python-client and uses it as org1's app (scripts/api-client-check.py). Exits non-zero if anything failed; each
run's output and JUnit report are kept under DIR (without --dir, only when
a run failed).

Options:
  --alliance PATH   the alliance binary (required), e.g. target/debug/alliance
  --examples N      examples per operation and phase, 1..10000 (default: 20)
  --dir DIR         a new work directory (default: a new one under /tmp)
  -h, --help        show this help and exit
EOF
}

alliance=
examples=20
dir=
while [ $# -gt 0 ]; do
	case $1 in
	--alliance | --examples | --dir)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		case $1 in
		--alliance) alliance=$2 ;;
		--examples) examples=$2 ;;
		--dir) dir=$2 ;;
		esac
		shift 2
		;;
	-h | --help)
		usage
		exit 0
		;;
	*) usage_error "unknown argument '$1'" ;;
	esac
done
[ -n "$alliance" ] || usage_error "--alliance is required"
[ -f "$alliance" ] && [ -x "$alliance" ] || usage_error "--alliance: '$alliance' is not an executable file"
in_range "$examples" 1 10000 || usage_error "--examples must be an integer in 1..10000, not '$examples'"
python3 -m schemathesis.cli --version >/dev/null 2>&1 || usage_error "schemathesis is not installed for python3 (python3 -m pip install schemathesis)"
python3 -m openapi_python_client --version >/dev/null 2>&1 || usage_error "openapi-python-client is not installed for python3 (python3 -m pip install openapi-python-client)"
keep=$dir
if [ -n "$dir" ]; then
	[ ! -e "$dir" ] || usage_error "--dir: '$dir' exists; give a new directory"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/api-contract.XXXXXX")
fi
hooks=$(cd "$(dirname "$0")" && pwd)/api-contract-hooks.py
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WAIT_SECONDS=120

"$alliance" demo --dir "$dir/demo" >"$dir/demo.log" 2>&1 &
pids="$pids $!"
wait_for "the demo consortium" grep -qs "is up" "$dir/demo.log"

# D, API (node 1) and AUTH (curl's options as org1's app).
. "$dir/demo/demo.env"
url=$API
pki=$D/pki
log "a Python client generated from the description, as org1's app"
# AUTH holds several options: split on purpose.
curl -sS --fail $AUTH -o "$dir/openapi.json" "$url/v1/openapi.json"
if ! python3 -m openapi_python_client generate --path "$dir/openapi.json" --meta none \
	--output-path "$dir/generated/alliance_client" >"$dir/generate.log" 2>&1; then
	cat "$dir/generate.log" >&2
	log "the description did not generate a client (output in $dir)"
	exit 1
fi
PYTHONPATH="$dir/generated" python3 "$(dirname "$hooks")/api-client-check.py" "$dir/demo" "$url" >&2

failed=
for who in org1:app org1:partner org1:admin org2:app; do
	org=${who%%:*}
	role=${who#*:}
	out=$dir/st-$org-$role.log
	log "as $org's $role against node 1 ($url)"
	# Run in DIR: schemathesis keeps a cache in its working directory.
	if (cd "$dir" && ALLIANCE_ROLE=$role ALLIANCE_ORG=$org ALLIANCE_NODE_ORG=org1 SCHEMATHESIS_HOOKS=$hooks \
		python3 -m schemathesis.cli run "$url/v1/openapi.json" \
		--tls-verify "$pki/org1/ca.crt" \
		--request-cert "$pki/$org/$role-$role.crt" \
		--request-cert-key "$pki/$org/$role-$role.key" \
		--max-examples "$examples" \
		--generation-deterministic \
		--checks all \
		--exclude-checks positive_data_acceptance \
		--report junit --report-dir "$dir/report-$org-$role") \
		>"$out" 2>&1; then
		sed -n '/ generated, /p' "$out" >&2
	else
		cat "$out" >&2
		failed="$failed $org:$role"
	fi
done
if [ -n "$failed" ]; then
	log "failed as:$failed (output and reports in $dir)"
	exit 1
fi
log "ok: no 5xx, no answer outside the description, no success the role table forbids"
cleanup
[ -n "$keep" ] || rm -rf "$dir"
