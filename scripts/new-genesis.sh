#!/bin/sh
# new-genesis.sh: write the genesis file (founding organizations and nodes)
# of an alliance consortium.
# Self-contained POSIX sh (dash-compatible); needs only the openssl CLI.
set -eu

LC_ALL=C
export LC_ALL
umask 022

prog=new-genesis.sh
NL='
'

usage() {
	cat <<EOF
Usage: $prog --out FILE --name CONSORTIUM --org ORG=CA_CERT [--org ...]
       --node ID,ORG,API_ADDR,RAFT_ADDR [--node ...] [--node-cert ID=CERT ...]
       [--threshold T] [--force]

Writes the genesis file FILE (TOML): the consortium name, each founding
organization with its CA certificate (PEM, embedded), and each founding node
with its id, organization, API address and Raft address.

Options:
  --out FILE      file to write; an existing FILE is only replaced with --force
  --name NAME     consortium name, [A-Za-z0-9][A-Za-z0-9._-]{0,63}
  --org ORG=PATH  repeatable, at least one: organization name
                  ([a-z0-9][a-z0-9-]{0,31}) and the path of its CA certificate
                  (PEM; must be a CA certificate, basicConstraints CA:TRUE)
  --node ID,ORG,API_ADDR,RAFT_ADDR
                  repeatable, at least one: node id (decimal integer in
                  1..9223372036854775807, no leading zeros, unique; the CN of
                  the node's certificate), its organization (one of the --org
                  names), and its API and Raft addresses as HOST:PORT
                  (HOST an IPv4 address, [IPv6] address or DNS name;
                  PORT 1..65535)
  --node-cert ID=PATH
                  repeatable, at most once per node: registers node ID's public
                  key, read from its certificate PATH (a node certificate of
                  its organization's CA, subject O=ORG, OU=node, CN=ID). The
                  other nodes then keep the peer channel to node ID working
                  past that certificate's expiry, with an alarm in their
                  logs, while it presents a certificate with the same key;
                  clients and the API stay strict
  --threshold T   how many organizations must approve a governance proposal:
                  majority (the default) or a fraction N/D above one half,
                  e.g. 2/3; changeable later by vote
  --force         replace FILE if it exists
  -h, --help      show this help and exit

On success prints the written path to stdout.
Nothing is written unless every check passes.
Exit status: 0 success, 1 failure (e.g. FILE exists without --force),
2 invalid command line or input (including a --org CA certificate that is
missing, unreadable or not a CA certificate).

Example:
  $prog --out genesis.toml --name demo \\
      --org org1=consortium/org1/ca.crt --org org2=consortium/org2/ca.crt \\
      --node 1,org1,127.0.0.1:7101,127.0.0.1:7201 \\
      --node 2,org2,127.0.0.1:7102,127.0.0.1:7202 \\
      --node-cert 1=consortium/org1/node-1.crt --node-cert 2=consortium/org2/node-2.crt
EOF
}

err() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { err "$@"; exit 1; }
usage_error() {
	err "$@"
	printf "Try '%s --help'.\n" "$prog" >&2
	exit 2
}

# matches VALUE ERE: VALUE is a single line matching ERE entirely.
matches() {
	case $1 in *"$NL"*) return 1 ;; esac
	printf '%s\n' "$1" | grep -Eq -- "^($2)\$"
}

# in_list VALUE LIST: VALUE is one of the lines of LIST.
in_list() {
	printf '%s\n' "$2" | grep -Fxq -- "$1"
}

