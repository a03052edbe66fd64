//! Replication: formation from genesis, failover, durability, snapshots.

use alliance::api::peer::SNAPSHOT_CHUNK_DELAY_VAR;
use alliance::api::service::write::CLOCK_SKEW_FILE_VAR;
use alliance::config::{RaftTuning, MEMORY_SOFT_LIMIT_MB};
use alliance::raft::state_machine::{SNAPSHOT_DELAY_VAR, WRITE_DELAY_VAR};

use crate::harness::{
    eventually, now_ms, ok, options, sample, snapshot_often, transfer_until_ok, Cluster,
};

const ISSUED: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_form_and_a_follower_write_commits_everywhere() {
    let c = Cluster::start().await;
    let leader = c.wait_for_leader().await;
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.seed(ISSUED).await;

    let t = ok(c
        .app(1, follower)
        .transfer("org1.f-1", "org1.ops", "org2.ops", 300)
        .await);
    assert_eq!(t.body["amount"], "300");
    assert_eq!(t.body["posted_by"], "org1");

    for node in c.ids() {
        // Linearizable reads: the acknowledged write is visible at once.
        assert_eq!(
            c.balance(1, node, "org1.ops", false).await.as_deref(),
            Some("999700"),
            "node {node}"
        );
        assert_eq!(
            c.balance(2, node, "org2.ops", false).await.as_deref(),
            Some("300"),
            "node {node}"
        );
        // Local reads converge to the same state.
        eventually("local read to catch up", || async {
            (c.balance(2, node, "org2.ops", true).await.as_deref() == Some("300")).then_some(())
        })
        .await;
    }
    let status = c.status(follower).await.unwrap();
    assert_eq!(status["leader"].as_u64(), Some(leader));
    assert_eq!(status["voters"].as_array().map(Vec::len), Some(3));
    let (commit, applied) = (
        status["commit_index"].as_u64().unwrap(),
        status["applied_index"].as_u64().unwrap(),
    );
    assert!(
        commit >= t.body["log_index"].as_u64().unwrap() && applied <= commit,
        "{status}"
    );

    // The command-line client works against the same node.
    let org1_app = &c.layout.org("org1").identities["app"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alliance"))
        .args(["client", "--config"])
        .arg(&org1_app.client_config)
        .args(["balance", "org1.ops"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["balance"], "999700");

    // Each node runs itself again with mimalloc returning freed memory
    // after 100 ms and using no transparent huge pages (the same process:
    // the harness's pid is the node's).
    for node in c.ids() {
        let environ = std::fs::read(format!("/proc/{}/environ", c.pid(node))).unwrap();
        for set in [&b"MIMALLOC_PURGE_DELAY=100"[..], b"MIMALLOC_ALLOW_THP=0"] {
            assert!(
                environ.split(|b| *b == 0).any(|var| var == set),
                "node {node}: {}",
                String::from_utf8_lossy(set)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_sigkill_loses_no_acknowledged_transfer() {
    let mut c = Cluster::start().await;
    c.seed(ISSUED).await;
    let old_leader = c.wait_for_leader().await;
    let old_term = c.status(old_leader).await.unwrap()["term"]
        .as_u64()
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..10u64 {
        let via = c.ids()[i as usize % 3];
        let id = format!("org1.before-{i}");
        transfer_until_ok(&c.app(1, via), &id, "org1.ops", "org2.ops", i + 1).await;
        acked.push((id, i + 1));
    }

    c.kill(old_leader);
    let survivor = c.running()[0];
    for i in 0..10u64 {
        let id = format!("org1.after-{i}");
        transfer_until_ok(&c.app(1, survivor), &id, "org1.ops", "org2.ops", 100 + i).await;
        acked.push((id, 100 + i));
    }
    // A new leader was elected in a later term.
    let new_leader = c.wait_for_leader().await;
    let new_term = c.status(new_leader).await.unwrap()["term"]
        .as_u64()
        .unwrap();
    assert!(new_term > old_term, "term {old_term} -> {new_term}");

    c.restart(old_leader);
    let spent: u64 = acked.iter().map(|(_, a)| a).sum();
    let expected = (ISSUED - spent).to_string();
    eventually("the restarted node to catch up", || async {
        (c.balance(1, old_leader, "org1.ops", true).await? == expected).then_some(())
    })
    .await;
    for node in c.ids() {
        assert_eq!(
            c.balance(1, node, "org1.ops", false).await,
            Some(expected.clone()),
            "node {node}"
        );
        for (id, amount) in &acked {
            let r = ok(c.app(1, node).get_transfer(id).await);
            assert_eq!(
                r.body["amount"],
                amount.to_string(),
                "transfer {id} on node {node}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_every_node_loses_no_acknowledged_transfer() {
    let mut c = Cluster::start().await;
    c.seed(ISSUED).await;
    let mut spent = 0;
    for i in 0..30u64 {
        let via = c.ids()[i as usize % 3];
        transfer_until_ok(
            &c.app(1, via),
            &format!("org1.k-{i}"),
            "org1.ops",
            "org3.ops",
            7 * (i + 1),
        )
        .await;
        spent += 7 * (i + 1);
    }
    // Right after the last acknowledgement: no graceful anything.
    for id in c.ids() {
        c.kill(id);
    }
    for id in c.ids() {
        c.restart(id);
    }
    c.wait_for_leader().await;
    for node in c.ids() {
        assert_eq!(
            c.balance(1, node, "org1.ops", false).await,
            Some((ISSUED - spent).to_string())
        );
        assert_eq!(
            c.balance(3, node, "org3.ops", false).await,
            Some(spent.to_string())
        );
    }
    for i in 0..30u64 {
        let r = ok(c.app(3, 3).get_transfer(&format!("org1.k-{i}")).await);
        assert_eq!(r.body["amount"], (7 * (i + 1)).to_string());
    }
}

/// Seeds `c`, stops a follower, and moves `n` units from org1.ops to
/// org2.ops through the leader (ids `org1.{prefix}-I`) until the leader
/// has dropped log entries the follower never received: only a snapshot
/// can bring it up to date. The leader, the stopped follower, and the last
/// log index the follower had.
async fn leave_a_follower_behind(c: &mut Cluster, prefix: &str, n: u64) -> (u64, u64, u64) {
    c.seed(ISSUED).await;
    let leader = c.wait_for_leader().await;
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let left_at = c.status(lagging).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    c.kill(lagging);
    for i in 0..n {
        let id = format!("org1.{prefix}-{i}");
        transfer_until_ok(&c.app(1, leader), &id, "org1.ops", "org2.ops", 1).await;
    }
    eventually(
        "the leader to purge past the lagging node's log",
        || async {
            let purged = c.status(leader).await?["purged_index"].as_u64()?;
            (purged > left_at).then_some(())
        },
    )
    .await;
    (leader, lagging, left_at)
}

/// A cluster whose nodes run with `env` and snapshot often, with a
/// follower restarted 30 transfers behind (ids `org1.{prefix}-N`), past
/// the leader's log: the cluster, the leader, the follower and the term
/// before the restart.
async fn restart_a_follower_far_behind(
    env: (String, String),
    prefix: &str,
) -> (Cluster, u64, u64, serde_json::Value) {
    let mut c = Cluster::start_with_env(snapshot_often(), vec![env]).await;
    let (leader, lagging, _) = leave_a_follower_behind(&mut c, prefix, 30).await;
    let term = c.status(leader).await.unwrap()["term"].clone();
    c.restart(lagging);
    (c, leader, lagging, term)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_far_behind_catches_up_by_snapshot() {
    let mut c = Cluster::start_with(snapshot_often()).await;
    let (leader, lagging, left_at) = leave_a_follower_behind(&mut c, "s", 40).await;
    c.restart(lagging);
    eventually("the lagging node to catch up", || async {
        (c.balance(2, lagging, "org2.ops", true).await? == "40").then_some(())
    })
    .await;
    let status = c.status(lagging).await.unwrap();
    assert!(
        status["snapshot_index"].as_u64().unwrap() > left_at,
        "{status}"
    );
    let r = ok(c.app(1, lagging).get_transfer("org1.s-39").await);
    assert_eq!(r.body["amount"], "1");
    // The metrics count it on both sides.
    let (_, text) = c.ops_text(lagging, "/metrics").await.unwrap();
    let installed = sample(&text, "alliance_snapshots_installed_total");
    assert!(installed >= Some(1), "{text}");
    let (_, text) = c.ops_text(leader, "/metrics").await.unwrap();
    assert!(
        sample(&text, "alliance_snapshots_built_total") >= Some(1),
        "{text}"
    );
    assert!(
        sample(&text, "alliance_snapshots_sent_total") >= Some(1),
        "{text}"
    );
}

/// A follower that catches up by log from far behind puts off the
/// snapshot build its turn asks for meanwhile until it is in step, then
/// builds.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_catching_up_builds_its_snapshot_once_in_step() {
    let mut c = Cluster::start_with(options(RaftTuning {
        snapshot_logs_since_last: 10,
        snapshot_logs_kept: 1000,
        // Appends of at most 8 entries: the first the follower takes
        // leaves it about 110 entries behind, past the 32 that count as
        // catching up.
        max_payload_entries: 8,
        ..RaftTuning::default()
    }))
    .await;
    c.seed(ISSUED).await;
    let leader = c.wait_for_leader().await;
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.kill(lagging);
    for i in 0..120 {
        let id = format!("org1.d-{i}");
        transfer_until_ok(&c.app(1, leader), &id, "org1.ops", "org2.ops", 1).await;
    }
    let head = c.status(leader).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    c.restart(lagging);
    eventually("the lagging node to catch up", || async {
        (c.balance(2, lagging, "org2.ops", true).await? == "120").then_some(())
    })
    .await;
    // The build put off walks once the node is in step: its snapshot is
    // of the head (within a turn's 10 entries), where the one from
    // before the stop is 120 entries back.
    let built = eventually(
        "the lagging node to build at the head once in step",
        || async {
            // The snapshot first: the count of builds goes up before it.
            let at = c.status(lagging).await?["snapshot_index"].as_u64()?;
            let (_, text) = c.ops_text(lagging, "/metrics").await?;
            let deferred = sample(&text, "alliance_snapshot_builds_deferred_total")?;
            (deferred >= 1 && at + 10 >= head)
                .then(|| sample(&text, "alliance_snapshots_built_total"))
        },
    )
    .await;
    // Built at each turn beside the catch-up, it builds again and again
    // (6 times, in a trial without the wait); put off, the first build
    // waits until it is in step, and at most two more turns come before
    // its snapshot is of the head.
    assert!(
        built.is_some_and(|n| (1..=3).contains(&n)),
        "builds since its restart: {built:?}"
    );
    let (_, text) = c.ops_text(leader, "/metrics").await.unwrap();
    assert_eq!(
        sample(&text, "alliance_snapshot_builds_deferred_total"),
        Some(0),
        "the leader, in step throughout, put off no build: {text}"
    );
}

/// The nodes take turns building snapshots: with a build every 60
/// entries, each builds at its own third of the cycle, in the order of
/// their ids (at 0, 20 and 40 entries past a multiple of 60), where a
/// count since the last snapshot alone has all three build at the same
/// entry.
#[tokio::test(flavor = "multi_thread")]
async fn the_nodes_take_turns_building_snapshots() {
    const EVERY: u64 = 60;
    let c = Cluster::start_with(options(RaftTuning {
        snapshot_logs_since_last: EVERY,
        snapshot_logs_kept: 1000,
        ..RaftTuning::default()
    }))
    .await;
    c.seed(ISSUED).await;
    let leader = c.wait_for_leader().await;
    let mut ids = c.ids();
    ids.sort_unstable();
    let deadline = std::time::Instant::now() + crate::harness::DEADLINE;
    let mut sent = 0;
    let snapshots = loop {
        let mut at = Vec::new();
        for id in &ids {
            at.push(
                c.status(*id)
                    .await
                    .and_then(|s| s["snapshot_index"].as_u64()),
            );
        }
        if at.iter().all(|a| a.is_some_and(|a| a > 0)) {
            break at.into_iter().flatten().collect::<Vec<_>>();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every node built a snapshot after {sent} transfers: {at:?}"
        );
        let id = format!("org1.t-{sent}");
        transfer_until_ok(&c.app(1, leader), &id, "org1.ops", "org2.ops", 1).await;
        sent += 1;
    };
    let third = EVERY / 3;
    for (place, at) in snapshots.iter().enumerate() {
        let from = third * place as u64;
        assert!(
            (from..from + third).contains(&(at % EVERY)),
            "node {} (place {place}) built at entry {at}, not in its third of the cycle: \
             every node's snapshot: {snapshots:?}",
            ids[place]
        );
    }
}

/// A snapshot build holds up no request: with each build paused for 3 s
/// after its point in time is fixed (standing in for a ledger that takes
/// that long to walk), writes and reads on the leader answer within a
/// second throughout two whole builds, and a node that catches up from
/// such a snapshot has every transfer.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_build_stalls_no_request() {
    let pause = (SNAPSHOT_DELAY_VAR.to_owned(), "3000".to_owned());
    let mut c = Cluster::start_with_env(snapshot_often(), vec![pause]).await;
    c.seed(ISSUED).await;
    let leader = c.wait_for_leader().await;
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.kill(lagging);
    let built = || async {
        let (_, text) = c.ops_text(leader, "/metrics").await?;
        sample(&text, "alliance_snapshots_built_total")
    };
    let before = built().await.expect("the leader's metrics");
    let app = c.app(1, leader);
    let mut longest = std::time::Duration::ZERO;
    let deadline = std::time::Instant::now() + crate::harness::DEADLINE;
    let mut sent = 0u64;
    // Two builds finished after the writes began: one ran entirely
    // while they went on.
    while built().await.expect("the leader's metrics") < before + 2 {
        assert!(std::time::Instant::now() < deadline, "no two builds");
        let started = std::time::Instant::now();
        let id = format!("org1.b-{sent}");
        let t = app.transfer(&id, "org1.ops", "org2.ops", 1).await;
        assert!(t.is_ok_and(|r| r.is_success()), "transfer {id}");
        let read = app.account("org1.ops", false).await;
        assert!(read.is_ok_and(|r| r.is_success()), "read after {id}");
        longest = longest.max(started.elapsed());
        sent += 1;
    }
    assert!(
        longest < std::time::Duration::from_secs(1),
        "a transfer and a read took {longest:?} while snapshots were built"
    );
    c.restart(lagging);
    eventually("the lagging node to catch up", || async {
        (c.balance(2, lagging, "org2.ops", true).await? == sent.to_string()).then_some(())
    })
    .await;
}

/// A leader whose clock goes two hours off its peers' (ahead, then
/// behind) finds it, takes no writes, steps down and does not lead until
/// its clock agrees again; no timestamp a user sees goes back or ahead.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_clock_is_off_steps_down() {
    let skews = tempfile::tempdir().unwrap();
    let skew_file = |id: u64| skews.path().join(format!("skew-{id}"));
    let var = skews.path().join("skew-{id}").display().to_string();
    let env = vec![(CLOCK_SKEW_FILE_VAR.to_string(), var)];
    let c = Cluster::start_with_env(options(RaftTuning::default()), env).await;
    let admin = |id: u64| c.client(&format!("org{id}"), "admin", id);
    c.seed(ISSUED).await;
    for id in c.ids() {
        ok(admin(id)
            .create_account(&format!("org{id}.funds"), "USD", true, &[])
            .await);
    }
    let mut stamps = Vec::new();
    let mut n = 0;
    let mut write_via = |id: u64| {
        n += 1;
        let (t, from) = (format!("org{id}.clock-{n}"), format!("org{id}.funds"));
        async move {
            let r = transfer_until_ok(&admin(id), &t, &from, "org1.ops", 1).await;
            r.body["timestamp_ms"].as_u64().unwrap()
        }
    };
    for skew_ms in [7_200_000i64, -7_200_000] {
        let off = c.wait_for_leader().await;
        std::fs::write(skew_file(off), skew_ms.to_string()).unwrap();
        let why = eventually("the leader to find its clock off", || async {
            c.status(off).await?["replicas"]["clock_off"]
                .as_str()
                .map(str::to_owned)
        })
        .await;
        assert!(why.contains("limits.clock_offset_max_ms"), "{why}");
        let (_, text) = c.ops_text(off, "/metrics").await.unwrap();
        assert_eq!(sample(&text, "alliance_clock_offset_exceeded"), Some(1));
        let (status, ready) = c.ops_text(off, "/readyz").await.unwrap();
        assert!(status == 503 && ready.contains("clock"), "{status} {ready}");
        let from = format!("org{off}.funds");
        let refused = admin(off)
            .transfer("org1.never", &from, "org1.ops", 1)
            .await;
        let refused = refused.unwrap();
        assert_eq!(refused.status, 503, "{}", refused.body);
        let message = refused.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("takes no writes"), "{message}");

        let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != off).collect();
        let leader = eventually("the others to agree on another leader", || async {
            let mut leaders = Vec::new();
            for id in &others {
                leaders.push(c.status(*id).await?["leader"].as_u64()?);
            }
            let first = leaders[0];
            (first != off && leaders.iter().all(|l| *l == first)).then_some(first)
        })
        .await;
        for id in &others {
            let sent_ms = now_ms();
            let stamp = write_via(*id).await;
            assert!(
                stamp + 60_000 >= sent_ms && stamp <= now_ms(),
                "{stamp} at {sent_ms}"
            );
            stamps.push(stamp);
        }
        let status = c.status(off).await.unwrap();
        assert_ne!(status["leader"].as_u64(), Some(off), "{status}");
        assert_eq!(c.status(leader).await.unwrap()["leader"], leader);

        std::fs::write(skew_file(off), "0").unwrap();
        eventually("the node's clock to agree again", || async {
            c.status(off).await?["replicas"]["clock_off"]
                .is_null()
                .then_some(())
        })
        .await;
        stamps.push(write_via(off).await);
    }
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    let blocks = ok(c
        .app(1, 1)
        .call(reqwest::Method::GET, "/v1/blocks?limit=1000", None)
        .await)
    .body;
    let times: Vec<u64> = (blocks["blocks"].as_array().unwrap().iter())
        .map(|b| b["timestamp_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(times.iter().all(|t| *t <= now_ms()), "{times:?}");
}

/// A node installing a snapshot answers at once: with each install paused
/// 3 s while it replaces the state (standing in for a large ledger), the
/// node's status says so, every read there answers 503 within a second,
/// and so does a single transfer posted there (refused: more than the
/// account holds); the install causes no election, and the node then
/// serves every transfer.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_installing_a_snapshot_answers_reads_with_503_at_once() {
    let pause = (SNAPSHOT_DELAY_VAR.to_owned(), "3000".to_owned());
    let (c, leader, lagging, term) = restart_a_follower_far_behind(pause, "i").await;
    let installing = || async {
        let s = c.status(lagging).await?;
        Some(s["installing_snapshot"] == true)
    };
    eventually("the install to begin", || async {
        installing().await?.then_some(())
    })
    .await;
    let reader = c.app(2, lagging);
    // Its own organization's app, whose single transfers the node checks
    // at the edge on its own state.
    let (own, writer) = (
        format!("org{lagging}.ops"),
        c.app(lagging as usize, lagging),
    );
    let mut refused = 0;
    let mut n = 0;
    while installing().await == Some(true) {
        let started = std::time::Instant::now();
        let r = reader.account("org2.ops", false).await.expect("an answer");
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(1),
            "a read took {took:?}"
        );
        if r.status == 503 {
            assert!(
                r.body.to_string().contains("installing a snapshot"),
                "{}",
                r.body
            );
            refused += 1;
        }
        n += 1;
        let started = std::time::Instant::now();
        let id = format!("org{lagging}.during-install-{n}");
        let to = format!("org{leader}.ops");
        let w = writer.transfer(&id, &own, &to, ISSUED + 1).await;
        let took = started.elapsed();
        let w = w.expect("an answer");
        assert!(
            took < std::time::Duration::from_secs(1),
            "a transfer took {took:?}: {}",
            w.body
        );
        let code = w.body["error"]["code"].as_str();
        assert!(
            w.status == 503 || code == Some("insufficient_funds"),
            "{}",
            w.body
        );
    }
    assert!(refused > 0, "no read met the install");
    eventually("the lagging node to catch up", || async {
        (c.balance(2, lagging, "org2.ops", false).await? == "30").then_some(())
    })
    .await;
    assert_eq!(c.status(leader).await.unwrap()["term"], term, "an election");
    assert_eq!(c.wait_for_leader().await, leader);
}

/// A node receiving a snapshot does not campaign: with each chunk taking
/// 5 s to arrive (standing in for the stream of a snapshot of gigabytes,
/// longer than any election timeout, during which the leader sends the
/// node no heartbeat), the lagging node takes the snapshot and catches up
/// with no election, and may campaign again after.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_receiving_a_long_snapshot_stream_does_not_campaign() {
    let slow = (SNAPSHOT_CHUNK_DELAY_VAR.to_owned(), "5000".to_owned());
    let (c, leader, lagging, term) = restart_a_follower_far_behind(slow, "c").await;
    eventually("the lagging node to catch up", || async {
        (c.balance(2, lagging, "org2.ops", false).await? == "30").then_some(())
    })
    .await;
    let (_, text) = c.ops_text(lagging, "/metrics").await.unwrap();
    let installed = sample(&text, "alliance_snapshots_installed_total");
    assert!(installed >= Some(1), "it caught up by a snapshot: {text}");
    assert_eq!(c.status(leader).await.unwrap()["term"], term, "an election");
    assert_eq!(c.wait_for_leader().await, leader);
    let log = || std::fs::read_to_string(&c.layout.node(lagging).log).unwrap();
    assert!(log().contains("does not campaign until it is installed"));
    // And once it is installed, the node may campaign again.
    eventually("elections back on at the lagging node", || async {
        log().contains("this node may campaign again").then_some(())
    })
    .await;
}

/// A slow disk does not hold a request past its deadline: with each write
/// of the applied state to the store delayed 2 s (standing in for a
/// throttled disk) and `request_timeout_ms` at 3 s, a read of a record
/// the store does not have yet (it is many seconds behind) answers 503
/// within the deadline and a margin, until the store catches up.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_disk_holds_no_read_past_its_deadline() {
    let mut opts = options(RaftTuning::default());
    opts.limits.request_timeout_ms = 3000;
    let slow = (WRITE_DELAY_VAR.to_owned(), "2000".to_owned());
    let c = Cluster::start_with_env(opts, vec![slow]).await;
    c.seed(ISSUED).await;
    let leader = c.wait_for_leader().await;
    let app = c.app(1, leader);
    transfer_until_ok(&app, "org1.slow-1", "org1.ops", "org2.ops", 5).await;
    // The posted transfer is read from the store, which is seconds behind.
    let deadline = std::time::Instant::now() + crate::harness::DEADLINE;
    let mut refused = 0;
    loop {
        let started = std::time::Instant::now();
        let r = app.get_transfer("org1.slow-1").await.expect("an answer");
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(4500),
            "a read took {took:?}"
        );
        if r.is_success() {
            assert_eq!(r.body["amount"], "5");
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            r.body.to_string().contains("request_timeout_ms"),
            "{}",
            r.body
        );
        refused += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "the store never caught up"
        );
    }
    assert!(refused > 0, "no read met the slow store");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_storage_was_lost_cannot_rejoin_under_its_id() {
    let mut c = Cluster::start().await;
    c.seed(ISSUED).await;
    let leader = c.wait_for_leader().await;
    let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.kill(victim);
    std::fs::remove_dir_all(&c.layout.node(victim).data_dir).unwrap();

    c.restart(victim);
    let status = c.wait_exit(victim).await;
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(&c.layout.node(victim).log).unwrap();
    assert!(log.contains("remembers it with other storage"), "{log}");

    // The rest of the consortium carries on.
    transfer_until_ok(
        &c.app(1, leader),
        "org1.after-wipe",
        "org1.ops",
        "org2.ops",
        5,
    )
    .await;
    assert_eq!(
        c.balance(2, leader, "org2.ops", false).await.as_deref(),
        Some("5")
    );
}

/// A supervisor stops the demo with SIGTERM: its nodes must stop with it,
/// not linger as orphans holding their ports and data. The same demo
/// started again while it runs is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_stops_its_nodes_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = crate::harness::start_demo(dir.path()).await;
    let stderr_path = dir.path().join("demo.stderr");
    assert_eq!(
        demo.layout.local_node_pids().len(),
        3,
        "three nodes while the demo runs"
    );

    // The same demo again, while this one runs: refused, nothing started.
    let again = tokio::process::Command::new(env!("CARGO_BIN_EXE_alliance"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{said}");
    assert!(said.contains("seems to be running already"), "{said}");
    assert!(!String::from_utf8_lossy(&again.stdout).contains("is up"));
    assert_eq!(
        demo.layout.local_node_pids().len(),
        3,
        "the same three nodes"
    );

    assert!(crate::harness::send_signal(demo.demo.id(), "-TERM"));
    let status = crate::harness::wait_child("the demo to exit on SIGTERM", &mut demo.demo).await;
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("stopping nodes 1, 2, 3"), "{stderr}");

    eventually("the demo's nodes to stop", || async {
        demo.layout.local_node_pids().is_empty().then_some(())
    })
    .await;
}

/// `alliance bench --transfers N` sends exactly N transfers, warm-up
/// included, the last request carrying what is left of the budget; its own
/// conservation check passes, also with `--accounts`; `--latencies` writes
/// a line per measured request. A budget of 0, a single account, or a
/// latencies file it cannot write, is refused before any load.
#[tokio::test(flavor = "multi_thread")]
async fn bench_stops_after_its_transfer_budget() {
    use alliance::bench::{run, Options};

    let c = Cluster::start().await;
    c.wait_for_leader().await;
    // Node 1 is org1's; whether it leads or forwards does not matter here.
    let node = 1;
    let opts = Options {
        node,
        clients: 3,
        duration: crate::harness::DEADLINE,
        warmup: std::time::Duration::from_millis(1),
        batch: 40,
        transfers: Some(250),
        accounts: None,
        latencies: Some(c.layout.dir.join("latencies.txt")),
    };
    let started_ms = now_ms();
    let summary = run(&c.layout.dir, &opts).await.expect("bench runs");
    assert_eq!(summary.acked, 250, "{summary:?}");
    let sink = "org1.bench.sink";
    assert_eq!(
        c.balance(1, node, sink, false).await.as_deref(),
        Some("250")
    );
    // Six requests of 40 and one of 10; the warm-up (1 ms) may take some.
    let lines = std::fs::read_to_string(c.layout.dir.join("latencies.txt")).unwrap();
    let requests: Vec<(u64, u64)> = (lines.lines())
        .map(|l| {
            let (sent, micros) = l.split_once(' ').expect("two fields");
            (sent.parse().unwrap(), micros.parse().unwrap())
        })
        .collect();
    assert!((1..=7).contains(&requests.len()), "{lines}");
    for (sent, micros) in &requests {
        assert!(*sent >= started_ms && *sent <= now_ms(), "{lines}");
        assert!(*micros > 0 && *micros < 60_000_000, "{lines}");
    }
    assert!(requests.windows(2).all(|w| w[0].0 <= w[1].0), "{lines}");
    let unwritable = Options {
        latencies: Some(c.layout.dir.join("no-such-folder/latencies.txt")),
        ..opts
    };
    let zero = Options {
        transfers: Some(0),
        latencies: None,
        ..opts
    };
    for (refused, flag) in [(unwritable, "--latencies"), (zero, "--transfers")] {
        let refused = run(&c.layout.dir, &refused).await;
        assert!(refused.is_err_and(|e| e.to_string().contains(flag)));
        assert_eq!(
            c.balance(1, node, sink, false).await.as_deref(),
            Some("250"),
            "a refused run sends nothing"
        );
    }

    // Spread over 20 accounts: the same budget, the same check, and the
    // credits land on many of them.
    let spread = Options {
        transfers: Some(100),
        batch: 10,
        accounts: Some(20),
        ..opts
    };
    let summary = run(&c.layout.dir, &spread)
        .await
        .expect("spread bench runs");
    assert_eq!(summary.acked, 100, "{summary:?}");
    let admin = c.client("org1", "admin", node);
    let mut credited = 0;
    for i in 0..20 {
        let r = ok(admin.account(&format!("org1.bench.a{i}"), false).await);
        if r.body["credits_posted"] != "0" {
            credited += 1;
        }
    }
    assert!(credited >= 10, "{credited} of 20 accounts credited");
    let one = Options {
        accounts: Some(1),
        ..spread
    };
    let refused = run(&c.layout.dir, &one).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("--accounts must be 2..=100000")));
}

