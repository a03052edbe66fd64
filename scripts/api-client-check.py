"""A client generated from the OpenAPI description, used against a node.

scripts/api-contract.sh generates a Python client with openapi-python-client
from GET /v1/openapi.json into DIR, then runs this with DIR on the path and
the demo's directory and node 1's URL as arguments. As org1's app it reads
the cluster, makes a transfer, reads it back and reads its account, each
through the generated models; any answer the models cannot parse, or any
value that is not what was sent, fails it.
"""

import ssl
import sys
import time

from alliance_client import Client
from alliance_client.api.accounts import get_v1_accounts_id
from alliance_client.api.cluster import get_v1_cluster
from alliance_client.api.transfers import get_v1_transfers_id, post_v1_transfers
from alliance_client.models import AccountView, ClusterView, TransferBody, TransferRead

demo, url = sys.argv[1], sys.argv[2]
tls = ssl.create_default_context(cafile=f"{demo}/pki/org1/ca.crt")
tls.load_cert_chain(f"{demo}/pki/org1/app-app.crt", f"{demo}/pki/org1/app-app.key")
client = Client(base_url=url, verify_ssl=tls, raise_on_unexpected_status=True)

cluster = get_v1_cluster.sync(client=client)
assert isinstance(cluster, ClusterView), cluster
assert cluster.consortium == "demo" and len(cluster.voters) == 3, cluster

tid = f"org1.generated-{time.time_ns()}"
body = TransferBody(id=tid, debit_account="org1.ops", credit_account="org2.ops", amount="42")
sent = post_v1_transfers.sync_detailed(client=client, body=body)
assert sent.status_code == 200 and isinstance(sent.parsed, TransferRead), sent

read = get_v1_transfers_id.sync(client=client, id=tid)
assert isinstance(read, TransferRead), read
assert (read.amount, read.state, read.debit_account) == ("42", "posted", "org1.ops"), read

account = get_v1_accounts_id.sync(client=client, id="org1.ops")
assert isinstance(account, AccountView) and account.owner == "org1", account
print(f"a generated client read the cluster, made {tid} and read it back at height {read.height}")
