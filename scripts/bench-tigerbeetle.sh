#!/bin/sh
# bench-tigerbeetle.sh: alliance and a three-replica TigerBeetle, side by side,
# same machine, same workloads. POSIX sh; needs cargo, python3.
set -eu

prog=bench-tigerbeetle.sh
. "$(dirname "$0")/bench-common.sh"

usage() {
	cat <<EOF
Usage: $prog --tigerbeetle PATH [--transfers N] [--workloads "8189:1 8189:4 100:1"]
       [--accounts N] [--dir DIR]

For each workload BATCH:CLIENTS, starts a fresh three-replica TigerBeetle
cluster on loopback from the binary at PATH and runs its built-in
'tigerbeetle benchmark' (N transfers in batches of BATCH from CLIENTS
clients, spread uniformly over the accounts, no queries); then a fresh
alliance demo consortium (release build) and 'alliance bench' on the same
workload through the leader. Prints both side by side with their ratios,
each side's CPU seconds (all three replicas or nodes together) and
resident memory. Everything is kept under DIR; each cluster's data is
deleted once measured.

Build TigerBeetle (README, "Benchmarks"): its repository at commit
52ad553f, 'pip install ziglang==0.14.1', then 'python -m ziglang build
-Drelease' in its work tree gives ./tigerbeetle.

Options:
  --tigerbeetle PATH  the tigerbeetle binary (required)
  --transfers N       transfers per workload, 1000..100000000 (default: 1000000)
  --workloads LIST    BATCH:CLIENTS pairs, space-separated; BATCH 1..8189,
                      CLIENTS 1..64 (default: "8189:1 8189:4 100:1")
  --accounts N        accounts the transfers are spread over, 2..100000
                      (default: 10000, as TigerBeetle's benchmark does)
  --dir DIR           work directory (default: a new one under /tmp)
  -h, --help          show this help and exit
EOF
}

tigerbeetle=
transfers=1000000
workloads="8189:1 8189:4 100:1"
accounts=10000
dir=
while [ $# -gt 0 ]; do
	case $1 in
	--tigerbeetle | --transfers | --workloads | --accounts | --dir)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		case $1 in
		--tigerbeetle) tigerbeetle=$2 ;;
		--transfers) transfers=$2 ;;
		--workloads) workloads=$2 ;;
		--accounts) accounts=$2 ;;
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
[ -n "$tigerbeetle" ] || usage_error "--tigerbeetle is required"
[ -f "$tigerbeetle" ] || usage_error "--tigerbeetle: no such file: $tigerbeetle"
[ -x "$tigerbeetle" ] || usage_error "--tigerbeetle: $tigerbeetle is not executable"
in_range "$transfers" 1000 100000000 || usage_error "--transfers must be 1000..100000000"
in_range "$accounts" 2 100000 || usage_error "--accounts must be 2..100000"
[ -n "$workloads" ] || usage_error "--workloads must list at least one BATCH:CLIENTS"
for w in $workloads; do
	case $w in
	*:*) ;;
	*) usage_error "--workloads: '$w' is not BATCH:CLIENTS" ;;
	esac
	in_range "${w%%:*}" 1 8189 || usage_error "--workloads: batch '${w%%:*}' is not 1..8189"
	in_range "${w#*:}" 1 64 || usage_error "--workloads: clients '${w#*:}' is not 1..64"
done
"$tigerbeetle" version >/dev/null 2>&1 ||
	usage_error "--tigerbeetle: $tigerbeetle does not run ('$tigerbeetle version' failed)"

root=$(cd "$(dirname "$0")/.." && pwd)
[ -n "$dir" ] || dir=$(mktemp -d /tmp/bench-tigerbeetle.XXXXXX)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
tigerbeetle=$(cd "$(dirname "$tigerbeetle")" && pwd)/$(basename "$tigerbeetle")