/// [`Cluster::ops_text`] with the body read as JSON.
async fn probe(c: &Cluster, id: u64, path: &str) -> Option<(u16, serde_json::Value)> {
    let (status, text) = c.ops_text(id, path).await?;
    Some((status, serde_json::from_str(&text).unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_each_node_its_role_and_the_answers_it_gave() {
    let c = Cluster::start().await;
    let leader = c.wait_for_leader().await;
    c.seed(1_000).await;
    let app = c.app(1, leader);
    let r = app
        .call(reqwest::Method::GET, "/v1/no-such-route", None)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let (status, text) = c.ops_text(leader, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(sample(&text, "alliance_is_leader"), Some(1), "{text}");
    let answers = "alliance_api_responses_total";
    assert_eq!(
        sample(
            &text,
            &format!("{answers}{{method=\"GET\",route=\"unmatched\",status=\"404\"}}")
        ),
        Some(1),
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("{answers}{{method=\"POST\",route=\"/v1/accounts\",status=\"200\"}}")
        ) >= Some(1),
        "{text}"
    );
    assert!(sample(&text, "alliance_raft_term") >= Some(1), "{text}");
    // A node holds more than a megabyte and less than its machine.
    let rss = sample(&text, "process_resident_memory_bytes").expect("rss");
    assert!((1 << 20..1 << 40).contains(&rss), "{text}");
    // Far below the default soft limit: the allocator holds what it frees.
    let limit = sample(&text, "alliance_memory_soft_limit_bytes");
    assert_eq!(limit, Some(MEMORY_SOFT_LIMIT_MB << 20), "{text}");
    assert!(rss < MEMORY_SOFT_LIMIT_MB << 20, "{text}");
    assert_eq!(
        sample(&text, "alliance_memory_above_soft_limit"),
        Some(0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "alliance_memory_purges_total"),
        Some(0),
        "{text}"
    );
    // Seeding proposed entries here, the leader: counted, timed, durable.
    assert!(
        sample(&text, "alliance_proposals_committed_total") >= Some(3),
        "{text}"
    );
    assert!(
        sample(&text, "alliance_proposal_duration_seconds_count") >= Some(3),
        "{text}"
    );
    assert!(
        sample(&text, "alliance_log_fsync_duration_seconds_count") >= Some(1),
        "{text}"
    );
    assert!(
        sample(&text, "alliance_leader_changes_total") >= Some(1),
        "{text}"
    );
    let expiry = sample_signed(&text, "alliance_certificate_expiry_seconds{cert=\"node\"}");
    assert!(expiry.is_some_and(|s| s > 86_400), "{text}");
    for org in ["org1", "org2", "org3"] {
        let ca = format!("alliance_certificate_expiry_seconds{{cert=\"ca\",org=\"{org}\"}}");
        assert!(
            sample_signed(&text, &ca).is_some_and(|s| s > 86_400),
            "{text}"
        );
    }
    // Each peer's certificate, once the head exchange has seen it.
    let peer = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let gauge = format!("alliance_certificate_expiry_seconds{{cert=\"peer\",node=\"{peer}\"}}");
    let text = eventually("the leader to gauge a peer's certificate", || async {
        let (_, text) = c.ops_text(leader, "/metrics").await?;
        sample_signed(&text, &gauge)
            .is_some_and(|s| s > 86_400)
            .then_some(text)
    })
    .await;
    promtool_accepts(&text).await;
    for id in c.ids().into_iter().filter(|id| *id != leader) {
        let text = eventually("a follower to know the leader", || async {
            let (_, text) = c.ops_text(id, "/metrics").await?;
            (sample(&text, "alliance_has_leader") == Some(1)).then_some(text)
        })
        .await;
        assert_eq!(sample(&text, "alliance_is_leader"), Some(0), "{text}");
        promtool_accepts(&text).await;
    }
}

/// A node above `limits.memory_soft_limit_mb` (here every node, at 1 MiB)
/// has its allocator purge the freed memory it holds, says so in its
/// metrics, and serves on; purges that leave it above the limit (its
/// memory in use is) back its checks off to one a second, and it says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_above_its_memory_soft_limit_purges_freed_memory_and_serves_on() {
    let mut opts = options(RaftTuning::default());
    opts.limits.memory_soft_limit_mb = 1;
    let c = Cluster::start_with(opts).await;
    c.seed(1_000).await;
    let leader = c.wait_for_leader().await;
    let r = transfer_until_ok(&c.app(1, leader), "org1.held", "org1.ops", "org2.ops", 5).await;
    assert_eq!(r.body["state"], "posted", "{}", r.body);
    for id in c.ids() {
        let purges = |text: &str| sample(text, "alliance_memory_purges_total");
        let (_, first) = c.ops_text(id, "/metrics").await.expect("metrics");
        assert_eq!(
            sample(&first, "alliance_memory_soft_limit_bytes"),
            Some(1 << 20),
            "{first}"
        );
        assert_eq!(
            sample(&first, "alliance_memory_above_soft_limit"),
            Some(1),
            "{first}"
        );
        let before = purges(&first).expect("the purges counter");
        assert!(before >= 1, "{first}");
        eventually("the node to purge again", || async {
            let (_, text) = c.ops_text(id, "/metrics").await?;
            (purges(&text)? > before).then_some(())
        })
        .await;
        eventually(
            "the node to log that its memory in use is above",
            || async {
                let log = std::fs::read_to_string(&c.layout.node(id).log).ok()?;
                log.contains("resident memory stays above limits.memory_soft_limit_mb")
                    .then_some(())
            },
        )
        .await;
        // Backed off: a purge a second at most, while it serves on.
        let (_, text) = c.ops_text(id, "/metrics").await.expect("metrics");
        let in_use = "alliance_memory_in_use_above_soft_limit";
        assert_eq!(sample(&text, in_use), Some(1), "{text}");
        let (before, since) = (purges(&text).expect("purges"), std::time::Instant::now());
        let t = format!("org1.held-{id}");
        let r = transfer_until_ok(&c.app(1, id), &t, "org1.ops", "org2.ops", 5).await;
        assert_eq!(r.body["state"], "posted", "{}", r.body);
        let (_, text) = c.ops_text(id, "/metrics").await.expect("metrics");
        let more = purges(&text).expect("purges") - before;
        assert!(
            more <= since.elapsed().as_secs() + 2,
            "{more} purges: {text}"
        );
    }
}

/// A sample's value that may be negative.
fn sample_signed(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// `promtool check metrics` (Debian's `prometheus` package) accepts `text`.
async fn promtool_accepts(text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut check = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install --no-install-recommends prometheus)");
    let mut stdin = check.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = check.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_probes_say_whether_each_node_serves() {
    let mut c = Cluster::start().await;
    c.wait_for_leader().await;
    for id in c.ids() {
        let (status, body) = eventually("the node to be ready", || async {
            probe(&c, id, "/readyz").await.filter(|(s, _)| *s == 200)
        })
        .await;
        assert_eq!((status, &body["ready"]), (200, &true.into()), "{body}");
        assert!(body["leader"].is_u64(), "{body}");
        assert_eq!(body["reasons"], serde_json::json!([]), "{body}");
        let (status, body) = probe(&c, id, "/livez").await.unwrap();
        assert_eq!((status, body), (200, serde_json::json!({"live": true})));
        let (status, body) = probe(&c, id, "/v1/cluster").await.unwrap();
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &"route_not_found".into())
        );
    }

    // Without a majority the last node is live but not ready, and says why.
    let ids = c.ids();
    c.kill(ids[0]);
    c.kill(ids[1]);
    let (_, body) = eventually("the last node to find no leader", || async {
        probe(&c, ids[2], "/readyz")
            .await
            .filter(|(s, _)| *s == 503)
    })
    .await;
    assert_eq!(body["ready"], false, "{body}");
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("a majority of nodes may be unreachable"),
        "{body}"
    );
    assert_eq!(probe(&c, ids[2], "/livez").await.unwrap().0, 200);

    // Back to a majority: ready again. The returning node writes its log
    // as JSON lines, and no node's log file holds terminal colour codes.
    let back = c.layout.node(ids[0]).clone();
    let json_log = back.log.with_extension("json.log");
    let node = std::process::Command::new(env!("CARGO_BIN_EXE_alliance"))
        .args(["--log-format", "json", "node", "--config"])
        .arg(&back.config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&json_log).unwrap())
        .spawn()
        .unwrap();
    let node = KilledOnDrop(node);
    eventually("the majority to be back", || async {
        probe(&c, ids[2], "/readyz")
            .await
            .filter(|(s, _)| *s == 200)
    })
    .await;
    drop(node);
    let lines = std::fs::read_to_string(&json_log).unwrap();
    assert!(lines.contains("node started"), "{lines}");
    for line in lines.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    for id in &ids {
        let text = std::fs::read_to_string(&c.layout.node(*id).log).unwrap();
        assert!(
            !text.is_empty() && !text.contains('\u{1b}'),
            "node {id}'s log"
        );
    }
}

