#!/bin/sh
# bench-history.sh: a three-node consortium loaded with millions of
# transfers, measured a million at a time as its history grows.
# POSIX sh; needs cargo, curl, python3.
set -eu

prog=bench-history.sh
. "$(dirname "$0")/bench-common.sh"

usage() {
	cat <<EOF
Usage: $prog [--millions M] [--batch N] [--snapshot-every ENTRIES]
       [--logs-kept ENTRIES] [--dir DIR]

Makes a fresh three-node demo consortium (release build), its nodes
building a snapshot every ENTRIES log entries, starts the nodes and loads
them through the leader with 'alliance bench', one million transfers at a
time in batches of N. For each million it prints the throughput, p99 and
largest latency, the snapshots the leader built meanwhile, the largest
resident memory of each node (sampled every half second, until the next
million starts), the largest the kernel recorded for each node since it
started (VmHWM, read as the next million starts: it counts the moments
between samples), the CPU seconds each node used during that million,
and each node's data directory size. After the table it prints, for
each million and for the whole run, the largest latency of the writes
that overlapped a snapshot build on some node (from the nodes' logs)
and the p99 of the other writes.

Before the third-to-last million (the second, if M is 3) it kills a
follower (SIGKILL) and starts it again as the next million starts: it
prints how long that node took to apply what the leader had committed when
it came back, whether the term changed meanwhile, the snapshots it
installed and the other nodes sent meanwhile (it is sent one when the leader
no longer holds the entries it lacks: see --logs-kept), and that node's
largest resident memory (read every 0.1 s from its restart) and its mean
from 3 to 33 s after it. With M of 4 or more
the last million waits for that node to be back in step, so the last and
the first million both run with three nodes in step. At the end it kills
all three nodes (SIGKILL), starts them again and prints the time until a
transfer is acknowledged.

Everything is kept under DIR and deleted at the end; at batches of 8,000
the nodes keep about 1.9 GB of data per million transfers in all.

Options:
  --millions M           millions of transfers, 3..100 (default: 10)
  --batch N              transfers per request, 1..8189 (default: 8000)
  --snapshot-every E     log entries between snapshots, 10..100000 (default: 250,
                         at batches of 8,000 a snapshot every 2 million)
  --logs-kept E          log entries a node keeps behind its snapshot for a
                         follower that lags, 0..100000 (default: the demo's,
                         1000); below the entries of a million (125 at
                         batches of 8,000), with a snapshot built while the
                         follower is stopped, it catches up from a snapshot
  --dir DIR              work directory (default: a new one under /tmp)
  -h, --help             show this help and exit
EOF
}

millions=10
batch=8000
snapshot_every=250
logs_kept=
dir=
while [ $# -gt 0 ]; do
	case $1 in
	--millions | --batch | --snapshot-every | --logs-kept | --dir)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		case $1 in
		--millions) millions=$2 ;;
		--batch) batch=$2 ;;
		--snapshot-every) snapshot_every=$2 ;;
		--logs-kept) logs_kept=$2 ;;
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
in_range "$millions" 3 100 || usage_error "--millions must be 3..100"
in_range "$batch" 1 8189 || usage_error "--batch must be 1..8189"
in_range "$snapshot_every" 10 100000 || usage_error "--snapshot-every must be 10..100000"
[ -z "$logs_kept" ] || in_range "$logs_kept" 0 100000 || usage_error "--logs-kept must be 0..100000"
command -v curl >/dev/null || usage_error "curl is needed (to read the nodes' metrics)"

root=$(cd "$(dirname "$0")/.." && pwd)
[ -n "$dir" ] || dir=$(mktemp -d /tmp/bench-history.XXXXXX)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
demo=$dir/demo

log "building alliance (release)"
(cd "$root" && cargo build --release --locked --quiet)
alliance=${CARGO_TARGET_DIR:-$root/target}/release/alliance
[ -x "$alliance" ] || { log "no alliance binary at $alliance after the build"; exit 1; }

sampler=
follower_sampler=
finish() {
	[ -z "$sampler" ] || kill "$sampler" 2>/dev/null || true
	[ -z "$follower_sampler" ] || kill "$follower_sampler" 2>/dev/null || true
	for n in 1 2 3; do
		[ -f "$dir/pid-$n" ] && kill -9 "$(cat "$dir/pid-$n")" 2>/dev/null || true
	done
	cleanup
	rm -rf "$demo"
}
trap finish EXIT INT TERM

