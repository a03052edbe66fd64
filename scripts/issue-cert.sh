#!/bin/sh
# issue-cert.sh: issue a leaf certificate for one role of an alliance organization.
# Self-contained POSIX sh (dash-compatible); needs only the openssl CLI.
set -eu

LC_ALL=C
export LC_ALL
umask 077

prog=issue-cert.sh
NL='
'

usage() {
	cat <<EOF
Usage: $prog --org ORG --role ROLE --name NAME [--dir DIR] [--host H]... [--days N]

Issues a leaf certificate signed by the CA of organization ORG (created by
new-org.sh in DIR/ORG/ca.key and DIR/ORG/ca.crt):
  DIR/ORG/ROLE-NAME.key   leaf private key (ECDSA P-256, PKCS#8 PEM, mode 0600)
  DIR/ORG/ROLE-NAME.crt   leaf certificate (PEM, the leaf only, no chain),
                          subject /O=ORG/OU=ROLE/CN=NAME

Options:
  --dir DIR     consortium directory (default: ./consortium)
  --org ORG     organization name, [a-z0-9][a-z0-9-]{0,31}
  --role ROLE   node | app | partner | admin
                node:  extendedKeyUsage serverAuth,clientAuth, subjectAltName
                       from --host; NAME is the node id, a decimal integer in
                       1..9223372036854775807 without leading zeros
                other: extendedKeyUsage clientAuth, no subjectAltName
  --name NAME   [a-z0-9][a-z0-9._-]{0,63} (the node id for role node)
  --host H      node only, repeatable: a subjectAltName entry (IP for IPv4 or
                IPv6 literals, DNS otherwise); default: 127.0.0.1 and localhost
  --days N      validity in days, 1..36500 (default: 825)
  -h, --help    show this help and exit

Safe to re-run: an existing key is never overwritten. If the key and the
certificate both exist, prints "exists: PATH" to stderr and exits 0; if only
the key exists, issues a certificate for that existing key.

On success prints the written paths to stdout, one per line.
Exit status: 0 success, 1 failure, 2 invalid command line.

Examples:
  $prog --dir ./consortium --org org1 --role node --name 1 \\
      --host 10.0.0.5 --host node1.org1.example
  $prog --dir ./consortium --org org1 --role app --name app1
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

# The certificate profile; identical to certs/profile.cnf.
write_profile() {
	cat <<'PROFILE_EOF'
# alliance certificate profile (OpenSSL config).
#
# This exact text is embedded verbatim in scripts/new-org.sh and
# scripts/issue-cert.sh (they must work without this file); keep the three
# copies identical. See certs/README.md for the profile as a table.
#
# Sections:
#   alliance_ca      organization CA (self-signed, signs leafs directly)
#   alliance_node    leaf for role "node"  (TLS server and client)
#   alliance_client  leaf for roles "app", "partner", "admin" (TLS client)
#
# The node subjectAltName comes from the environment variable ALLIANCE_SAN,
# e.g. ALLIANCE_SAN='IP:10.0.0.5,DNS:node1.example.com'. When it is not set,
# OpenSSL falls back to the default below (127.0.0.1 and localhost).

ALLIANCE_SAN = IP:127.0.0.1,DNS:localhost

[ req ]
distinguished_name = alliance_dn
prompt             = no
string_mask        = utf8only
utf8               = yes

# Empty on purpose: subjects are always given with -subj.
[ alliance_dn ]

[ alliance_ca ]
basicConstraints       = critical,CA:TRUE,pathlen:0
keyUsage               = critical,keyCertSign,cRLSign
subjectKeyIdentifier   = hash

[ alliance_node ]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature
extendedKeyUsage       = serverAuth,clientAuth
subjectAltName         = $ENV::ALLIANCE_SAN
authorityKeyIdentifier = keyid
subjectKeyIdentifier   = hash

[ alliance_client ]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature
extendedKeyUsage       = clientAuth
authorityKeyIdentifier = keyid
subjectKeyIdentifier   = hash
PROFILE_EOF
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

# host_entry H: print the subjectAltName entry for host H, or fail.
host_entry() {
	if matches "$1" "$IPV4"; then
		printf 'IP:%s\n' "$1"
	elif matches "$1" "$IPV6"; then
		printf 'IP:%s\n' "$1"
	elif [ "${#1}" -le 253 ] && matches "$1" "$DNSNAME" &&
		! matches "${1##*.}" '[0-9]+'; then
		printf 'DNS:%s\n' "$1"
	else
		return 1
	fi
}

# Random positive 128-bit serial; first hex digit forced into 1..7.
new_serial() {
	hex=$(openssl rand -hex 16) || return 1
	matches "$hex" '[0-9a-f]{32}' || return 1
	rest=${hex#?}
	first=${hex%"$rest"}
	printf '0x%s%s\n' "$(( 0x$first % 7 + 1 ))" "$rest"
}

# run_openssl WHAT ARGS...: run openssl quietly, show its output on failure.
run_openssl() {
	what=$1
	shift
	if ! openssl "$@" >"$tmp/openssl.log" 2>&1; then
		cat "$tmp/openssl.log" >&2
		die "openssl failed while $what"
	fi
}

# install_new SRC DST: move SRC to DST, never replacing an existing DST.
install_new() {
	if ln -- "$1" "$2" 2>/dev/null; then
		rm -f -- "$1"
	elif [ -e "$2" ] || [ -L "$2" ]; then
		die "refusing to overwrite $2"
	else
		mv -- "$1" "$2"
	fi
}

# ---- command line ---------------------------------------------------------

dir=./consortium
org=
role=
name=
days=825
san=
seen=' '

while [ $# -gt 0 ]; do
	opt=$1
	shift
	case $opt in
	-h | --help)
		usage
		exit 0
		;;
	--dir | --org | --role | --name | --host | --days)
		[ $# -gt 0 ] || usage_error "missing value for $opt"
		case $1 in --*) usage_error "missing value for $opt" ;; esac
		val=$1
		shift
		;;
	--dir=* | --org=* | --role=* | --name=* | --host=* | --days=*)
		val=${opt#*=}
		opt=${opt%%=*}
		;;
	*) usage_error "unknown option or argument: $opt" ;;
	esac
	if [ "$opt" = --host ]; then
		entry=$(host_entry "$val") ||
			usage_error "invalid --host '$val': not an IPv4/IPv6 address or DNS name"
		case ,$san, in
		*",$entry,"*) ;;
		*) san=${san:+$san,}$entry ;;
		esac
		continue
	fi
	case $seen in *" $opt "*) usage_error "$opt given more than once" ;; esac
	seen="$seen$opt "
	case $opt in
	--dir) dir=$val ;;
	--org) org=$val ;;
	--role) role=$val ;;
	--name) name=$val ;;
	--days) days=$val ;;
	esac