/// A node started outside the harness, SIGKILLed and reaped when dropped,
/// also when the test fails before it is done with it.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `alliance node --config CONFIG` to its exit; returns its stderr.
async fn node_exit_message(config: &std::path::Path) -> String {
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_alliance"))
        .args(["node", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let status = crate::harness::wait_child("the second node to exit", &mut node).await;
    let message = std::fs::read_to_string(err.path()).unwrap();
    assert!(!status.success(), "{message}");
    message
}

/// A second process started on a running node's config is refused, and
/// says what is in use and which config field set it.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_node_on_a_running_nodes_config_says_what_is_in_use() {
    let mut c = Cluster::start().await;
    c.wait_for_leader().await;
    let node = c.layout.node(1).clone();
    let message = node_exit_message(&node.config).await;
    assert!(message.contains("data_dir"), "{message}");
    assert!(message.contains("in use by another process"), "{message}");

    // Stopped, on its own data, while another process holds its API port.
    c.kill(1);
    let api = node.api_url.trim_start_matches("https://").to_owned();
    let _squatter = std::net::TcpListener::bind(&api).unwrap();
    let message = node_exit_message(&node.config).await;
    assert!(
        message.contains("the API listener cannot bind"),
        "{message}"
    );
    assert!(
        message.contains("api_listen, or api_addr in genesis"),
        "{message}"
    );
    assert!(
        message.contains("another process listens there"),
        "{message}"
    );
}

/// A node given the wrong key or another role's certificate refuses to
/// start, and says what is wrong with which file.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_the_wrong_key_or_certificate_says_which_file() {
    let c = Cluster::start().await;
    let node = c.layout.node(1).clone();
    let app = c.layout.org("org1").identities["app"].clone();
    let dir = tempfile::tempdir().unwrap();
    let with_tls = |name: &str, cert: &std::path::Path, key: &std::path::Path| {
        let mut config: toml::Table = std::fs::read_to_string(&node.config)
            .unwrap()
            .parse()
            .unwrap();
        let tls = config["tls"].as_table_mut().unwrap();
        tls.insert("cert".into(), cert.to_str().unwrap().into());
        tls.insert("key".into(), key.to_str().unwrap().into());
        let path = dir.path().join(name);
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        path
    };
    let own: toml::Table = std::fs::read_to_string(&node.config)
        .unwrap()
        .parse()
        .unwrap();
    let node_cert = std::path::PathBuf::from(own["tls"]["cert"].as_str().unwrap());

    let message = node_exit_message(&with_tls("wrong-key.toml", &node_cert, &app.key)).await;
    assert!(
        message.contains(&format!(
            "the key {} is not the private key of the certificate {}",
            app.key.display(),
            node_cert.display()
        )),
        "{message}"
    );

    let message = node_exit_message(&with_tls("app-cert.toml", &app.cert, &app.key)).await;
    assert!(
        message.contains(&format!(
            "{} is the `app` certificate \"app\" of org1; tls.cert must be a `node` certificate",
            app.cert.display()
        )),
        "{message}"
    );
    assert!(message.contains("--role node --name 1"), "{message}");
}

