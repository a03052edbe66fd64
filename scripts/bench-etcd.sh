#!/bin/sh
# bench-etcd.sh: alliance and a three-member etcd, side by side, same machine.
# POSIX sh; needs cargo, openssl, curl, python3; installs etcd-server if missing.
set -eu

prog=bench-etcd.sh
. "$(dirname "$0")/bench-common.sh"

usage() {
	cat <<EOF
Usage: $prog --etcdbench PATH [--clients "1 256"] [--seconds S] [--etcd-writes N] [--dir DIR]

Starts a three-member etcd (Debian's etcd-server, installed if missing) on
loopback with mutual TLS on client and peer links, certificates made by our
own scripts, and measures it with the etcd load generator at PATH: a built
binary, or the source folder of a Cargo crate that re-implements etcd's
'benchmark put' (flags --endpoints --conns --clients --total --key-size
--val-size --cacert --cert --key), which is copied and built; it needs
protobuf-compiler, installed if missing. Then
starts an alliance demo consortium (release build) and measures it with
'alliance bench' via the leader at the same concurrencies. Prints both and
their ratios; everything is kept under DIR.

Options:
  --etcdbench PATH   etcd load generator: binary or source folder (required)
  --clients LIST     concurrent clients, space-separated, each 1..4096
                     (default: "1 256")
  --seconds S        alliance measurement per concurrency, 1..3600 (default: 15)
  --etcd-writes N    etcd writes per concurrency, 1..10000000 (default: 20000)
  --dir DIR          work directory (default: a new one under /tmp)
  -h, --help         show this help and exit
EOF
}

etcdbench=
clients="1 256"
seconds=15
writes=20000
dir=
while [ $# -gt 0 ]; do
	case $1 in
	--etcdbench | --clients | --seconds | --etcd-writes | --dir)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		case $1 in
		--etcdbench) etcdbench=$2 ;;
		--clients) clients=$2 ;;
		--seconds) seconds=$2 ;;
		--etcd-writes) writes=$2 ;;
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
[ -n "$etcdbench" ] || usage_error "--etcdbench is required"
[ -e "$etcdbench" ] || usage_error "--etcdbench: no such file or folder: $etcdbench"
[ -n "$clients" ] || usage_error "--clients must list at least one number"
for c in $clients; do
	in_range "$c" 1 4096 || usage_error "--clients: '$c' is not 1..4096"
done
in_range "$seconds" 1 3600 || usage_error "--seconds must be 1..3600"
in_range "$writes" 1 10000000 || usage_error "--etcd-writes must be 1..10000000"

root=$(cd "$(dirname "$0")/.." && pwd)
[ -n "$dir" ] || dir=$(mktemp -d /tmp/bench-etcd.XXXXXX)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

need_pkg() { # command package
	command -v "$1" >/dev/null 2>&1 && return 0
	log "installing $2"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >"$dir/apt-$2.log" 2>&1 ||
		{ log "could not install $2 (see $dir/apt-$2.log)"; exit 1; }
}
need_pkg etcd etcd-server

if [ -d "$etcdbench" ]; then
	need_pkg protoc protobuf-compiler
	rm -rf "$dir/etcdbench-src" && cp -r "$etcdbench" "$dir/etcdbench-src"
	log "building the etcd load generator"
	(cd "$dir/etcdbench-src" && cargo build --release --quiet)
	etcdbench=$dir/etcdbench-src/target/release/etcdbench
fi
[ -x "$etcdbench" ] || usage_error "--etcdbench: $etcdbench is not executable"

log "building alliance (release)"
(cd "$root" && cargo build --release --locked --quiet)
alliance=${CARGO_TARGET_DIR:-$root/target}/release/alliance
[ -x "$alliance" ] || { log "no alliance binary at $alliance after the build"; exit 1; }

trap cleanup EXIT INT TERM

# How long etcd and the demo may take to come up.
WAIT_SECONDS=120
# etcdbench's connections: at most this many, shared by its clients.
ETCD_CONNS_MAX=100

# Certificates for etcd, made by our own scripts: one CA, three members, a client.
pki=$dir/etcd-pki
sh "$root/scripts/new-org.sh" --dir "$pki" --org etcd >/dev/null
for i in 1 2 3; do
	sh "$root/scripts/issue-cert.sh" --dir "$pki" --org etcd --role node --name "$i" \
		--host 127.0.0.1 >/dev/null
done
sh "$root/scripts/issue-cert.sh" --dir "$pki" --org etcd --role app --name bench >/dev/null
ca=$pki/etcd/ca.crt

