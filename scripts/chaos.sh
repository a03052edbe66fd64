#!/bin/sh
# chaos.sh: long nemesis runs against a real three-node cluster.
# POSIX sh; needs cargo (it builds and runs the integration test binary).
set -eu

prog=chaos.sh

usage() {
	cat <<EOF
Usage: $prog --minutes N [--seed S]

Runs the bank workload (concurrent clients of every organization moving
money and reading balances through every node) for N minutes while a
nemesis, driven by seed S, cuts links both ways and one way, builds bridges,
slows links, and SIGKILLs, SIGSTOPs and restarts nodes. Then the checker
holds every replica against what the clients were told, and a summary table
is printed: faults injected by type, operations ok/refused/failed/unknown,
invariants checked, and every violation with the seed that replays the
schedule. Exits non-zero on any violation.

Options:
  --minutes N  how long to inject faults, 1..1440
  --seed S     the schedule's seed, 0..18446744073709551615
               (default: the current time; printed either way)
  -h, --help   show this help and exit

Builds in release mode (the first build takes a few minutes).
EOF
}

usage_error() {
	printf '%s: %s\n' "$prog" "$1" >&2
	printf "Try '%s --help'.\n" "$prog" >&2
	exit 2
}

is_number() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	esac
	[ ${#1} -le 20 ]
}

minutes=
seed=
while [ $# -gt 0 ]; do
	case $1 in
	--minutes | --seed)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		is_number "$2" || usage_error "$1 must be a non-negative integer, not '$2'"
		if [ "$1" = --minutes ]; then minutes=$2; else seed=$2; fi
		shift 2
		;;
	-h | --help)
		usage
		exit 0
		;;
	*) usage_error "unknown argument '$1'" ;;
	esac
done
[ -n "$minutes" ] || usage_error "--minutes is required"
# Check the length first: a huge number would overflow the shell's test.
{ [ ${#minutes} -le 4 ] && [ "$minutes" -ge 1 ] && [ "$minutes" -le 1440 ]; } ||
	usage_error "--minutes must be 1..1440"
if [ ${#seed} -eq 20 ] && [ "$seed" \> 18446744073709551615 ]; then
	usage_error "--seed must fit in 64 bits"
fi
[ -n "$seed" ] || seed=$(date +%s)

cd "$(dirname "$0")/.."
printf '%s: %s minutes, seed %s\n' "$prog" "$minutes" "$seed" >&2
ALLIANCE_NEMESIS_SEED=$seed ALLIANCE_CHAOS_MINUTES=$minutes \
	exec cargo test --release --locked --test it -- \
	--ignored --exact nemesis::chaos --nocapture