# Decimal integer in 1..9223372036854775807 (i64::MAX), no leading zero.
valid_node_id() {
	matches "$1" '[1-9][0-9]{0,18}' || return 1
	[ "${#1}" -lt 19 ] && return 0
	id_hi=${1%?????????}
	id_lo=${1#"$id_hi"}
	[ "$id_hi" -lt 9223372036 ] && return 0
	[ "$id_hi" -eq 9223372036 ] && [ "$id_lo" -le 854775807 ]
}

OCTET='25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]'
IPV4="($OCTET)(\\.($OCTET)){3}"
H16='[0-9A-Fa-f]{1,4}'
IPV6="($H16:){7}$H16|($H16:){1,7}:|($H16:){1,6}:$H16|($H16:){1,5}(:$H16){1,2}"
IPV6="$IPV6|($H16:){1,4}(:$H16){1,3}|($H16:){1,3}(:$H16){1,4}"
IPV6="$IPV6|($H16:){1,2}(:$H16){1,5}|$H16:(:$H16){1,6}|:((:$H16){1,7}|:)"
IPV6="$IPV6|($H16:){6}$IPV4|::(ffff(:0{1,4})?:)?$IPV4|($H16:){1,5}:$IPV4"
LABEL='[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
DNSNAME="$LABEL(\\.$LABEL)*"

# valid_addr HOST:PORT
valid_addr() {
	addr_port=${1##*:}
	addr_host=${1%:*}
	[ "$addr_host" != "$1" ] || return 1
	matches "$addr_port" '[1-9][0-9]{0,4}' || return 1
	[ "$addr_port" -le 65535 ] || return 1
	case $addr_host in
	\[*\])
		addr_host=${addr_host#?}
		matches "${addr_host%?}" "$IPV6"
		;;
	*)
		matches "$addr_host" "$IPV4" && return 0
		[ "${#addr_host}" -le 253 ] && matches "$addr_host" "$DNSNAME" &&
			! matches "${addr_host##*.}" '[0-9]+'
		;;
	esac
}

# ---- command line ---------------------------------------------------------

out=
name=
force=
orgs=
org_names=
nodes=
node_certs=
threshold=
seen=' '

while [ $# -gt 0 ]; do
	opt=$1
	shift
	case $opt in
	-h | --help)
		usage
		exit 0
		;;
	--force)
		force=1
		continue
		;;
	--out | --name | --org | --node | --node-cert | --threshold)
		[ $# -gt 0 ] || usage_error "missing value for $opt"
		case $1 in --*) usage_error "missing value for $opt" ;; esac
		val=$1
		shift
		;;
	--out=* | --name=* | --org=* | --node=* | --node-cert=* | --threshold=*)
		val=${opt#*=}
		opt=${opt%%=*}
		;;
	*) usage_error "unknown option or argument: $opt" ;;
	esac
	case $val in *"$NL"*) usage_error "the value of $opt must not contain a newline" ;; esac
	case $opt in
	--org)
		case $val in
		*=?*) ;;
		*) usage_error "invalid --org '$val': expected ORG=CA_CERT_PATH" ;;
		esac
		o=${val%%=*}
		matches "$o" '[a-z0-9][a-z0-9-]{0,31}' ||
			usage_error "invalid organization name '$o': must match [a-z0-9][a-z0-9-]{0,31}"
		[ "$o" != gov ] ||
			usage_error "the organization name 'gov' is reserved (corrections are posted as gov)"
		if in_list "$o" "$org_names"; then
			usage_error "organization '$o' given more than once"
		fi
		org_names=$org_names$o$NL
		orgs=$orgs$val$NL
		continue
		;;
	--node)
		nodes=$nodes$val$NL
		continue
		;;
	--node-cert)
		node_certs=$node_certs$val$NL
		continue
		;;
	esac
	case $seen in *" $opt "*) usage_error "$opt given more than once" ;; esac
	seen="$seen$opt "
	case $opt in
	--out) out=$val ;;
	--name) name=$val ;;
	--threshold) threshold=$val ;;
	esac
done

case $seen in *' --out '*) ;; *) usage_error "--out is required" ;; esac
case $seen in *' --name '*) ;; *) usage_error "--name is required" ;; esac
case $out in
'') usage_error "--out must not be empty" ;;
*/) usage_error "--out must name a file, not a directory: $out" ;;
esac
matches "$name" '[A-Za-z0-9][A-Za-z0-9._-]{0,63}' ||
	usage_error "invalid consortium name '$name': must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"
if [ -n "$threshold" ]; then
	valid_threshold=
	if [ "$threshold" = majority ]; then
		valid_threshold=1
	elif matches "$threshold" '[1-9][0-9]{0,3}/[1-9][0-9]{0,3}'; then
		t_num=${threshold%/*}
		t_den=${threshold#*/}
		if [ "$t_den" -le 1000 ] && [ "$t_num" -le "$t_den" ] && [ $((2 * t_num)) -gt "$t_den" ]; then
			valid_threshold=1
		fi
	fi
	[ -n "$valid_threshold" ] ||
		usage_error "invalid --threshold '$threshold': majority, or a fraction N/D above one half and at most 1 (D at most 1000), e.g. 2/3"
