//! Executing a request where it must run: on the leader.
//!
//! Any node serves any request. Writes and linearizable reads run on the
//! leader; a follower forwards them over the peer channel with the caller's
//! verified identity and relays the leader's [`Reply`]. Every write is
//! idempotent by its id (transfer id, account id), so a request whose first
//! attempt may or may not have been proposed can be retried safely until the
//! deadline; if no attempt was confirmed by then, the caller gets 504
//! `outcome_unknown` (if anything may have been proposed) or 503 `no_quorum`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::error::{ApiError, ErrorView, Reply};
use super::types::{
    account_view, check_limits, history_view, transfer_view, Answer, BatchItemView, RefusedView,
    TransferView,
};
use super::{group, public};
use crate::config::{Genesis, Limits, NodeId};
use crate::identity::{ForwardedPrincipal, Principal};
use crate::ledger::chain::{self, BlockHeader, Proof};
use crate::ledger::{
    Account, AccountId, Actor, Command, Entry, HistoryItem, NewTransfer, Outcome, Rejection, Role,
    Transfer, TransferId,
};
use crate::raft::log_store::CommitIndex;
use crate::raft::network::Peers;
use crate::raft::state_machine::{SharedState, StateRead};
use crate::raft::Raft;

/// Path of request forwarding on the peer listener.
pub const EXECUTE_PATH: &str = "/peer/v1/execute";

/// First and longest pause between attempts while a leader is sought.
const RETRY_BACKOFF_MIN_MS: u64 = 10;
const RETRY_BACKOFF_MAX_MS: u64 = 200;

/// What a request asks; the unit that is forwarded to the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    Write(Command, Answer),
    Read(Read),
}

/// A read, served from the applied state (on the leader after a
/// linearizable barrier, or locally).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Read {
    Account {
        id: AccountId,
        at_height: Option<u64>,
    },
    Transfer(TransferId),
    History {
        id: AccountId,
        from: u64,
        limit: usize,
    },
    Accounts {
        after: Option<AccountId>,
        limit: usize,
    },
    Block(u64),
    Blocks {
        from: u64,
        limit: usize,
    },
    Proof(TransferId),
}

impl Op {
    fn is_write(&self) -> bool {
        matches!(self, Self::Write(..))
    }
}

/// A forwarded request, as the peer channel carries it.
#[derive(Serialize, Deserialize)]
pub struct Forwarded {
    pub principal: ForwardedPrincipal,
    pub op: Op,
}

pub struct Service {
    pub id: NodeId,
    pub raft: Raft,
    pub state: SharedState,
    pub genesis: Arc<Genesis>,
    pub limits: Limits,
    /// Client for the peer channel (pooled, mutual TLS).
    pub peers: Peers,
    pub commit_index: CommitIndex,
    /// The public window's per-client budget, when the window is open.
    pub public_limiter: Option<public::RateLimiter>,
    /// Coalesces single-transfer writes on the leader (see [`group`]).
    group: group::GroupCommit,
    /// What this node knows of its peers' chains (see [`super::watch`]).
    pub watch: Arc<std::sync::Mutex<super::watch::Watch>>,
    in_flight: Semaphore,
}

/// Why one attempt did not produce a reply.
enum Attempt {
    /// Not sent, or refused before proposing: try again.
    Retry,
    /// May have been proposed: retry (writes are idempotent), but if the
    /// deadline passes the outcome is unknown.
    RetryMaybeProposed,
}

impl Service {
    pub fn new(
        id: NodeId,
        raft: Raft,
        state: SharedState,
        genesis: Arc<Genesis>,
        limits: Limits,
        peers: Peers,
        commit_index: CommitIndex,
    ) -> Self {
        let in_flight = Semaphore::new(limits.in_flight_proposals_max);
        let org = genesis
            .node(id)
            .map(|n| n.org.clone())
            .expect("this node is in genesis");
        let group = group::GroupCommit::start(
            raft.clone(),
            Actor {
                org,
                role: Role::Node,
            },
            limits.group_commit_max,
            limits.group_commit_in_flight,
            limits.in_flight_proposals_max,
        );
        Self {
            id,
            raft,
            state,
            genesis,
            limits,
            peers,
            commit_index,
            public_limiter: None,
            group,
            watch: Default::default(),
            in_flight,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.limits.request_timeout_ms)
    }