done

for required in --org --role --name; do
	case $seen in *" $required "*) ;; *) usage_error "$required is required" ;; esac
done
matches "$org" '[a-z0-9][a-z0-9-]{0,31}' ||
	usage_error "invalid organization name '$org': must match [a-z0-9][a-z0-9-]{0,31}"
case $role in
node) section=alliance_node ;;
app | partner | admin) section=alliance_client ;;
*) usage_error "invalid role '$role': must be one of node, app, partner, admin" ;;
esac
matches "$name" '[a-z0-9][a-z0-9._-]{0,63}' ||
	usage_error "invalid name '$name': must match [a-z0-9][a-z0-9._-]{0,63}"
if [ "$role" = node ]; then
	valid_node_id "$name" ||
		usage_error "invalid node id '$name': must be a decimal integer in 1..9223372036854775807 without leading zeros"
	[ -n "$san" ] || san=IP:127.0.0.1,DNS:localhost
elif [ -n "$san" ]; then
	usage_error "--host is only allowed with --role node"
fi
if ! matches "$days" '[1-9][0-9]{0,4}' || [ "$days" -gt 36500 ]; then
	usage_error "invalid --days '$days': must be an integer in 1..36500"
fi
case $dir in
'') usage_error "--dir must not be empty" ;;
*"$NL"*) usage_error "--dir must not contain a newline" ;;
esac
while [ "${dir%/}" != "$dir" ]; do dir=${dir%/}; done
if [ -z "$dir" ]; then
	dir=/
	orgdir=/$org