fi
[ -n "$orgs" ] || usage_error "at least one --org ORG=CA_CERT_PATH is required"
[ -n "$nodes" ] || usage_error "at least one --node ID,ORG,API_ADDR,RAFT_ADDR is required"

command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH"

node_ids=
node_orgs=
api_addrs=
raft_addrs=
while IFS= read -r spec; do
	[ -n "$spec" ] || continue
	case $spec in
	*,*,*,*,*) usage_error "invalid --node '$spec': expected ID,ORG,API_ADDR,RAFT_ADDR (too many fields)" ;;
	*,*,*,*) ;;
	*) usage_error "invalid --node '$spec': expected ID,ORG,API_ADDR,RAFT_ADDR" ;;
	esac
	n_id=${spec%%,*}
	rest=${spec#*,}
	n_org=${rest%%,*}
	rest=${rest#*,}
	n_api=${rest%%,*}
	n_raft=${rest#*,}
	valid_node_id "$n_id" ||
		usage_error "invalid node id '$n_id' in --node '$spec': must be a decimal integer in 1..9223372036854775807 without leading zeros"
	in_list "$n_id" "$node_ids" && usage_error "node id $n_id given more than once"
	in_list "$n_org" "$org_names" ||
		usage_error "node $n_id: organization '$n_org' is not listed with --org"
	valid_addr "$n_api" ||
		usage_error "node $n_id: invalid API address '$n_api': expected HOST:PORT with PORT in 1..65535"
	valid_addr "$n_raft" ||
		usage_error "node $n_id: invalid Raft address '$n_raft': expected HOST:PORT with PORT in 1..65535"
	in_list "$n_api" "$api_addrs" && usage_error "node $n_id: API address $n_api is used by another node"
	in_list "$n_raft" "$raft_addrs" && usage_error "node $n_id: Raft address $n_raft is used by another node"
	node_ids=$node_ids$n_id$NL
	node_orgs=$node_orgs$n_id=$n_org$NL
	api_addrs=$api_addrs$n_api$NL
	raft_addrs=$raft_addrs$n_raft$NL
done <<EOF
$nodes
EOF

# Each --node-cert: the SHA-256 of the node's public key, as "ID=HEX" lines.
node_keys=
keyed_ids=
while IFS= read -r entry; do
	[ -n "$entry" ] || continue
	case $entry in
	*=?*) ;;
	*) usage_error "invalid --node-cert '$entry': expected ID=CERT_PATH" ;;
	esac
	k_id=${entry%%=*}
	path=${entry#*=}
	in_list "$k_id" "$node_ids" ||
		usage_error "invalid --node-cert '$entry': node $k_id is not given with --node"
	in_list "$k_id" "$keyed_ids" && usage_error "--node-cert for node $k_id given more than once"
	k_org=$(printf '%s\n' "$node_orgs" | sed -n "s/^$k_id=//p")
	[ -f "$path" ] && [ -r "$path" ] ||
		usage_error "node $k_id: certificate $path does not exist or is not a readable file"
	subject=$(openssl x509 -in "$path" -noout -subject -nameopt RFC2253 2>/dev/null) ||
		usage_error "node $k_id: $path is not a PEM X.509 certificate"
	[ "$subject" = "subject=CN=$k_id,OU=node,O=$k_org" ] ||
		usage_error "node $k_id: $path is not node $k_id's certificate (its ${subject:-subject is empty}; expected O=$k_org, OU=node, CN=$k_id: scripts/issue-cert.sh --org $k_org --role node --name $k_id)"
	k_ca=$(printf '%s\n' "$orgs" | sed -n "s/^$k_org=//p")
	openssl verify -no_check_time -CAfile "$k_ca" "$path" >/dev/null 2>&1 ||
		usage_error "node $k_id: $path was not issued by $k_org's CA $k_ca"
	key=$(openssl x509 -in "$path" -noout -pubkey | openssl pkey -pubin -outform DER |
		openssl dgst -sha256 -r) || die "node $k_id: cannot read the public key of $path"
	key=${key%% *}
	matches "$key" '[0-9a-f]{64}' || die "node $k_id: cannot hash the public key of $path"
	keyed_ids=$keyed_ids$k_id$NL
	node_keys=$node_keys$k_id=$key$NL
done <<EOF
$node_certs
EOF

orgs_toml=
while IFS= read -r entry; do
	[ -n "$entry" ] || continue
	o=${entry%%=*}
	path=${entry#*=}
	[ -f "$path" ] || usage_error "organization '$o': CA certificate $path does not exist or is not a file"
	[ -r "$path" ] || usage_error "organization '$o': CA certificate $path is not readable"
	count=$(grep -c -- '-----BEGIN CERTIFICATE-----' "$path" || :)
	if [ "${count:-0}" -gt 1 ]; then
		usage_error "organization '$o': $path holds $count certificates; give only the organization's CA certificate"
	fi
	pem=$(openssl x509 -in "$path" -outform PEM 2>/dev/null) ||
		usage_error "organization '$o': $path is not a PEM X.509 certificate"
	bc=$(openssl x509 -in "$path" -noout -ext basicConstraints 2>/dev/null || :)
	case $bc in
	*CA:TRUE*) ;;
	*) usage_error "organization '$o': $path is not a CA certificate (basicConstraints CA:TRUE is missing)" ;;
	esac
	if ! openssl x509 -in "$path" -noout -checkend 0 >/dev/null 2>&1; then
		err "warning: organization '$o': the CA certificate $path has expired"
	fi
	orgs_toml=$orgs_toml$NL'[[orgs]]'$NL'name = "'$o'"'$NL'ca_cert = """'$NL$pem$NL'"""'$NL
done <<EOF
$orgs
EOF

# ---- work -------------------------------------------------------------------

if [ -d "$out" ]; then
	die "$out is a directory"
fi
if [ -z "$force" ] && { [ -e "$out" ] || [ -L "$out" ]; }; then
	die "$out exists; refusing to overwrite it (use --force to replace it)"
fi
case $out in
*/*)
	outdir=${out%/*}
	[ -n "$outdir" ] || outdir=/
	;;
*) outdir=. ;;
esac
[ -d "$outdir" ] || die "directory $outdir does not exist"

tmp=
cleanup() {
	status=$?
	if [ -n "$tmp" ]; then rm -f -- "$tmp"; fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

tmp=$(mktemp "$outdir/.genesis.XXXXXX") || die "cannot create a temporary file in $outdir"

{
	printf '# alliance genesis: the founding organizations and nodes of consortium "%s"\n' "$name"
	printf 'consortium = "%s"\n' "$name"
	if [ -n "$threshold" ]; then
		printf 'threshold = "%s"\n' "$threshold"
	fi
} >"$tmp"

printf '%s' "$orgs_toml" >>"$tmp"

while IFS= read -r spec; do
	[ -n "$spec" ] || continue
	n_id=${spec%%,*}
	rest=${spec#*,}
	n_org=${rest%%,*}
	rest=${rest#*,}
	n_api=${rest%%,*}
	n_raft=${rest#*,}
	printf '\n[[nodes]]\nid = %s\norg = "%s"\napi_addr = "%s"\nraft_addr = "%s"\n' \
		"$n_id" "$n_org" "$n_api" "$n_raft" >>"$tmp"
	n_key=$(printf '%s\n' "$node_keys" | sed -n "s/^$n_id=//p")
	if [ -n "$n_key" ]; then
		printf 'key_sha256 = "%s"\n' "$n_key" >>"$tmp"
	fi
done <<EOF
$nodes
EOF

chmod 644 "$tmp"
if [ -n "$force" ]; then
	mv -f -- "$tmp" "$out" || die "cannot write $out"
elif ln -- "$tmp" "$out" 2>/dev/null; then
	rm -f -- "$tmp"
elif [ -e "$out" ] || [ -L "$out" ]; then
	die "$out exists; refusing to overwrite it (use --force to replace it)"
else
	mv -- "$tmp" "$out" || die "cannot write $out"
fi
tmp=

printf '%s\n' "$out"