/// `GET /v1/cluster` says of each peer whether it answers, since when it
/// has not, and how far it has applied; a dead peer stops being reachable,
/// and one that never answered is listed too.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_status_says_which_peers_answer() {
    let mut c = Cluster::start().await;
    let leader = c.wait_for_leader().await;
    let victim = *c.ids().iter().find(|id| **id != leader).unwrap();
    let peer_of = |status: &serde_json::Value, id: u64| {
        status["replicas"]["peers"]
            .as_array()?
            .iter()
            .find(|p| p["node"] == id)
            .cloned()
    };
    eventually("every peer reachable, with its applied index", || async {
        let status = c.status(leader).await?;
        c.ids()
            .into_iter()
            .filter(|id| *id != leader)
            .all(|id| {
                peer_of(&status, id).is_some_and(|p| {
                    p["reachable"] == true
                        && p["applied_index"].as_u64() >= Some(1)
                        && p["last_contact_ms_ago"].as_u64().is_some()
                        && p["clock_offset_ms"].as_i64().is_some()
                })
            })
            .then_some(())
    })
    .await;
    // The nodes share this machine's clock: within the round trip.
    let status = c.status(leader).await.unwrap();
    for p in status["replicas"]["peers"].as_array().unwrap() {
        let offset = p["clock_offset_ms"].as_i64().unwrap();
        assert!(offset.abs() < 1_000, "{p}");
    }
    assert!(status["replicas"]["clock_off"].is_null(), "{status}");
    let (_, text) = c.ops_text(leader, "/metrics").await.unwrap();
    assert_eq!(
        sample(&text, "alliance_clock_offset_exceeded"),
        Some(0),
        "{text}"
    );

    c.kill(victim);
    let gone = eventually("the killed peer to be unreachable", || async {
        let status = c.status(leader).await?;
        peer_of(&status, victim).filter(|p| p["reachable"] == false)
    })
    .await;
    assert!(gone["last_contact_ms_ago"].as_u64().is_some(), "{gone}");
    let (_, text) = c.ops_text(leader, "/metrics").await.unwrap();
    let metric = |id: u64| sample(&text, &format!("alliance_peer_reachable{{peer=\"{id}\"}}"));
    assert_eq!(metric(victim), Some(0), "{text}");
    let alive = c
        .ids()
        .into_iter()
        .find(|id| ![leader, victim].contains(id));
    assert_eq!(metric(alive.unwrap()), Some(1), "{text}");

    // A node restarted while the victim is down has never heard from it:
    // listed all the same, with no head and no last contact.
    c.kill(leader);
    c.restart(leader);
    let never = eventually("the restarted node to list the dead peer", || async {
        let status = c.status(leader).await?;
        peer_of(&status, victim).filter(|p| p["reachable"] == false)
    })
    .await;
    assert!(never["height"].is_null(), "{never}");
    assert!(never["last_contact_ms_ago"].is_null(), "{never}");
}

