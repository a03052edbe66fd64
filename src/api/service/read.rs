//! Reads from this node's applied state: on the leader after a quorum
//! confirmed its leadership ([`Service::linearize`]), or locally for
//! `consistency=local`. Each read answers `as_of`, the applied index it saw.

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::time::Instant;

use super::{installing_refusal, Attempt, Outcome, Read, Service};
use crate::api::chain;
use crate::api::error::ApiError;
use crate::api::gov as gov_views;
use crate::api::views::{Answer, HeadView};
use crate::api::watch::Watch;
use crate::config::NodeId;
use crate::identity::Principal;
use crate::ledger::chain::{
    blinded_leaf_hash, inclusion_path, leaf_blind, to_hex, BlockHeader, Proof,
};
use crate::ledger::Hash;
use crate::ledger::{transfer_leaf, Account, AccountId, Actor, Transfer, TransferId};
use crate::raft::state_machine::{SharedState, StateRead};

/// One read: the applied state under its read lock, and who asks.
struct Reader<'a> {
    state: StateRead<'a>,
    principal: &'a Principal,
    actor: Actor,
    as_of: u64,
    genesis_hash: [u8; 32],
}

/// A stored state that could not be read: the node cannot serve this now.
fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("reading the stored state: {e}"))
}

impl Service {
    /// Waits until this node, as leader, has applied everything committed
    /// before the call (a read index confirmed by a quorum), and returns
    /// that index.
    pub(super) async fn linearize(&self, deadline: Instant) -> Result<u64, Attempt> {
        if self.watch.clock_off().is_some() {
            // Confirming leadership would renew the followers' leases of a
            // leader that is stepping down (see `Watch`).
            return Err(Attempt::Retry);
        }
        match tokio::time::timeout_at(deadline, self.raft.ensure_linearizable()).await {
            Ok(Ok(index)) => Ok(index.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(Attempt::Retry)
            }
            Ok(Err(_)) | Err(_) => Err(Attempt::Retry),
        }
    }

    /// A linearizable read on a follower: `leader` confirms a read index
    /// with a quorum, and once this node has applied that index the read is
    /// served from its own state.
    pub(super) async fn read_via(
        &self,
        leader: NodeId,
        principal: &Principal,
        read: &Read,
        deadline: Instant,
    ) -> Result<Outcome, Attempt> {
        let index = self.ask_read_index(leader, deadline).await?;
        let wait = deadline.saturating_duration_since(Instant::now());
        let applied = self.raft.wait(Some(wait));
        // An install that begins meanwhile holds the state until it is
        // done: the read answers now rather than wait for it.
        tokio::select! {
            applied = applied.applied_index_at_least(Some(index), "read index") => {
                applied.map_err(|_| Attempt::Retry)?;
            }
            () = self.state.install_begun() => return Ok(Err(installing_refusal())),
        }
        Ok(self.read_by(principal, read, deadline).await)
    }

    /// Serves `read` from this node's applied state, answering by
    /// `deadline`. Called on the leader after [`Self::linearize`], or
    /// directly for `consistency=local`. The read runs on a blocking
    /// thread: it may wait for the state lock and for the state writer,
    /// which a slow disk holds up, and the runtime's threads must not wait
    /// with it. Past the deadline it answers 503 (a read changes nothing)
    /// and the thread finishes on its own.
    pub async fn read_by(&self, principal: &Principal, read: &Read, deadline: Instant) -> Outcome {
        let (state, watch, genesis) =
            (self.state.clone(), self.watch.clone(), self.genesis.clone());
        let (principal, read) = (principal.clone(), read.clone());
        let served = tokio::task::spawn_blocking(move || {
            serve(&state, &watch, genesis.hash_bytes(), &principal, &read)
        });
        match tokio::time::timeout_at(deadline, served).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Err(ApiError::Unavailable(format!("the read failed: {e}"))),
            Err(_) => Err(ApiError::Unavailable(
                "the read did not finish within request_timeout_ms: this node's storage is \
                 slow or busy; retry, or ask another node"
                    .into(),
            )),
        }
    }
}

