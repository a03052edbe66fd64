#!/bin/sh
# new-org.sh: create the certificate authority of one alliance organization.
# Self-contained POSIX sh (dash-compatible); needs only the openssl CLI.
set -eu

LC_ALL=C
export LC_ALL
umask 077

prog=new-org.sh
NL='
'

usage() {
	cat <<EOF
Usage: $prog --org ORG [--dir DIR] [--days N]

Creates the certificate authority (CA) of organization ORG:
  DIR/ORG/ca.key   CA private key (ECDSA P-256, PKCS#8 PEM, mode 0600)
  DIR/ORG/ca.crt   self-signed CA certificate (PEM): subject /O=ORG/CN=ORG CA,
                   basicConstraints critical CA:TRUE pathlen:0,
                   keyUsage critical keyCertSign,cRLSign

Options:
  --dir DIR    consortium directory (default: ./consortium)
  --org ORG    organization name, [a-z0-9][a-z0-9-]{0,31}
  --days N     validity in days, 1..36500 (default: 3650)
  -h, --help   show this help and exit

Safe to re-run: an existing ca.key is never overwritten. If DIR/ORG/ca.key
and DIR/ORG/ca.crt both exist, prints "exists: DIR/ORG/ca.crt" to stderr and
exits 0. If only one of them exists, fails.

On success prints the written paths to stdout, one per line.
Exit status: 0 success, 1 failure, 2 invalid command line.

Example:
  $prog --dir ./consortium --org org1
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
days=3650
seen=' '

while [ $# -gt 0 ]; do
	opt=$1
	shift
	case $opt in
	-h | --help)
		usage
		exit 0
		;;
	--dir | --org | --days)
		[ $# -gt 0 ] || usage_error "missing value for $opt"
		case $1 in --*) usage_error "missing value for $opt" ;; esac
		val=$1
		shift
		;;
	--dir=* | --org=* | --days=*)
		val=${opt#*=}
		opt=${opt%%=*}
		;;
	*) usage_error "unknown option or argument: $opt" ;;
	esac
	case $seen in *" $opt "*) usage_error "$opt given more than once" ;; esac
	seen="$seen$opt "
	case $opt in
	--dir) dir=$val ;;
	--org) org=$val ;;
	--days) days=$val ;;
	esac
done

case $seen in *' --org '*) ;; *) usage_error "--org is required" ;; esac
matches "$org" '[a-z0-9][a-z0-9-]{0,31}' ||
	usage_error "invalid organization name '$org': must match [a-z0-9][a-z0-9-]{0,31}"
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

key=$orgdir/ca.key
crt=$orgdir/ca.crt

if [ -e "$key" ] || [ -L "$key" ]; then
	if [ -e "$crt" ]; then
		printf 'exists: %s\n' "$crt" >&2
		exit 0
	fi
	die "$key exists but $crt does not; refusing to overwrite the key (restore $crt or move $key away)"
fi
if [ -e "$crt" ] || [ -L "$crt" ]; then
	die "$crt exists but $key does not; refusing to overwrite it (move $crt away first)"
fi

command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH"

tmp=
created_dir=
created_orgdir=
installed_key=
cleanup() {
	status=$?
	if [ -n "$tmp" ]; then rm -rf -- "$tmp"; fi
	if [ "$status" -ne 0 ]; then
		if [ -n "$installed_key" ]; then rm -f -- "$key"; fi
		if [ -n "$created_orgdir" ]; then rmdir -- "$orgdir" 2>/dev/null || :; fi
		if [ -n "$created_dir" ]; then rmdir -- "$dir" 2>/dev/null || :; fi
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

if [ ! -d "$dir" ]; then
	mkdir -p -- "$dir" || die "cannot create directory $dir"
	created_dir=1
fi
if [ ! -d "$orgdir" ]; then
	mkdir -- "$orgdir" || die "cannot create directory $orgdir"
	created_orgdir=1
fi
tmp=$(mktemp -d "$orgdir/.new-org.XXXXXX") || die "cannot create a temporary directory in $orgdir"

write_profile >"$tmp/profile.cnf"
unset ALLIANCE_SAN || :
serial=$(new_serial) || die "cannot generate a random serial number"

run_openssl "generating the CA key" \
	genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca.key"
run_openssl "creating the CA certificate" \
	req -new -x509 -config "$tmp/profile.cnf" -extensions alliance_ca \
	-key "$tmp/ca.key" -subj "/O=$org/CN=$org CA" \
	-set_serial "$serial" -days "$days" -sha256 -out "$tmp/ca.crt"

chmod 600 "$tmp/ca.key"
chmod 644 "$tmp/ca.crt"
install_new "$tmp/ca.key" "$key"
installed_key=1
install_new "$tmp/ca.crt" "$crt"
installed_key=

printf '%s\n' "$key" "$crt"