/// A data directory is bound to the genesis file it was made with: started
/// with another one, the node refuses and says what to do instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_with_another_genesis_refuses_and_names_the_fix() {
    let mut c = Cluster::start().await;
    c.seed(ISSUED).await;
    c.kill(1);
    let node = c.layout.node(1).clone();
    let config: toml::Table = std::fs::read_to_string(&node.config)
        .unwrap()
        .parse()
        .unwrap();
    let genesis = std::path::PathBuf::from(config["genesis"].as_str().unwrap());
    let original = std::fs::read_to_string(&genesis).unwrap();
    // The obvious way to add an organization: edit genesis.
    std::fs::write(&genesis, format!("{original}\n# org4 joins\n")).unwrap();
    let message = node_exit_message(&node.config).await;
    assert!(
        message.contains("this data directory was made with the genesis file"),
        "{message}"
    );
    assert!(message.contains("alliance client gov propose"), "{message}");
    // With its own genesis back, it starts and serves what it had.
    std::fs::write(&genesis, original).unwrap();
    c.restart(1);
    eventually("node 1 to serve again", || async {
        c.balance(1, 1, "org1.ops", true).await
    })
    .await;
}

/// A peer that runs another genesis file is named, with the reason, in
/// `/v1/cluster` and in the log.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_with_another_genesis_is_named_with_the_reason() {
    let mut c = Cluster::start().await;
    c.kill(3);
    let node = c.layout.node(3).clone();
    let mut config: toml::Table = std::fs::read_to_string(&node.config)
        .unwrap()
        .parse()
        .unwrap();
    // Node 3 starts over on a genesis file of its own.
    let data_dir = std::path::PathBuf::from(config["data_dir"].as_str().unwrap());
    std::fs::remove_dir_all(&data_dir).unwrap();
    let genesis = std::path::PathBuf::from(config["genesis"].as_str().unwrap());
    let other = genesis.with_file_name("other-genesis.toml");
    let edited = format!("{}\n# edited\n", std::fs::read_to_string(&genesis).unwrap());
    std::fs::write(&other, edited).unwrap();
    config.insert("genesis".into(), other.to_str().unwrap().into());
    std::fs::write(&node.config, toml::to_string(&config).unwrap()).unwrap();
    c.restart(3);
    let why = eventually("node 1 to say why node 3 refuses it", || async {
        let status = c.status(1).await?;
        let peer = status["replicas"]["peers"]
            .as_array()?
            .iter()
            .find(|p| p["node"] == 3)?
            .clone();
        peer["refused"].as_str().map(str::to_owned)
    })
    .await;
    assert!(why.contains("different genesis file"), "{why}");
    let log = std::fs::read_to_string(&c.layout.node(1).log).unwrap();
    assert!(log.contains("peer 3 refuses this node"), "{log}");
}