/// Serves `read` from `state` (blocking).
fn serve(
    state: &SharedState,
    watch: &Watch,
    genesis_hash: Hash,
    principal: &Principal,
    read: &Read,
) -> Outcome {
    {
        if let Some(why) = watch.diverged() {
            return Err(ApiError::Diverged(why));
        }
        let state = if read.needs_store() {
            state.try_read_stored()
        } else {
            state.try_read()
        };
        let Some(state) = state else {
            return Err(installing_refusal());
        };
        let r = Reader {
            as_of: state.last_applied.map_or(0, |l| l.index),
            state,
            principal,
            actor: principal.actor(),
            genesis_hash,
        };
        match read {
            Read::Account {
                id,
                at_height: None,
            } => r.account(id),
            Read::Account {
                id,
                at_height: Some(h),
            } => r.balance_at(id, *h),
            Read::Transfer(id) => r.transfer(id),
            Read::History { id, from, limit } => r.history(id, *from, *limit),
            Read::Accounts { after, limit } => r.accounts(after.as_ref(), *limit),
            Read::Block(h) => r.block(*h),
            Read::Blocks { from, limit } => r.blocks(*from, *limit),
            Read::Proof(id) => r.proof(id),
            Read::Proposal(id) => r.proposal(*id),
            Read::Proposals { from, limit } => r.proposals(*from, *limit),
            Read::Registry => r.registry(),
        }
    }
}

impl Service {
    /// The chain head as the public window shows it.
    pub fn head_view(&self) -> Result<HeadView, ApiError> {
        let genesis = BlockHeader::genesis(self.genesis.hash_bytes());
        let head = (self.state.try_read().ok_or_else(installing_refusal)?)
            .ledger
            .head()
            .clone();
        Ok(HeadView {
            consortium: self.genesis.consortium.clone(),
            genesis_hash: to_hex(&genesis.hash()),
            height: head.height,
            hash: to_hex(&head.hash()),
            timestamp_ms: head.timestamp_ms,
        })
    }

    /// Block `h`'s header from this node's state; None past the head.
    pub fn block_header(&self, h: u64) -> Result<Option<BlockHeader>, ApiError> {
        let state = self.state.try_read().ok_or_else(installing_refusal)?;
        chain::header(&state, self.genesis.hash_bytes(), h).map_err(storage)
    }
}