# How long the consortium may take to come up, a write to be acknowledged,
# a follower to catch up.
WAIT_SECONDS=600

log "making the demo consortium in $demo"
"$alliance" demo --dir "$demo" --exit >"$dir/demo.log" 2>&1 ||
	{ cat "$dir/demo.log" >&2; log "alliance demo failed"; exit 1; }
for n in 1 2 3; do
	sed -i "s/^snapshot_logs_since_last = .*/snapshot_logs_since_last = $snapshot_every/" \
		"$demo/node$n/config.toml"
	[ -z "$logs_kept" ] ||
		sed -i "s/^snapshot_logs_kept = .*/snapshot_logs_kept = $logs_kept/" "$demo/node$n/config.toml"
done

start_node() { # N
	"$alliance" node --config "$demo/node$1/config.toml" >>"$dir/node$1.log" 2>&1 &
	echo $! >"$dir/pid-$1"
	# The nodes wait_for watches: the three last started.
	pids=$(cat "$dir"/pid-*)
}

ops_addr() { sed -n 's/^ops_addr = "\(.*\)"/\1/p' "$demo/node$1/config.toml"; }

metric() { # N NAME: the value of metric NAME on node N, empty if it does not answer
	curl -s --max-time 2 "http://$(ops_addr "$1")/metrics" 2>/dev/null |
		awk -v m="$2" '$1 == m { print $2; exit }'
}

leader() {
	for n in 1 2 3; do
		if [ "$(metric $n alliance_is_leader)" = 1 ]; then
			echo $n
			return
		fi
	done
	return 1
}

has_leader() { leader >/dev/null; }

for n in 1 2 3; do start_node $n; done
wait_for "a leader" has_leader

# The largest resident memory of each node (MB) per million, from samples
# every half second: lines "MILLION RSS1 RSS2 RSS3".
echo 0 >"$dir/million"
(
	while :; do
		line=$(cat "$dir/million")
		for n in 1 2 3; do
			p=$(cat "$dir/pid-$n")
			r=$(awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$p/status" 2>/dev/null || true)
			line="$line ${r:-0}"
		done
		echo "$line" >>"$dir/rss.txt"
		sleep 0.5
	done
) &
sampler=$!

# The restarted follower's resident memory every 0.1 s while it runs:
# lines "SECONDS-SINCE-ITS-START MB" (from statm: VmRSS in pages).
page_kb=$(($(getconf PAGESIZE) / 1024))
follow_memory() { # PID
	start_ns=$(date +%s%N)
	while read -r _size resident _rest <"/proc/$1/statm" 2>/dev/null; do
		cs=$((($(date +%s%N) - start_ns) / 10000000))
		printf '%d.%02d %d\n' $((cs / 100)) $((cs % 100)) \
			$((resident * page_kb / 1024)) >>"$dir/follower-rss.txt"
		sleep 0.1
	done
}

rss_of() { # MILLION: "max1/max2/max3" MB
	awk -v m="$1" '$1 == m { for (i = 2; i <= 4; i++) if ($i > x[i]) x[i] = $i }
		END { printf "%d/%d/%d", x[2], x[3], x[4] }' "$dir/rss.txt"
}

disk_of() { # "mb1/mb2/mb3" of the data directories
	out=
	for n in 1 2 3; do
		out="$out$(du -sm "$demo/node$n/data" | cut -f1)/"
	done
	echo "${out%/}"
}

# CPU seconds (user and system) each node has used since it started,
# "-" for a node that is not running.
ticks=$(getconf CLK_TCK)
cpu_now() {
	for n in 1 2 3; do
		awk -v t="$ticks" '{ printf "%.1f ", ($14 + $15) / t }' "/proc/$(cat "$dir/pid-$n")/stat" 2>/dev/null ||
			printf -- '- '
	done
}

cpu_used() { # "BEFORE" "AFTER" (from cpu_now): "s1/s2/s3" used between them
	awk -v b="$1" -v a="$2" 'BEGIN {
		nb = split(b, x, " "); split(a, y, " "); out = ""
		for (i = 1; i <= 3; i++) out = out (i > 1 ? "/" : "") ((x[i] == "-" || y[i] == "-") ? "-" : sprintf("%.1f", y[i] - x[i]))
		print out }'
}

seconds_since() { awk -v t="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.1f", now - t }'; }