/// `/v1/cluster` shows when this node's, each peer's and the caller's
/// certificates expire; a node whose certificate has days left warns in
/// its log, and its peers show it.
#[tokio::test(flavor = "multi_thread")]
async fn certificate_expiry_is_shown_and_a_short_one_is_warned_about() {
    let mut c = Cluster::start().await;
    let status = c.status(1).await.unwrap();
    let days = |v: &serde_json::Value| v["days_left"].as_i64().unwrap_or(-1);
    assert!(days(&status["certificate"]) > 30, "{status}");
    assert!(days(&status["caller_certificate"]) > 30, "{status}");

    // Node 2 comes back with a node certificate valid for 5 days.
    c.kill(2);
    let node = c.layout.node(2).clone();
    let dir = tempfile::tempdir().unwrap();
    use_new_node_certificate(&c, 2, dir.path(), 5);
    c.restart(2);

    let short = eventually("node 1 to see node 2's new certificate", || async {
        let status = c.status(1).await?;
        let peers = status["replicas"]["peers"].as_array()?.clone();
        let peer = peers.into_iter().find(|p| p["node"] == 2)?;
        let left = peer["certificate"]["days_left"].as_i64()?;
        (left < 30).then_some(left)
    })
    .await;
    assert!((3..=5).contains(&short), "{short}");
    let own = c.status(2).await.unwrap();
    assert!((3..=5).contains(&days(&own["certificate"])), "{own}");
    let warned = eventually("node 2 to warn of its certificate", || async {
        let log = std::fs::read_to_string(&node.log).ok()?;
        log.lines()
            .find(|l| l.contains("this node's certificate (node 2) expires in"))
            .map(str::to_owned)
    })
    .await;
    assert!(
        warned.contains("WARN") && warned.contains("renew"),
        "{warned}"
    );
    eventually("node 1 to warn of node 2's certificate", || async {
        let log = std::fs::read_to_string(&c.layout.node(1).log).ok()?;
        log.contains("node 2's certificate expires in")
            .then_some(())
    })
    .await;
}

