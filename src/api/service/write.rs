//! Writes on the leader: one entry through Raft, or one transfer through
//! group commit, and the typed answer to its outcome.

use std::sync::LazyLock;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use rustls::crypto::SecureRandom;
use tokio::time::Instant;

use super::{Attempt, Outcome, Service};
use crate::api::body::Shape;
use crate::api::error::ApiError;
use crate::api::gov as gov_views;
use crate::api::group::{GroupError, Unit};
use crate::api::views::Answer;
use crate::identity::attest::Attested;
use crate::identity::Principal;
use crate::ledger::{
    self, Blinding, Command, Entry, Evidence, Grouped, NewTransfer, Rejection, Transfer,
};

/// The environment variable that names a file holding a number of ms
/// (negative for behind) that this node's clock is set off by, read again
/// every 100 ms: tests stand in for a wrong time source with it.
pub const CLOCK_SKEW_FILE_VAR: &str = "ALLIANCE_TEST_CLOCK_SKEW_FILE";

/// Milliseconds since the Unix epoch on this node's clock.
pub fn now_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.saturating_add_signed(skew_ms())
}

/// How far [`CLOCK_SKEW_FILE_VAR`] sets this node's clock off (0 without it).
fn skew_ms() -> i64 {
    use std::sync::Mutex;
    static FILE: LazyLock<Option<std::path::PathBuf>> =
        LazyLock::new(|| std::env::var_os(CLOCK_SKEW_FILE_VAR).map(Into::into));
    static READ: Mutex<Option<(std::time::Instant, i64)>> = Mutex::new(None);
    let Some(file) = FILE.as_ref() else {
        return 0;
    };
    let mut read = READ.lock().unwrap_or_else(|p| p.into_inner());
    match *read {
        Some((at, skew)) if at.elapsed() < Duration::from_millis(100) => skew,
        _ => {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let skew = text.trim().parse().unwrap_or(0);
            *read = Some((std::time::Instant::now(), skew));
            skew
        }
    }
}

/// Fresh randomness for an entry's [`Blinding`], from the operating
/// system's generator (through ring, as TLS draws its own). Without it a
/// public block root could be matched against guessed records, so a
/// generator that fails stops the node rather than propose a guessable one.
pub fn fresh_blinding() -> Blinding {
    static RANDOM: LazyLock<&'static dyn SecureRandom> =
        LazyLock::new(|| rustls::crypto::ring::default_provider().secure_random);
    let mut bytes = [0u8; 16];
    RANDOM
        .fill(&mut bytes)
        .expect("the system's random generator works");
    Blinding(bytes)
}