impl Reader<'_> {
    fn proposal(&self, id: u64) -> Outcome {
        let gov = self.state.ledger.gov();
        let p = gov
            .proposal(id)
            .ok_or(ApiError::NotFound("proposal_not_found"))?;
        let view = gov_views::proposal(p, gov, Some(self.as_of));
        Ok(Answer::View(view))
    }

    fn proposals(&self, from: u64, limit: usize) -> Outcome {
        let gov = self.state.ledger.gov();
        let view = gov_views::proposals(gov, from, limit, self.as_of);
        Ok(Answer::View(view))
    }

    fn registry(&self) -> Outcome {
        let view = gov_views::registry(self.state.ledger.gov(), self.as_of);
        Ok(Answer::View(view))
    }

    /// An account the caller may see; any other is not found.
    fn visible(&self, id: &AccountId) -> Result<&Account, ApiError> {
        self.state
            .ledger
            .account(id)
            .filter(|a| a.readable_by(&self.actor))
            .ok_or(ApiError::NotFound("account_not_found"))
    }

    /// A transfer the caller may see (as one of its parties' organizations).
    fn visible_transfer(&self, id: &TransferId) -> Result<Transfer, ApiError> {
        match self.state.transfer(id).map_err(storage)? {
            Some(t) if self.state.ledger.transfer_readable_by(&t, &self.actor) => Ok(t),
            _ => Err(ApiError::NotFound("transfer_not_found")),
        }
    }

    fn account(&self, id: &AccountId) -> Outcome {
        Ok(Answer::Account {
            account: self.visible(id)?.clone(),
            viewer: self.principal.org().clone(),
            as_of: self.as_of,
        })
    }

    fn balance_at(&self, id: &AccountId, h: u64) -> Outcome {
        let account = self.visible(id)?;
        let head = self.state.ledger.height();
        if h > head {
            let msg = format!("at_height {h} is above the chain head {head}");
            return Err(ApiError::InvalidQuery(msg));
        }
        if h < account.created_height {
            return Err(ApiError::NotFound("account_not_found"));
        }
        let last = self.state.history_at_height(id, h).map_err(storage)?;
        Ok(Answer::BalanceAt {
            account: account.clone(),
            at_height: h,
            last,
            as_of: self.as_of,
        })
    }

    fn transfer(&self, id: &TransferId) -> Outcome {
        Ok(Answer::Transfer {
            transfer: self.visible_transfer(id)?,
            as_of: Some(self.as_of),
        })
    }

    fn history(&self, id: &AccountId, from: u64, limit: usize) -> Outcome {
        let account = self.visible(id)?;
        let items = self.state.history(id, from, limit).map_err(storage)?;
        let next = items
            .last()
            .map(|i| i.seq + 1)
            .filter(|n| *n < account.history_len);
        Ok(Answer::History {
            items,
            next,
            as_of: self.as_of,
        })
    }

    fn accounts(&self, after: Option<&AccountId>, limit: usize) -> Outcome {
        let mut page: Vec<Account> = (self.state.ledger.accounts_after(after))
            .filter(|a| a.readable_by(&self.actor))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        let next = more.then(|| page.last().map(|a| a.id.clone())).flatten();
        Ok(Answer::Accounts {
            accounts: page,
            viewer: self.principal.org().clone(),
            next,
            as_of: self.as_of,
        })
    }

    fn block(&self, h: u64) -> Outcome {
        let header = chain::header(&self.state, self.genesis_hash, h)
            .map_err(storage)?
            .ok_or(ApiError::NotFound("block_not_found"))?;
        let leaf_hashes = if h == 0 {
            Vec::new()
        } else {
            self.state
                .leaf_hashes(h)
                .map_err(storage)?
                .unwrap_or_default()
        };
        Ok(Answer::Block {
            header,
            leaf_hashes,
            as_of: self.as_of,
        })
    }

    fn blocks(&self, from: u64, limit: usize) -> Outcome {
        let head_height = self.state.ledger.height();
        let to = head_height.min(from.saturating_add(limit as u64 - 1));
        let mut headers = Vec::new();
        for h in from..=to {
            let header = chain::header(&self.state, self.genesis_hash, h).map_err(storage)?;
            headers.extend(header);
        }
        Ok(Answer::Blocks {
            headers,
            next: (to < head_height).then_some(to + 1),
            head_height,
            as_of: self.as_of,
        })
    }

    fn proof(&self, id: &TransferId) -> Outcome {
        let t = self.visible_transfer(id)?;
        let missing = || ApiError::Unavailable(format!("block {} is missing", t.height));
        let header = self
            .state
            .block(t.height)
            .map_err(storage)?
            .ok_or_else(missing)?;
        let hashes = self
            .state
            .leaf_hashes(t.height)
            .map_err(storage)?
            .ok_or_else(missing)?;
        let committed = self
            .state
            .transfer_at(t.height, &t.id)
            .map_err(storage)?
            .ok_or_else(missing)?;
        let blinding = self
            .state
            .blinding(t.height)
            .map_err(storage)?
            .ok_or_else(missing)?;
        // The leaf is the record as its block left it; a stored record
        // edited since no longer hashes to it. Its blind goes with it, and
        // no other leaf's.
        let leaf = transfer_leaf(&committed);
        let blind = leaf_blind(&blinding, t.leaf_index);
        let index = t.leaf_index as usize;
        if hashes.get(index) != Some(&blinded_leaf_hash(&blind, leaf.as_bytes())) {
            return Err(ApiError::Unavailable(format!(
                "the stored record of transfer {} differs from leaf {index} of block {}",
                t.id, t.height
            )));
        }
        let proof = Proof {
            header,
            leaf_index: t.leaf_index,
            leaf,
            blind,
            path: inclusion_path(&hashes, index),
        };
        Ok(Answer::Proof {
            proof,
            transfer: t.id,
        })
    }
}