/// Issues node `id` a new certificate valid for `days`, by its
/// organization's CA, under `dir` (the script never overwrites a key);
/// returns the certificate's and the key's paths.
fn issue_node_certificate(
    c: &Cluster,
    id: u64,
    dir: &std::path::Path,
    days: u32,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let org = c.layout.node(id).org.clone();
    let pki = dir.join("pki");
    std::fs::create_dir_all(pki.join(&org)).unwrap();
    for f in ["ca.crt", "ca.key"] {
        let from = c.layout.dir.join("pki").join(&org).join(f);
        std::fs::copy(from, pki.join(&org).join(f)).unwrap();
    }
    let days = days.to_string();
    crate::harness::issue_node_cert_with(&pki, org.as_str(), id, &["--days", &days]);
    (
        pki.join(&org).join(format!("node-{id}.crt")),
        pki.join(&org).join(format!("node-{id}.key")),
    )
}

/// Node `id`'s config's certificate and key paths.
pub(crate) fn node_tls_paths(c: &Cluster, id: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let config: toml::Table = std::fs::read_to_string(&c.layout.node(id).config)
        .unwrap()
        .parse()
        .unwrap();
    let path = |k: &str| std::path::PathBuf::from(config["tls"][k].as_str().unwrap());
    (path("cert"), path("key"))
}