impl Service {
    /// Proposes `command` for `principal` on this node, the leader. The
    /// evidence is the forwarding node's seal, or `None` for this node's own
    /// caller, whom this node seals for (a single transfer through group
    /// commit).
    pub(super) async fn write(
        &self,
        principal: &Principal,
        command: &Command,
        shape: Shape,
        evidence: Option<Evidence>,
        deadline: Instant,
    ) -> Result<Outcome, Attempt> {
        if self.watch.clock_off().is_some() {
            // Stepping down (see `Watch`): as if not leader.
            return Err(Attempt::Retry);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Ok(Err(ApiError::Overloaded));
        };
        let actor = principal.actor();
        // The leader fixes the time before proposing: apply stays pure.
        let timestamp_ms = now_ms();
        let evidence = match (evidence, command.single_transfer()) {
            (Some(sealed), _) => sealed,
            (None, Some(one)) => {
                return self
                    .write_grouped(principal, command, shape, one, true, deadline)
                    .await;
            }
            (None, None) => self.attester.seal(
                &Attested::Command {
                    actor: &actor,
                    command,
                },
                timestamp_ms,
            ),
        };
        let entry = Entry {
            actor,
            timestamp_ms,
            command: command.clone(),
            evidence,
            blinding: fresh_blinding(),
        };
        let proposed = Instant::now();
        let written = tokio::time::timeout_at(deadline, self.raft.client_write(entry.into())).await;
        let committed = matches!(written, Ok(Ok(_)));
        self.stats.proposed(committed, proposed.elapsed());
        match written {
            Err(_elapsed) => Err(Attempt::RetryMaybeProposed),
            Ok(Ok(resp)) => {
                let index = resp.log_id.index;
                let enforced = match command.is_governance() {
                    true => Some(self.enforced_on(index).await),
                    false => None,
                };
                Ok(self.answer(resp.data, principal, command, shape, index, enforced))
            }
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

    /// One transfer through group commit: on this node if it leads
    /// (`leading`), else bundled to the leader. The batcher stamps the time.
    pub(super) async fn write_grouped(
        &self,
        principal: &Principal,
        command: &Command,
        shape: Shape,
        transfer: &NewTransfer,
        leading: bool,
        deadline: Instant,
    ) -> Result<Outcome, Attempt> {
        let item = Grouped {
            actor: principal.actor(),
            transfer: transfer.clone(),
        };
        let queued = async {
            if leading {
                self.group.write(Unit::Local(item)).await
            } else {
                self.relay.write(item).await
            }
        };
        match tokio::time::timeout_at(deadline, queued).await {
            Err(_elapsed) => Err(Attempt::RetryMaybeProposed),
            Ok(Ok((results, index))) => {
                let outcome = ledger::Outcome::Transfers(results);
                Ok(self.answer(Some(outcome), principal, command, shape, index, None))
            }
            Ok(Err(GroupError::NotLeader)) => Err(Attempt::Retry),
            Ok(Err(GroupError::Refused)) => Err(Attempt::RetryOverloaded),
            Ok(Err(GroupError::MaybeProposed)) => Err(Attempt::RetryMaybeProposed),
        }
    }
}

/// How long a governance write waits for its peers to apply it, to say
/// where it is enforced.
const ENFORCED_WAIT: Duration = Duration::from_secs(1);

impl Service {
    /// The nodes that have applied log index `index`, this one (which
    /// applied it) included, waiting up to [`ENFORCED_WAIT`] for the rest.
    async fn enforced_on(&self, index: u64) -> Vec<u64> {
        let mut nodes = self.watch.applied_by(index, ENFORCED_WAIT).await;
        nodes.push(self.id);
        nodes.sort_unstable();
        nodes
    }

    /// The answer to an applied entry's outcome, in the shape the request
    /// asked for; a governance write's says on which nodes it is enforced.
    fn answer(
        &self,
        outcome: Option<ledger::Outcome>,
        principal: &Principal,
        command: &Command,
        shape: Shape,
        log_index: u64,
        enforced: Option<Vec<u64>>,
    ) -> Outcome {
        use ledger::Outcome as O;
        let on = enforced.as_deref();
        match outcome {
            Some(O::Proposal(Ok(p))) => {
                let state = self.state.read();
                let view = gov_views::proposal_written(&p, state.ledger.gov(), on);
                Ok(Answer::View(view))
            }
            Some(O::Joined(Ok(org))) => {
                let state = self.state.read();
                Ok(Answer::View(gov_views::joined(
                    &org,
                    state.ledger.gov(),
                    on,
                )))
            }
            Some(O::Revoked(Ok(r))) => Ok(Answer::View(gov_views::revocation(&r, on))),
            Some(O::Proposal(Err(r)) | O::Revoked(Err(r)) | O::Joined(Err(r))) => {
                Err(ApiError::Rejected(r))
            }
            Some(O::Account(Ok(account))) => Ok(Answer::Account {
                account,
                viewer: principal.org().clone(),
                as_of: log_index,
            }),
            Some(O::Account(Err(r)) | O::Transfer(Err(r))) => Err(ApiError::Rejected(r)),
            Some(O::Transfer(Ok(transfer))) => Ok(Answer::Transfer {
                transfer,
                as_of: None,
            }),
            Some(O::Transfers(results)) if shape != Shape::One => match command {
                Command::Transfers { transfers, atomic } => {
                    Ok(batch(*atomic, transfers, results, shape))
                }
                // A group commit's entry is never a peer's to ask for.
                other => Err(ApiError::Unavailable(format!(
                    "a batch answer for {other:?}"
                ))),
            },
            Some(O::Transfers(mut results)) if results.len() == 1 => match results.pop() {
                Some(Ok(transfer)) => Ok(Answer::Transfer {
                    transfer,
                    as_of: None,
                }),
                Some(Err(r)) => Err(ApiError::Rejected(r)),
                None => unreachable!("length checked"),
            },
            other => Err(ApiError::Unavailable(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }
}

/// A batch's answer: every result, or (for [`Shape::Refused`]) the count
/// applied and the items refused for a reason of their own.
fn batch(
    atomic: bool,
    requests: &[NewTransfer],
    results: Vec<Result<Transfer, Rejection>>,
    shape: Shape,
) -> Answer {
    if shape != Shape::Refused {
        return Answer::Batch { atomic, results };
    }
    let refused = (0..)
        .zip(requests.iter().zip(&results))
        .filter_map(|(index, (request, result))| match result {
            Ok(_) | Err(Rejection::LinkedTransferFailed) => None,
            Err(e) => Some((index, request.id.clone(), *e)),
        })
        .collect();
    Answer::BatchRefused {
        atomic,
        items: results.len(),
        applied: results.iter().filter(|r| r.is_ok()).count(),
        refused,
    }
}