# The largest resident memory of each node since it started (MB), as
# the kernel records it: "hwm1/hwm2/hwm3", "-" for a node not running.
hwm_now() {
	out=
	for n in 1 2 3; do
		h=$(awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$(cat "$dir/pid-$n")/status" 2>/dev/null || true)
		out="$out${h:--}/"
	done
	echo "${out%/}"
}

# A million's row waits for the next million to start, so that its
# largest RSS counts the samples until then (a follower catching up).
row=
print_row() {
	[ -n "$row" ] || return 0
	printf '%s\n' "$row" | awk -F'|' -v rss="$(rss_of "${row%%|*}")" -v hwm="$(hwm_now)" \
		'{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, rss, hwm, $7, $8 }'
	row=
}

sent_by_others() { # snapshots the nodes other than $victim have sent
	sum=0
	for n in 1 2 3; do
		[ "$n" = "$victim" ] || { v=$(metric "$n" alliance_snapshots_sent_total); sum=$((sum + ${v:-0})); }
	done
	echo "$sum"
}

caught_up() { # NODE TARGET: the node has applied index TARGET
	a=$(metric "$1" alliance_raft_applied_index)
	[ -n "$a" ] && [ "$a" -ge "$2" ]
}

printf '%s\n' "| million | transfers/s | p99 ms | max ms | 5xx/errors | snapshots built | largest RSS MB (nodes 1/2/3) | largest RSS since start MB (VmHWM) | CPU s (nodes 1/2/3) | data MB (nodes 1/2/3) |"
printf '%s\n' "|---|---|---|---|---|---|---|---|---|---|"
# The million a follower misses, and the one it catches up during.
stopped=$((millions - 2))
[ "$stopped" -ge 2 ] || stopped=2
restarted=$((stopped + 1))
victim=
watcher=
for m in $(seq 1 "$millions"); do
	l=$(leader) || { log "no leader before million $m"; exit 1; }
	if [ -n "$watcher" ] && [ "$m" -gt "$restarted" ]; then
		wait "$watcher" || { log "node $victim did not catch up (log: $dir/node$victim.log)"; exit 1; }
		watcher=
		# In step: it has also applied what was committed since.
		wait_for "node $victim to apply what is committed" caught_up "$victim" \
			"$(metric "$l" alliance_raft_commit_index)"
	fi
	# Before a node is killed or started: the row's VmHWM is then of
	# the processes that ran its million.
	print_row
	if [ "$m" -eq "$stopped" ]; then
		victim=$(for n in 1 2 3; do [ $n = "$l" ] || echo $n; done | tail -1)
		log "killing follower $victim for one million transfers"
		kill -9 "$(cat "$dir/pid-$victim")"
		wait "$(cat "$dir/pid-$victim")" 2>/dev/null || true
		term_before=$(metric "$l" alliance_raft_term)
		sent_before=$(sent_by_others)
	fi
	if [ "$m" -eq "$restarted" ]; then
		target=$(metric "$l" alliance_raft_commit_index)
		start_node "$victim"
		back=$(date +%s.%N)
		follow_memory "$(cat "$dir/pid-$victim")" &
		follower_sampler=$!
		(
			WAIT_SECONDS=600
			# Fails at once if the restarted node exits.
			pids=$(cat "$dir/pid-$victim")
			wait_for "node $victim to catch up" caught_up "$victim" "$target"
			seconds_since "$back" >"$dir/caught-up"
		) &
		watcher=$!
	fi
	echo "$m" >"$dir/million"
	built=$(metric "$l" alliance_snapshots_built_total)
	cpu_before=$(cpu_now)
	out=$("$alliance" bench --dir "$demo" --node "$l" --batch "$batch" --transfers 1000000 \
		--warmup-seconds 0 --seconds 3600 --latencies "$dir/latencies-$m.txt" 2>/dev/null |
		tr '\n' ' ')
	printf '%s\n' "$out" >>"$dir/bench.txt"
	cpu=$(cpu_used "$cpu_before" "$(cpu_now)")
	built=$(($(metric "$l" alliance_snapshots_built_total) - built))
	rate=$(printf '%s' "$out" | sed -n 's/.* \([0-9.]*\) transfers\/s.*/\1/p')
	p99=$(printf '%s' "$out" | sed -n 's/.* p99 \([0-9.]*\) .*/\1/p')
	max=$(printf '%s' "$out" | sed -n 's/.* max \([0-9.]*\) .*/\1/p')
	errors=$(printf '%s' "$out" | sed -n 's/.*errors by code: \({[^}]*}\).*/\1/p')
	[ -n "$rate" ] && [ -n "$p99" ] || { printf '%s\n' "$out" >&2; log "could not read the bench's output"; exit 1; }
	row="$m|$rate|$p99|$max|$errors|$built|$cpu|$(disk_of)"
done
print_row

# The writes that overlapped a snapshot build on some node (each node's
# log under DIR says when it stored a built snapshot and how long the
# build took; a build a kill cut short says nothing) against the others:
# per million and for the whole run, the largest latency of the first
# and the p99 of the second in ms ("-" where there are none).
python3 - "$dir" "$millions" <<'PY'
import datetime, re, sys

work, millions = sys.argv[1], int(sys.argv[2])
stored = re.compile(r"^(\S+?)Z? .*stored the built snapshot.* ms=(\d+)")
builds = []
for n in (1, 2, 3):
    try:
        log = open(f"{work}/node{n}.log", errors="replace")
    except OSError:
        continue
    for line in log:
        m = stored.match(line) if "stored the built snapshot" in line else None
        if m:
            at = datetime.datetime.fromisoformat(m.group(1))
            end = at.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
            builds.append((end - int(m.group(2)), end))

def split(million):
    during, others = [], []
    for line in open(f"{work}/latencies-{million}.txt"):
        sent, micros = map(int, line.split())
        done = sent + micros / 1000
        overlaps = any(start <= done and sent <= end for start, end in builds)
        (during if overlaps else others).append(micros / 1000)
    return during, others

def summary(during, others):
    others = sorted(others)
    p99 = others[min(int(len(others) * 0.99), len(others) - 1)] if others else None
    show = lambda ms: "-" if ms is None else f"{ms:.0f}"
    return len(during), show(max(during) if during else None), len(others), show(p99)

print("\n| million | writes during a snapshot build | largest ms | other writes | their p99 ms |")
print("|---|---|---|---|---|")
run_during, run_others = [], []
for million in range(1, millions + 1):
    during, others = split(million)
    run_during += during
    run_others += others
    print("| %s | %s | %s | %s | %s |" % ((million,) + summary(during, others)))
print("all millions: %s writes during a snapshot build, the largest %s ms; the p99 of the %s others %s ms"
      % summary(run_during, run_others))
PY

if [ -n "$victim" ]; then
	if [ -n "$watcher" ]; then
		wait "$watcher" || { log "node $victim did not catch up (log: $dir/node$victim.log)"; exit 1; }
	fi
	l=$(leader)
	printf 'follower %s, stopped for a million transfers: applied what was committed at its restart %.1f s later; term %s before, %s after\n' \
		"$victim" "$(cat "$dir/caught-up")" "$term_before" "$(metric "$l" alliance_raft_term)"
	printf 'follower %s: %s snapshot(s) installed since its restart; the other nodes sent %s meanwhile\n' \
		"$victim" "$(metric "$victim" alliance_snapshots_installed_total)" \
		"$(($(sent_by_others) - sent_before))"
	[ ! -s "$dir/follower-rss.txt" ] ||
		awk '{ if ($2 > top) top = $2 } $1 >= 3 && $1 <= 33 { sum += $2; n++ }
			END { if (n) printf "follower %s: largest resident memory %d MB (read every 0.1 s since its restart), mean %d MB from 3 to 33 s after it\n", v, top, sum / n }' \
			v="$victim" "$dir/follower-rss.txt"
fi

total=$((millions * 1000000))
for n in 1 2 3; do
	bytes=$(du -sb "$demo/node$n/data" | cut -f1)
	printf 'node %s: %s bytes of data directory per transfer\n' "$n" "$((bytes / total))"
done

log "killing all three nodes (SIGKILL) and starting them again"
kill "$sampler" ${follower_sampler:+"$follower_sampler"} 2>/dev/null || true
sampler=
for n in 1 2 3; do kill -9 "$(cat "$dir/pid-$n")"; done
for n in 1 2 3; do wait "$(cat "$dir/pid-$n")" 2>/dev/null || true; done
start=$(date +%s.%N)
for n in 1 2 3; do start_node $n; done
acknowledged() {
	l=$(leader) &&
		"$alliance" bench --dir "$demo" --node "$l" --batch 1 --transfers 1 \
			--warmup-seconds 0 --seconds 5 >/dev/null 2>&1
}
wait_for "a transfer acknowledged after the restart" acknowledged
printf 'restart after SIGKILL of every node at %s transfers: a transfer acknowledged %.1f s after the start\n' \
	"$total" "$(seconds_since "$start")"
