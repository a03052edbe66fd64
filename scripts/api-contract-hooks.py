"""schemathesis hooks for scripts/api-contract.sh: the README's role table.

A success (2xx) the role table forbids fails the run. The caller's role and
organization, and the organization of the node it calls, come from
ALLIANCE_ROLE, ALLIANCE_ORG and ALLIANCE_NODE_ORG. schemathesis does not sign
requests, so every governance write, and every write of another
organization's caller, must be refused.
"""

import os

import schemathesis

ROLE = os.environ["ALLIANCE_ROLE"]
ORG = os.environ["ALLIANCE_ORG"]
FOREIGN = ORG != os.environ["ALLIANCE_NODE_ORG"]

# Writes only an admin of the account's owner may make.
ADMIN_WRITES = {
    ("PUT", "/v1/accounts/{id}/readers"),
    ("POST", "/v1/accounts/{id}/close"),
}


def forbidden(method, path):
    """Why the role table forbids this caller a success here, or None."""
    if path == "/v1/backup":
        if ROLE != "admin" or FOREIGN:
            return "a backup is for an admin of the node's own organization"
        return None
    if method not in ("POST", "PUT"):
        return None
    if ROLE not in ("app", "admin"):
        return f"a {ROLE} may not write"
    if path.startswith("/v1/gov/"):
        return "a governance write needs the admin's own signature"
    if FOREIGN:
        return "another organization's caller must sign its writes"
    if (method, path) in ADMIN_WRITES and ROLE != "admin":
        return "only an admin of the owner may do this"
    return None


@schemathesis.check
def role_table(ctx, response, case):
    """No success where the README's role table says forbidden."""
    if not 200 <= response.status_code < 300:
        return
    method = case.method.upper()
    why = forbidden(method, case.operation.path)
    if why:
        raise AssertionError(
            f"{ORG}'s {ROLE} got {response.status_code} for {method} "
            f"{case.operation.path}: {why}"
        )