    /// Runs `op` for `principal` on the leader, wherever that is.
    pub async fn execute(&self, principal: &Principal, op: &Op) -> Reply {
        let deadline = Instant::now() + self.timeout();
        let mut maybe_proposed = false;
        let mut backoff = Duration::from_millis(RETRY_BACKOFF_MIN_MS);
        let metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            let attempt = match leader {
                Some(l) if l == self.id => self.execute_local(principal, op, deadline).await,
                Some(l) => self.forward(l, principal, op, deadline).await,
                None => Err(Attempt::Retry),
            };
            match attempt {
                // After an attempt that may have been proposed, an answer
                // that only says "not done this time" (overloaded, a body
                // timeout, no quorum relayed by the leader's listener) does
                // not settle that attempt's fate: try again, and say 504 at
                // the deadline, never something that reads as "nothing done".
                Ok(reply) if maybe_proposed && matches!(reply.status, 408 | 429 | 503) => {}
                Ok(reply) => return reply,
                Err(Attempt::RetryMaybeProposed) => maybe_proposed |= op.is_write(),
                Err(Attempt::Retry) => {}
            }
            let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                let e = if maybe_proposed {
                    ApiError::OutcomeUnknown
                } else {
                    ApiError::NoQuorum
                };
                return e.reply();
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_millis(RETRY_BACKOFF_MAX_MS));
        }
    }

    /// Runs `op` here if this node is the leader; a follower says so.
    pub async fn execute_forwarded(&self, principal: &Principal, op: &Op) -> Reply {
        if let Op::Write(command, _) = op {
            if let Err(e) = check_limits(command, &self.limits) {
                return e.reply();
            }
        }
        let deadline = Instant::now() + self.timeout();
        match self.execute_local(principal, op, deadline).await {
            Ok(reply) => reply,
            Err(Attempt::Retry) => ApiError::NotLeader.reply(),
            Err(Attempt::RetryMaybeProposed) if op.is_write() => ApiError::OutcomeUnknown.reply(),
            Err(Attempt::RetryMaybeProposed) => ApiError::NotLeader.reply(),
        }
    }

    async fn execute_local(
        &self,
        principal: &Principal,
        op: &Op,
        deadline: Instant,
    ) -> Result<Reply, Attempt> {
        match op {
            Op::Write(command, answer) => self.write(principal, command, *answer, deadline).await,
            Op::Read(read) => {
                self.linearize(deadline).await?;
                Ok(self.read(principal, read))
            }
        }
    }

    async fn write(
        &self,
        principal: &Principal,
        command: &Command,
        answer: Answer,
        deadline: Instant,
    ) -> Result<Reply, Attempt> {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Ok(ApiError::Overloaded.reply());
        };
        if let Command::Transfers {
            transfers,
            atomic: false,
        } = command
        {
            if let [one] = transfers.as_slice() {
                return self
                    .write_grouped(principal, command, answer, one, deadline)
                    .await;
            }
        }
        // The leader fixes the time before proposing: apply stays pure.
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let entry = Entry {
            actor: principal.actor(),
            timestamp_ms,
            command: command.clone(),
        };
        match tokio::time::timeout_at(deadline, self.raft.client_write(entry.into())).await {
            Err(_elapsed) => Err(Attempt::RetryMaybeProposed),
            Ok(Ok(resp)) => Ok(render_outcome(
                resp.data,
                principal,
                command,
                answer,
                resp.log_id.index,
            )),
            // Usually "not leader, nothing appended"; but openraft also says
            // so after appending and then losing leadership, when the entry
            // may still commit. Retrying is safe; "nothing written" is not.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(Attempt::RetryMaybeProposed)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "client_write failed");
                Err(Attempt::RetryMaybeProposed)
            }
        }
    }

    /// One transfer through group commit (the batcher stamps the time).
    async fn write_grouped(
        &self,
        principal: &Principal,
        command: &Command,
        answer: Answer,
        transfer: &NewTransfer,
        deadline: Instant,
    ) -> Result<Reply, Attempt> {
        let queued = self.group.write(principal.actor(), transfer.clone());
        match tokio::time::timeout_at(deadline, queued).await {
            Err(_elapsed) => Err(Attempt::RetryMaybeProposed),
            Ok(Ok((result, index))) => Ok(render_outcome(
                Some(Outcome::Transfers(vec![result])),
                principal,
                command,
                answer,
                index,
            )),
            Ok(Err(group::GroupError::NotLeader)) => Err(Attempt::Retry),
            Ok(Err(group::GroupError::MaybeProposed)) => Err(Attempt::RetryMaybeProposed),
        }
    }

    /// Waits until this node, as leader, has applied everything committed
    /// before the call (a read index confirmed by a quorum).
    async fn linearize(&self, deadline: Instant) -> Result<(), Attempt> {
        match tokio::time::timeout_at(deadline, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(Attempt::Retry)
            }
            Ok(Err(_)) | Err(_) => Err(Attempt::Retry),
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        principal: &Principal,
        op: &Op,
        deadline: Instant,
    ) -> Result<Reply, Attempt> {
        let Some(peer) = self.peers.get(leader) else {
            return Err(Attempt::Retry);
        };
        let body = Forwarded {
            principal: principal.forward(),
            op: op.clone(),
        };
        let sent = peer
            .http
            .post(peer.url(EXECUTE_PATH))
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .json(&body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Err(Attempt::Retry),
            Err(_) => return Err(Attempt::RetryMaybeProposed),
        };
        if self.peers.check_response(leader, &resp).is_err() {
            return Err(Attempt::RetryMaybeProposed);
        }
        if !resp.status().is_success() {
            // The leader's peer listener refused the forward itself (e.g. a
            // body past its limit): relay its error as it is.
            let status = resp.status().as_u16();
            let body = resp.json().await.unwrap_or(serde_json::Value::Null);
            return Ok(Reply::with(status, &body));
        }
        let reply: Reply = resp.json().await.map_err(|_| Attempt::RetryMaybeProposed)?;
        if reply.is_error(&ApiError::NotLeader) {
            Err(Attempt::Retry)
        } else if reply.is_error(&ApiError::OutcomeUnknown) {
            Err(Attempt::RetryMaybeProposed)
        } else {
            Ok(reply)
        }
    }

    /// Block `h`: stored, or derived from genesis for 0, or None past the head.
    fn block(&self, state: &StateRead<'_>, h: u64) -> sled::Result<Option<BlockHeader>> {
        if h == 0 {
            Ok(Some(BlockHeader::genesis(self.genesis.hash_bytes())))
        } else {
            state.block(h)
        }
    }

    /// Serves `read` from this node's applied state. Called on the leader
    /// after [`Self::linearize`], or directly for `consistency=local`.
    pub fn read(&self, principal: &Principal, read: &Read) -> Reply {
        if let Some(why) = self
            .watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .diverged()
        {
            return ApiError::Diverged(why.to_owned()).reply();
        }
        let state = self.state.read();
        let as_of = state.last_applied.map_or(0, |l| l.index);
        let ledger = &state.ledger;
        let actor = principal.actor();
        let visible = |id: &AccountId| ledger.account(id).filter(|a| a.readable_by(&actor));
        let not_found = || ApiError::NotFound("account_not_found").reply();
        let storage = |e: sled::Error| {
            ApiError::Unavailable(format!("reading the stored state: {e}")).reply()
        };
        match read {
            Read::Account {
                id,
                at_height: None,
            } => match visible(id) {
                Some(a) => Reply::ok(account_view(a, principal.org(), as_of)),
                None => not_found(),
            },
            Read::Account {
                id,
                at_height: Some(h),
            } => {
                let Some(a) = visible(id) else {
                    return not_found();
                };
                if *h > ledger.height() {
                    let msg = format!("at_height {h} is above the chain head {}", ledger.height());
                    return ApiError::InvalidQuery(msg).reply();
                }
                if *h < a.created_height {
                    return not_found();
                }
                match state.history_at_height(id, *h) {
                    Ok(item) => Reply::ok(balance_at_view(a, *h, item.as_ref(), as_of)),
                    Err(e) => storage(e),
                }
            }
            Read::Transfer(id) => match state.transfer(id) {
                Ok(Some(t)) if ledger.transfer_readable_by(&t, &actor) => {
                    let mut view = transfer_view(&t);
                    view["as_of"] = as_of.into();
                    Reply::ok(view)
                }
                Ok(_) => ApiError::NotFound("transfer_not_found").reply(),
                Err(e) => storage(e),
            },
            Read::History { id, from, limit } => {
                let Some(a) = visible(id) else {
                    return not_found();
                };
                match state.history(id, *from, *limit) {
                    Ok(items) => {
                        let next = items
                            .last()
                            .map(|i| i.seq + 1)
                            .filter(|n| *n < a.history_len);
                        let items: Vec<_> = items.iter().map(history_view).collect();
                        Reply::ok(
                            json!({"items": items, "next_cursor": next.map(|n| n.to_string()), "as_of": as_of}),
                        )
                    }
                    Err(e) => storage(e),
                }
            }
            Read::Block(h) => match self.block(&state, *h) {
                Ok(Some(header)) => {
                    let leaves = if *h == 0 {
                        Ok(Some(vec![]))
                    } else {
                        state.leaf_hashes(*h)
                    };
                    match leaves {
                        Ok(leaves) => {
                            let hashes: Vec<String> = leaves
                                .unwrap_or_default()
                                .iter()
                                .map(chain::to_hex)
                                .collect();
                            let mut view = block_view(&header);
                            view["leaf_hashes"] = json!(hashes);
                            view["as_of"] = as_of.into();
                            Reply::ok(view)
                        }
                        Err(e) => storage(e),
                    }
                }
                Ok(None) => ApiError::NotFound("block_not_found").reply(),
                Err(e) => storage(e),
            },
            Read::Blocks { from, limit } => {
                let to = ledger.height().min(from.saturating_add(*limit as u64 - 1));
                let blocks: Result<Vec<_>, _> = (*from..=to)
                    .map(|h| self.block(&state, h).map(|b| b.map(|b| block_view(&b))))
                    .collect();
                match blocks {
                    Ok(blocks) => {
                        let blocks: Vec<_> = blocks.into_iter().flatten().collect();
                        let next = (to < ledger.height()).then(|| (to + 1).to_string());
                        Reply::ok(
                            json!({"blocks": blocks, "next_cursor": next, "head_height": ledger.height(), "as_of": as_of}),
                        )
                    }
                    Err(e) => storage(e),
                }
            }
            Read::Proof(id) => {
                let t = match state.transfer(id) {
                    Ok(Some(t)) if ledger.transfer_readable_by(&t, &actor) => t,
                    Ok(_) => return ApiError::NotFound("transfer_not_found").reply(),
                    Err(e) => return storage(e),
                };
                let committed = state.transfer_at(t.height, &t.id);
                match (
                    state.block(t.height),
                    state.leaf_hashes(t.height),
                    committed,
                ) {
                    (Ok(Some(header)), Ok(Some(hashes)), Ok(Some(committed))) => {
                        // The leaf is the record as its block left it; a
                        // stored record edited since no longer hashes to it.
                        let leaf = crate::ledger::transfer_leaf(&committed);
                        let index = t.leaf_index as usize;
                        if hashes.get(index) != Some(&chain::leaf_hash(leaf.as_bytes())) {
                            return ApiError::Unavailable(format!(
                                "the stored record of transfer {} differs from leaf {index} of block {}",
                                t.id, t.height
                            ))
                            .reply();
                        }
                        let proof = Proof {
                            header,
                            leaf_index: t.leaf_index,
                            leaf,
                            path: chain::inclusion_path(&hashes, index),
                        };
                        let mut view = serde_json::to_value(&proof).expect("proofs serialize");
                        view["transfer"] = json!(t.id);
                        view["block_hash"] = json!(chain::to_hex(&proof.header.hash()));
                        Reply::ok(view)
                    }
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => storage(e),
                    _ => ApiError::Unavailable(format!("block {} is missing", t.height)).reply(),
                }
            }
            Read::Accounts { after, limit } => {
                let mut page: Vec<_> = ledger
                    .accounts_after(after.as_ref())
                    .filter(|a| a.readable_by(&actor))
                    .take(limit + 1)
                    .collect();
                let more = page.len() > *limit;
                page.truncate(*limit);
                let next = if more {
                    page.last().map(|a| a.id.to_string())
                } else {
                    None
                };
                let accounts: Vec<_> = page
                    .iter()
                    .map(|a| account_view(a, principal.org(), as_of))
                    .collect();
                Reply::ok(json!({"accounts": accounts, "next_cursor": next, "as_of": as_of}))
            }
        }
    }
}