/// Issues node `id` a new certificate valid for `days` and points its
/// config at it.
fn use_new_node_certificate(c: &Cluster, id: u64, dir: &std::path::Path, days: u32) {
    let node = c.layout.node(id).clone();
    let (cert, key) = issue_node_certificate(c, id, dir, days);
    let mut config: toml::Table = std::fs::read_to_string(&node.config)
        .unwrap()
        .parse()
        .unwrap();
    let tls = config["tls"].as_table_mut().unwrap();
    tls.insert("cert".into(), cert.to_str().unwrap().into());
    tls.insert("key".into(), key.to_str().unwrap().into());
    std::fs::write(&node.config, toml::to_string(&config).unwrap()).unwrap();
}

/// A renewed node certificate is picked up on SIGHUP, without a restart:
/// new handshakes present it, the node says so, and it keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_takes_its_renewed_certificate_on_sighup() {
    let c = Cluster::start().await;
    c.seed(ISSUED).await;
    let days = |v: &serde_json::Value| v["certificate"]["days_left"].as_i64().unwrap_or(-1);
    assert!(days(&c.status(2).await.unwrap()) > 30);
    // Renewed in place: the new certificate and key where the config
    // names them.
    let dir = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = issue_node_certificate(&c, 2, dir.path(), 9);
    let (cert, key) = node_tls_paths(&c, 2);
    std::fs::copy(new_cert, cert).unwrap();
    std::fs::copy(new_key, key).unwrap();
    assert!(crate::harness::send_signal(c.pid(2), "-HUP"));
    eventually("node 2 to present its renewed certificate", || async {
        let left = days(&c.status(2).await?);
        (7..=9).contains(&left).then_some(())
    })
    .await;
    // A new client's handshake sees it too.
    let roots = alliance::identity::roots_from_files(&c.layout.ca_certs()).unwrap();
    let id = &c.layout.org("org2").identities["app"];
    let tls = alliance::config::TlsFiles {
        cert: id.cert.clone(),
        key: id.key.clone(),
    };
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(alliance::identity::client_config(roots, &tls).unwrap())
        .tls_info(true)
        .build()
        .unwrap();
    let url = format!("https://{}/v1/cluster", c.net.api_addr(2));
    let resp = http.get(url).send().await.unwrap();
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .unwrap()
        .to_vec();
    let left = alliance::identity::Expiry::now(&der).unwrap().days_left;
    assert!((7..=9).contains(&left), "{left}");
    // It still serves, and still replicates.
    let r = transfer_until_ok(&c.app(1, 2), "org1.after-hup", "org1.ops", "org2.ops", 1).await;
    assert!(r.is_success());
    let log = std::fs::read_to_string(&c.layout.node(2).log).unwrap();
    assert!(
        log.contains("SIGHUP: the node presents its reloaded certificate"),
        "{log}"
    );
    // An app certificate in its place is refused; the node keeps its own.
    let (cert, key) = node_tls_paths(&c, 2);
    std::fs::copy(&id.cert, cert).unwrap();
    std::fs::copy(&id.key, key).unwrap();
    assert!(crate::harness::send_signal(c.pid(2), "-HUP"));
    eventually("node 2 to refuse the app certificate", || async {
        let log = std::fs::read_to_string(&c.layout.node(2).log).ok()?;
        log.contains("SIGHUP: kept the certificate in use")
            .then_some(())
    })
    .await;
    assert!((7..=9).contains(&days(&c.status(2).await.unwrap())));
}