else
	orgdir=$dir/$org
fi

# ---- work -------------------------------------------------------------------

cakey=$orgdir/ca.key
cacrt=$orgdir/ca.crt
key=$orgdir/$role-$name.key
crt=$orgdir/$role-$name.crt

if [ -e "$key" ] || [ -L "$key" ]; then
	if [ -e "$crt" ]; then
		printf 'exists: %s\n' "$crt" >&2
		exit 0
	fi
	reuse_key=1
else
	reuse_key=
	if [ -e "$crt" ] || [ -L "$crt" ]; then
		die "$crt exists but $key does not; refusing to overwrite it (move $crt away first)"
	fi
fi

if [ ! -f "$cacrt" ] || [ ! -f "$cakey" ]; then
	die "organization '$org' has no CA: $cacrt and $cakey are required (create them with: new-org.sh --dir $dir --org $org)"
fi
command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH"

tmp=
installed_key=
cleanup() {
	status=$?
	if [ -n "$tmp" ]; then rm -rf -- "$tmp"; fi
	if [ "$status" -ne 0 ] && [ -n "$installed_key" ]; then rm -f -- "$key"; fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

tmp=$(mktemp -d "$orgdir/.issue-cert.XXXXXX") || die "cannot create a temporary directory in $orgdir"
write_profile >"$tmp/profile.cnf"
ALLIANCE_SAN=$san
export ALLIANCE_SAN

openssl x509 -in "$cacrt" -noout 2>/dev/null || die "$cacrt is not a readable PEM certificate"
openssl x509 -in "$cacrt" -noout -checkend 0 >/dev/null 2>&1 || die "the CA certificate $cacrt has expired"
if ! openssl x509 -in "$cacrt" -noout -checkend "$((days * 86400))" >/dev/null 2>&1; then
	err "warning: the CA certificate $cacrt expires before this certificate would"
fi

if [ -n "$reuse_key" ]; then
	if ! openssl pkey -in "$key" -noout -text_pub 2>/dev/null | grep -q 'ASN1 OID: prime256v1'; then
		die "existing key $key is not a readable ECDSA P-256 private key"
	fi
	leafkey=$key
else
	leafkey=$tmp/leaf.key
	run_openssl "generating the key" \
		genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$leafkey"
fi

serial=$(new_serial) || die "cannot generate a random serial number"
run_openssl "creating the certificate request" \
	req -new -config "$tmp/profile.cnf" -key "$leafkey" \
	-subj "/O=$org/OU=$role/CN=$name" -out "$tmp/leaf.csr"
run_openssl "signing the certificate" \
	x509 -req -in "$tmp/leaf.csr" -CA "$cacrt" -CAkey "$cakey" \
	-set_serial "$serial" -days "$days" -sha256 \
	-extfile "$tmp/profile.cnf" -extensions "$section" -out "$tmp/leaf.crt"
run_openssl "verifying the new certificate against $cacrt" \
	verify -CAfile "$cacrt" "$tmp/leaf.crt"

chmod 644 "$tmp/leaf.crt"
if [ -z "$reuse_key" ]; then
	chmod 600 "$leafkey"
	install_new "$leafkey" "$key"
	installed_key=1
fi
install_new "$tmp/leaf.crt" "$crt"
installed_key=

if [ -z "$reuse_key" ]; then printf '%s\n' "$key"; fi
printf '%s\n' "$crt"