/// A block header with its hash, hashes in hex.
pub fn block_view(h: &BlockHeader) -> serde_json::Value {
    let mut v = serde_json::to_value(h).expect("headers serialize");
    v["hash"] = json!(chain::to_hex(&h.hash()));
    v
}

/// An account's balances as of block height `h`: after its last event at or
/// below `h` (none: as created, all zero).
fn balance_at_view(
    a: &Account,
    h: u64,
    item: Option<&HistoryItem>,
    as_of: u64,
) -> serde_json::Value {
    json!({
        "id": a.id,
        "asset": a.asset,
        "at_height": h,
        "balance": item.map_or(0, |i| i.balance_after).to_string(),
        "debits_pending": item.map_or(0, |i| i.debits_pending_after).to_string(),
        "credits_pending": item.map_or(0, |i| i.credits_pending_after).to_string(),
        "as_of": as_of,
    })
}

fn render_outcome(
    outcome: Option<Outcome>,
    principal: &Principal,
    command: &Command,
    answer: Answer,
    log_index: u64,
) -> Reply {
    match outcome {
        Some(Outcome::Account(Ok(a))) => Reply::ok(account_view(&a, principal.org(), log_index)),
        Some(Outcome::Account(Err(r)) | Outcome::Transfer(Err(r))) => ApiError::Rejected(r).reply(),
        Some(Outcome::Transfer(Ok(t))) => Reply::with(200, &TransferView::from(&t)),
        Some(Outcome::Transfers(results)) if answer != Answer::One => match command {
            Command::Transfers { transfers, atomic } => {
                batch_reply(*atomic, transfers, &results, answer)
            }
            // A group commit's entry is never a peer's to ask for.
            other => ApiError::Unavailable(format!("a batch answer for {other:?}")).reply(),
        },
        Some(Outcome::Transfers(mut results)) if results.len() == 1 => match results.pop() {
            Some(Ok(t)) => Reply::with(200, &TransferView::from(&t)),
            Some(Err(r)) => ApiError::Rejected(r).reply(),
            None => unreachable!("length checked"),
        },
        other => ApiError::Unavailable(format!("unexpected outcome {other:?}")).reply(),
    }
}