set -- $(python3 -c 'import socket
ss=[socket.socket() for _ in range(6)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
cport1=$1 cport2=$2 cport3=$3 pport1=$4 pport2=$5 pport3=$6
cluster="m1=https://127.0.0.1:$pport1,m2=https://127.0.0.1:$pport2,m3=https://127.0.0.1:$pport3"
endpoints="https://127.0.0.1:$cport1,https://127.0.0.1:$cport2,https://127.0.0.1:$cport3"
rm -rf "$dir/etcd-data"
for i in 1 2 3; do
	eval "cport=\$cport$i pport=\$pport$i"
	crt=$pki/etcd/node-$i.crt key=$pki/etcd/node-$i.key
	etcd --name "m$i" --data-dir "$dir/etcd-data/m$i" \
		--listen-client-urls "https://127.0.0.1:$cport" \
		--advertise-client-urls "https://127.0.0.1:$cport" \
		--listen-peer-urls "https://127.0.0.1:$pport" \
		--initial-advertise-peer-urls "https://127.0.0.1:$pport" \
		--initial-cluster "$cluster" --initial-cluster-state new \
		--initial-cluster-token bench \
		--cert-file "$crt" --key-file "$key" --client-cert-auth --trusted-ca-file "$ca" \
		--peer-cert-file "$crt" --peer-key-file "$key" --peer-client-cert-auth \
		--peer-trusted-ca-file "$ca" >"$dir/etcd-m$i.log" 2>&1 &
	pids="$pids $!"
done
client_tls="--cacert $ca --cert $pki/etcd/app-bench.crt --key $pki/etcd/app-bench.key"
etcd_healthy() {
	curl -sf $client_tls "https://127.0.0.1:$cport1/health" | grep -q '"health":"true"'
}
wait_for "etcd becoming healthy" etcd_healthy
log "etcd is up; measuring it"
results=$dir/results.txt
: >"$results"
for c in $clients; do
	conns=$c
	[ "$conns" -le $ETCD_CONNS_MAX ] || conns=$ETCD_CONNS_MAX
	out=$("$etcdbench" --endpoints "$endpoints" --conns "$conns" --clients "$c" \
		--total "$writes" --key-size 8 --val-size 256 $client_tls)
	printf 'etcd clients=%s %s\n' "$c" "$out" | tee -a "$results" >&2
done
cleanup
pids=

log "starting the alliance demo consortium"
"$alliance" demo --dir "$dir/alliance" >"$dir/alliance-demo.log" 2>&1 &
pids=$!
wait_for "the alliance demo coming up" grep -q "is up" "$dir/alliance-demo.log"
leader=$("$alliance" client --config "$dir/alliance/clients/org1-app.toml" status |
	tr -d ' \n' | sed -n 's/.*"leader":\([0-9]*\).*/\1/p')
[ -n "$leader" ] || { log "no leader reported"; exit 1; }
for c in $clients; do
	out=$("$alliance" bench --dir "$dir/alliance" --node "$leader" --clients "$c" \
		--seconds "$seconds" | tr '\n' ' ')
	printf 'alliance clients=%s %s\n' "$c" "$out" | tee -a "$results" >&2
done

# The table: per concurrency, both systems and alliance/etcd ratios.
python3 - "$results" <<'PY'
import re, sys

def number(pattern, line):
    m = re.search(pattern, line)
    if not m:
        sys.exit(f"bench-etcd.sh: no {pattern!r} in this result line: {line.strip()}")
    return float(m.group(1))

rows = {}
for line in open(sys.argv[1]):
    who, c = re.match(r"(\w+) clients=(\d+)", line).groups()
    if who == "etcd":
        rps = number(r"rps=([\d.]+)", line)
        p50 = number(r"p50_ms=([\d.]+)", line)
        p99 = number(r"p99_ms=([\d.]+)", line)
    else:
        rps = number(r"([\d.]+) transfers/s", line)
        p50 = number(r"p50 ([\d.]+)", line)
        p99 = number(r"p99 ([\d.]+)", line)
    rows.setdefault(int(c), {})[who] = (rps, p50, p99)
print("| clients | etcd writes/s | etcd p50 ms | etcd p99 ms | alliance transfers/s | alliance p50 ms | alliance p99 ms | throughput ratio | p50 ratio | p99 ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
for c in sorted(rows):
    e, a = rows[c].get("etcd"), rows[c].get("alliance")
    if not (e and a):
        continue
    print(f"| {c} | {e[0]:.0f} | {e[1]:.2f} | {e[2]:.2f} | {a[0]:.0f} | {a[1]:.2f} | {a[2]:.2f} | "
          f"{a[0]/e[0]:.2f}x | {a[1]/e[1]:.2f}x | {a[2]/e[2]:.2f}x |")
print("(ratios are alliance / etcd: above 1 is better for throughput, below 1 for latency)")
PY
log "raw results: $results"