log "building alliance (release)"
(cd "$root" && cargo build --release --locked --quiet)
alliance=${CARGO_TARGET_DIR:-$root/target}/release/alliance
[ -x "$alliance" ] || { log "no alliance binary at $alliance after the build"; exit 1; }

trap cleanup EXIT INT TERM

# How long a cluster may take to come up.
WAIT_SECONDS=120

# cpu_ticks PID...: user and system clock ticks of the processes together.
cpu_ticks() {
	for p in "$@"; do
		# Fields 14 and 15 of /proc/PID/stat, after the command in parentheses.
		sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }'
	done | awk '{ s += $1 } END { print s }'
}

# rss_mb PID...: resident memory of the processes together, in MB.
rss_mb() {
	for p in "$@"; do
		awk '/^VmRSS:/ { print $2 }' "/proc/$p/status"
	done | awk '{ s += $1 } END { printf "%.0f\n", s / 1024 }'
}

listening() { # PORT...
	python3 - "$@" <<'PY'
import socket, sys
for port in sys.argv[1:]:
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
    except OSError:
        sys.exit(1)
PY
}

ticks_per_second=$(getconf CLK_TCK)
results=$dir/results.txt
: >"$results"

for w in $workloads; do
	batch=${w%%:*} clients=${w#*:}

	# TigerBeetle: a fresh cluster of three replicas.
	tb=$dir/tigerbeetle
	rm -rf "$tb" && mkdir -p "$tb"
	set -- $(python3 -c 'import socket
ss=[socket.socket() for _ in range(3)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
	addresses="127.0.0.1:$1,127.0.0.1:$2,127.0.0.1:$3"
	ports="$1 $2 $3"
	for i in 0 1 2; do
		"$tigerbeetle" format --cluster=0 --replica=$i --replica-count=3 \
			"$tb/0_$i.tigerbeetle" >"$tb/format-$i.log" 2>&1
	done
	replicas=
	for i in 0 1 2; do
		"$tigerbeetle" start --addresses="$addresses" "$tb/0_$i.tigerbeetle" \
			>"$dir/tigerbeetle-$i.log" 2>&1 &
		pids="$pids $!"
		replicas="$replicas $!"
	done
	wait_for "TigerBeetle listening" listening $ports
	log "TigerBeetle: $transfers transfers, batches of $batch, $clients client(s)"
	before=$(cpu_ticks $replicas)
	out=$("$tigerbeetle" benchmark --addresses="$addresses" --transfer-count="$transfers" \
		--transfer-batch-count="$batch" --clients="$clients" --account-count="$accounts" \
		--query-count=0 2>&1) || { printf '%s\n' "$out" >&2; log "tigerbeetle benchmark failed"; exit 1; }
	cpu=$(($(cpu_ticks $replicas) - before))
	rss=$(rss_mb $replicas)
	rate=$(printf '%s\n' "$out" | sed -n 's/^load accepted = \([0-9]*\) tx\/s.*/\1/p')
	p50=$(printf '%s\n' "$out" | sed -n 's/^batch latency p50 *= *\([0-9]*\) ms.*/\1/p')
	p99=$(printf '%s\n' "$out" | sed -n 's/^batch latency p99 *= *\([0-9]*\) ms.*/\1/p')
	[ -n "$rate" ] && [ -n "$p50" ] && [ -n "$p99" ] ||
		{ printf '%s\n' "$out" >&2; log "could not read the tigerbeetle benchmark's output"; exit 1; }
	printf 'tigerbeetle batch=%s clients=%s rate=%s p50=%s p99=%s cpu=%s rss=%s\n' \
		"$batch" "$clients" "$rate" "$p50" "$p99" \
		"$(awk "BEGIN { printf \"%.1f\", $cpu / $ticks_per_second }")" "$rss" |
		tee -a "$results" >&2
	cleanup
	rm -rf "$tb"

	# alliance: a fresh demo consortium.
	demo=$dir/alliance
	rm -rf "$demo"
	"$alliance" demo --dir "$demo" >"$dir/alliance-demo.log" 2>&1 &
	pids=$!
	wait_for "the alliance demo coming up" grep -q "is up" "$dir/alliance-demo.log"
	leader=$("$alliance" client --config "$demo/clients/org1-app.toml" status |
		tr -d ' \n' | sed -n 's/.*"leader":\([0-9]*\).*/\1/p')
	[ -n "$leader" ] || { log "no leader reported"; exit 1; }
	log "alliance: $transfers transfers, batches of $batch, $clients client(s), via node $leader"
	out=$("$alliance" bench --dir "$demo" --node "$leader" --clients "$clients" --batch "$batch" \
		--accounts "$accounts" --transfers "$transfers" --warmup-seconds 0 --seconds 3600)
	printf '%s\n' "$out" >"$dir/alliance-bench-$batch-$clients.txt"
	printf 'alliance batch=%s clients=%s %s\n' "$batch" "$clients" "$(printf '%s' "$out" | tr '\n' ' ')" |
		tee -a "$results" >&2
	cleanup
	rm -rf "$demo"
done

# The table: per workload, both systems and alliance/TigerBeetle ratios.
python3 - "$results" <<'PY'
import re, sys

def number(pattern, line, what):
    m = re.search(pattern, line)
    if not m:
        sys.exit(f"bench-tigerbeetle.sh: no {what} in this result line: {line.strip()}")
    return float(m.group(1))

rows = {}
for line in open(sys.argv[1]):
    who, batch, clients = re.match(r"(\w+) batch=(\d+) clients=(\d+)", line).groups()
    if who == "tigerbeetle":
        rate = number(r"rate=(\d+)", line, "rate")
        p50 = number(r"p50=(\d+)", line, "p50")
        p99 = number(r"p99=(\d+)", line, "p99")
        cpu = number(r"cpu=([\d.]+)", line, "cpu")
        rss = number(r"rss=(\d+)", line, "rss")
    else:
        rate = number(r"([\d.]+) transfers/s", line, "transfers/s")
        p50 = number(r"p50 ([\d.]+)", line, "p50")
        p99 = number(r"p99 ([\d.]+)", line, "p99")
        cpus = [float(c) for c in re.findall(r"cpu ([\d.]+) s over", line)]
        rsss = [float(r) for r in re.findall(r"[^k] rss (\d+) MB", line)]
        if len(cpus) != 3 or len(rsss) != 3:
            sys.exit(f"bench-tigerbeetle.sh: expected three nodes' cpu and rss in: {line.strip()}")
        cpu, rss = sum(cpus), sum(rsss)
    rows.setdefault((int(batch), int(clients)), {})[who] = (rate, p50, p99, cpu, rss)

print("| batch | clients | TigerBeetle /s | p50 ms | p99 ms | CPU s | RSS MB | alliance /s | p50 ms | p99 ms | CPU s | RSS MB | throughput ratio | p99 ratio | CPU ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (batch, clients) in sorted(rows, key=lambda k: (-k[0], k[1])):
    t, a = rows[(batch, clients)].get("tigerbeetle"), rows[(batch, clients)].get("alliance")
    if not (t and a):
        continue
    print(f"| {batch} | {clients} | {t[0]:.0f} | {t[1]:.0f} | {t[2]:.0f} | {t[3]:.1f} | {t[4]:.0f} | "
          f"{a[0]:.0f} | {a[1]:.1f} | {a[2]:.1f} | {a[3]:.1f} | {a[4]:.0f} | "
          f"{a[0]/t[0]:.2f}x | {a[2]/max(t[2], 1):.2f}x | {a[3]/max(t[3], 0.1):.2f}x |")
print("(ratios are alliance / TigerBeetle: above 1 is better for throughput, below 1 for p99 and CPU;"
      " CPU and RSS are the three replicas or nodes together; TigerBeetle's latencies are whole ms)")
PY
log "raw results: $results"