/// A batch's answer; an atomic batch that was refused is a 422
/// `batch_rejected`. [`Answer::All`] lists every item's result in request
/// order (in a refused atomic batch, the items refused only because
/// another was say `linked_transfer_failed`); [`Answer::Refused`] counts
/// the items answered ok and lists the refused ones with their index,
/// leaving out the `linked_transfer_failed` ones that `batch_rejected`
/// implies.
fn batch_reply(
    atomic: bool,
    requests: &[NewTransfer],
    results: &[Result<Transfer, Rejection>],
    answer: Answer,
) -> Reply {
    let rejected = atomic && results.iter().any(Result::is_err);
    let error = rejected.then_some(ErrorView {
        code: "batch_rejected",
        message: "a transfer of this atomic batch was refused; nothing was applied",
    });
    let status = if rejected { 422 } else { 200 };
    if answer == Answer::Refused {
        return Reply::with(status, &refused_only(error, atomic, requests, results));
    }
    #[derive(Serialize)]
    struct All<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorView<'static>>,
        atomic: bool,
        results: Vec<BatchItemView<'a>>,
    }
    let results = results.iter().map(BatchItemView::from).collect();
    Reply::with(
        status,
        &All {
            error,
            atomic,
            results,
        },
    )
}

/// The body of an [`Answer::Refused`] batch answer.
#[derive(Serialize)]
struct RefusedOnly<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView<'static>>,
    atomic: bool,
    applied: usize,
    refused: Vec<RefusedView<'a>>,
}

fn refused_only<'a>(
    error: Option<ErrorView<'static>>,
    atomic: bool,
    requests: &'a [NewTransfer],
    results: &[Result<Transfer, Rejection>],
) -> RefusedOnly<'a> {
    let refused = (0..)
        .zip(requests.iter().zip(results))
        .filter_map(|(index, (request, result))| match result {
            Ok(_) | Err(Rejection::LinkedTransferFailed) => None,
            Err(e) => Some(RefusedView::new(index, &request.id, e)),
        })
        .collect();
    RefusedOnly {
        error,
        atomic,
        applied: results.iter().filter(|r| r.is_ok()).count(),
        refused,
    }
}
