# bench-common.sh: what the bench scripts share. Sourced by them, not run:
# the script sets prog (its name) first, and dir, pids and WAIT_SECONDS
# before it calls wait_for.

usage_error() {
	printf '%s: %s\n' "$prog" "$1" >&2
	printf "Try '%s --help'.\n" "$prog" >&2
	exit 2
}

# in_range VALUE LO HI: a decimal integer within LO..HI.
in_range() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	esac
	[ ${#1} -le 9 ] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]
}

log() { printf '%s: %s\n' "$prog" "$*" >&2; }

# The processes the script started; cleanup stops them all.
pids=
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	pids=
}

# wait_for WHAT COMMAND...: polls COMMAND every 0.5 s until it succeeds;
# gives up after WAIT_SECONDS, or at once if a process we started died.
wait_for() {
	what=$1
	shift
	tries=0
	until "$@"; do
		for p in $pids; do
			kill -0 "$p" 2>/dev/null || { log "$what: a process it needs exited (logs in $dir)"; exit 1; }
		done
		tries=$((tries + 1))
		[ $tries -le $((WAIT_SECONDS * 2)) ] || { log "$what: not within ${WAIT_SECONDS}s (logs in $dir)"; exit 1; }
		sleep 0.5
	done
}
