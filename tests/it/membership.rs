//! Nodes join by vote: the leader adds a node the registry gained as a
//! learner, then as a voter once it has caught up.

use std::process::Child;

use alliance::client::ApiClient;
use serde_json::json;

use crate::gov::{admin, pass, propose, vote, NewOrg};
use crate::harness::{eventually, ok, transfer_until_ok, Cluster, REQUEST_TIMEOUT};

/// Transfers acknowledged while node 4 joins.
const FLOWING: u64 = 200;

/// A node process outside the harness's, killed when dropped.
struct Extra(Child);

impl Drop for Extra {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Node 4 of a new org4 is added by two of three votes while transfers
/// flow (org4, pending, is not counted yet): it joins
/// from genesis and its join bundle, becomes a voter, and its chain equals
/// the others'. Then it replaces node 1: node 1 is removed by vote and from
/// Raft, and without it nodes 2, 3 and 4 commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_added_by_vote_catches_up_votes_and_replaces_another() {
    let mut c = Cluster::start().await;
    c.seed(1_000_000).await;
    let org4 = NewOrg::make(&c, "org4");
    issue_node(&c, "org4", 4);
    let pem = std::fs::read_to_string(&org4.ca).unwrap();
    pass(&c, json!({"add_org": {"name": "org4", "ca_certs": [pem]}})).await;
    let admin4 = org4.client(&c, "admin", 1);

    // Transfers flow while node 4 is voted in and joins.
    let flowing = {
        let app = c.app(1, 2);
        tokio::spawn(async move {
            for i in 0..FLOWING {
                let id = format!("org1.flow-{i}");
                let r = transfer_until_ok(&app, &id, "org1.ops", "org2.ops", 1).await;
                assert!(r.is_success(), "{}", r.body);
            }
        })
    };
    let ports = alliance::demo::free_ports(2).unwrap();
    let (api, raft) = (ports[0].to_string(), ports[1].to_string());
    let cert = std::fs::read_to_string(org4.pki.join("node-4.crt")).unwrap();
    // A member cannot propose a node of another organization, or under
    // another id, with this certificate; nor one its own CA minted in
    // another organization's name.
    let minted = mint_foreign_node_cert(&c, "org1", "org4", 4);
    for (id, org, cert) in [(4, "org2", &cert), (7, "org4", &cert), (4, "org4", &minted)] {
        let wrong = json!({"add_node": {"id": id, "org": org, "api_addr": api,
            "raft_addr": raft, "cert": cert}});
        let r = admin(&c, 1, 1).propose(&wrong).await.unwrap();
        assert_eq!(
            (r.status, r.code()),
            (400, Some("invalid_node_cert")),
            "{}",
            r.body
        );
    }
    let action = json!({"add_node": {"id": 4, "org": "org4", "api_addr": api,
        "raft_addr": raft, "cert": cert}});
    // Org4 joins first: a node is added in its name only with its own
    // approval, and a majority of the four members.
    ok(admin4
        .call(reqwest::Method::POST, "/v1/gov/join", Some(&json!({})))
        .await);
    let proposal = propose(&c, 1, action).await["id"].as_u64().unwrap();
    vote(&c, 1, 1, proposal, true).await;
    let r = vote(&c, 2, 2, proposal, true).await;
    assert_eq!(r.body["state"], "open", "org4 has not approved: {}", r.body);
    let shown = ok(admin4.proposal(proposal).await);
    let digest = shown.body["digest"].as_str().unwrap().to_owned();
    let r = ok(admin4.ballot(proposal, true, &digest).await);
    assert_eq!(r.body["state"], "executed", "{}", r.body);

    // Its admin exports the join bundle; node 4 starts from it.
    let bundle = admin4.join_bundle(proposal).await.unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle_path = dir.path().join("join.json");
    std::fs::write(&bundle_path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let config = dir.path().join("node4.toml");
    let text = format!(
        "id = 4\ndata_dir = {:?}\ngenesis = {:?}\njoin = {:?}\n[tls]\ncert = {:?}\nkey = {:?}\n",
        dir.path().join("data"),
        c.layout.genesis,
        bundle_path,
        org4.pki.join("node-4.crt"),
        org4.pki.join("node-4.key"),
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("node4.log");
    let node4 = alliance::demo::DemoNode {
        id: 4,
        org: "org4".into(),
        api_url: format!("https://{api}"),
        peer_url: format!("https://{raft}"),
        public_url: String::new(),
        ops_url: String::new(),
        config,
        data_dir: dir.path().join("data"),
        log: log.clone(),
    };
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_alliance"));
    let _node4 = Extra(alliance::demo::spawn_node(exe, &node4).unwrap());
    eventually("node 4 to be a voter", || async {
        let status = c.status(1).await?;
        let voters = status["voters"].as_array()?;
        voters.contains(&json!(4)).then_some(())
    })
    .await;
    flowing.await.unwrap();

    // Its chain is the others': the same block at node 1's height.
    let mut cas = c.layout.ca_certs();
    cas.push(org4.ca.clone());
    let roots = alliance::identity::roots_from_files(&cas).unwrap();
    let org1_app = &c.layout.org("org1").identities["app"];
    let tls = alliance::config::TlsFiles {
        cert: org1_app.cert.clone(),
        key: org1_app.key.clone(),
    };
    let app1_at4 = ApiClient::new(&node4.api_url, roots, &tls, REQUEST_TIMEOUT).unwrap();
    let height = c.status(1).await.unwrap()["height"].as_u64().unwrap();
    let block = format!("/v1/blocks/{height}");
    let at1 = ok(c.app(1, 1).call(reqwest::Method::GET, &block, None).await).body;
    eventually("node 4 to have node 1's block", || async {
        let r = app1_at4
            .call(reqwest::Method::GET, &block, None)
            .await
            .ok()?;
        (r.is_success() && r.body["hash"] == at1["hash"]).then_some(())
    })
    .await;

    // Node 4 replaces node 1: removed by vote, then from Raft; its peers
    // refuse it from then on, on connections it opened before too, and
    // nodes 2, 3 and 4 commit without it. The probe, node 1's certificate
    // and headers, keeps one connection to node 2 busy throughout.
    let probe = crate::attest::peer_as_node1(&c).await;
    let hello2 = format!("{}/peer/v1/hello", c.layout.node(2).peer_url);
    let hello = |probe: reqwest::Client, url: String| async move {
        let r = probe.post(url).send().await.ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    };
    assert_eq!(
        hello(probe.clone(), hello2.clone()).await.map(|(s, _)| s),
        Some(200)
    );
    let last = std::sync::Arc::new(std::sync::Mutex::new(None));
    let probing = tokio::spawn({
        let (probe, url, last) = (probe.clone(), hello2.clone(), last.clone());
        async move {
            loop {
                let answer = hello(probe.clone(), url.clone()).await;
                *last.lock().unwrap() = answer;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    });
    let proposal = propose(&c, 2, json!({"remove_node": {"id": 1}})).await["id"]
        .as_u64()
        .unwrap();
    for org in [2, 3] {
        vote(&c, org, org as u64, proposal, true).await;
    }
    let r = vote(&c, 1, 1, proposal, true).await;
    assert_eq!(r.body["state"], "executed", "{}", r.body);
    eventually("node 1 to leave Raft", || async {
        let status = c.status(2).await?;
        (status["voters"] == json!([2, 3, 4])).then_some(())
    })
    .await;
    eventually("node 2 to stop talking to node 1", || async {
        let status = c.status(2).await?;
        let peers = status["replicas"]["peers"].as_array()?.clone();
        let ids: Vec<u64> = peers.iter().filter_map(|p| p["node"].as_u64()).collect();
        (ids == [3, 4]).then_some(())
    })
    .await;
    eventually("node 2 to refuse node 1 on its open connection", || async {
        let answer = last.lock().unwrap().clone()?;
        (answer.0 == 403 && answer.1.contains("serves member nodes only")).then_some(())
    })
    .await;
    probing.abort();
    let again = admin(&c, 2, 2)
        .propose(&json!({"remove_node": {"id": 1}}))
        .await
        .unwrap();
    assert_eq!((again.status, again.code()), (404, Some("node_not_found")));
    let too_few = admin(&c, 2, 2)
        .propose(&json!({"remove_node": {"id": 2}}))
        .await
        .unwrap();
    assert_eq!(
        (too_few.status, too_few.code()),
        (422, Some("too_few_nodes"))
    );
    c.kill(1);
    let r = transfer_until_ok(
        &c.app(2, 2),
        "org2.after-4",
        "org2.ops",
        "org3.ops",
        FLOWING,
    )
    .await;
    assert!(r.is_success(), "{}", r.body);
    let balance = eventually("node 4 to apply every acknowledged transfer", || async {
        let r = app1_at4.account("org1.ops", true).await.ok()?;
        let expected = (1_000_000 - FLOWING).to_string();
        (r.is_success() && r.body["balance"] == json!(expected)).then_some(r.body)
    })
    .await;
    assert_eq!(balance["owner"], "org1");
}

/// Runs `alliance ARGS`: whether it succeeded, and what it printed.
fn alliance(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let (code, text) = crate::harness::run_cli(args);
    (code == Some(0), text)
}

/// `alliance backup` with client config `config` into `out`.
fn backup(config: &std::path::Path, out: &std::path::Path) -> (bool, String) {
    alliance(&[
        "backup".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ])
}

/// `alliance restore` of `file` into the node of `config`.
fn restore(file: &std::path::Path, config: &std::path::Path) -> (bool, String) {
    alliance(&[
        "restore".as_ref(),
        "--backup".as_ref(),
        file.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ])
}

/// Node `id` of `org` as added by vote, at `ports` (API, Raft), with its
/// config at `config` and its data and log in `dir`.
fn joined_node(
    dir: &std::path::Path,
    id: u64,
    org: &str,
    ports: &[std::net::SocketAddr],
    config: std::path::PathBuf,
) -> alliance::demo::DemoNode {
    alliance::demo::DemoNode {
        id,
        org: org.into(),
        api_url: format!("https://{}", ports[0]),
        peer_url: format!("https://{}", ports[1]),
        public_url: String::new(),
        ops_url: String::new(),
        config,
        data_dir: dir.join(format!("node{id}-data")),
        log: dir.join(format!("node{id}.log")),
    }
}

/// Starts a node process, killed when the guard is dropped.
fn start(node: &alliance::demo::DemoNode) -> Extra {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_alliance"));
    Extra(alliance::demo::spawn_node(exe, node).unwrap())
}

/// Writes a config for a node added by vote, in `dir`.
fn joining_config(
    c: &Cluster,
    dir: &std::path::Path,
    id: u64,
    org: &str,
    join: &std::path::Path,
) -> std::path::PathBuf {
    let pki = c.layout.dir.join("pki").join(org);
    let config = dir.join(format!("node{id}.toml"));
    let text = format!(
        "id = {id}\ndata_dir = {:?}\ngenesis = {:?}\njoin = {:?}\n[tls]\ncert = {:?}\nkey = {:?}\n",
        dir.join(format!("node{id}-data")),
        c.layout.genesis,
        join,
        pki.join(format!("node-{id}.crt")),
        pki.join(format!("node-{id}.key")),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Node 3's disk dies. Restoring a backup into node 3 is refused; node 5
/// of the same organization replaces it in one vote, is restored from a
/// backup made before the loss, joins, catches up and votes; node 3 is then
/// removed from Raft and cannot come back; every acknowledged transfer is
/// there.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_node_is_replaced_from_a_backup_under_a_new_id() {
    let mut c = Cluster::start().await;
    c.seed(1_000_000).await;
    let pay = |prefix: &'static str, via: u64| {
        let app = c.app(1, via);
        async move {
            for i in 0..10 {
                let id = format!("org1.{prefix}-{i}");
                transfer_until_ok(&app, &id, "org1.ops", "org2.ops", 1).await;
            }
        }
    };
    pay("before", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node3.backup");
    let clients = c.layout.dir.join("clients");
    let org3_admin = clients.join("org3-admin.toml");
    let (ok3, text) = backup(&org3_admin, &file);
    assert!(ok3, "{text}");
    let (again, text) = backup(&org3_admin, &file);
    assert!(!again && text.contains("not replaced"), "{text}");
    let org2_admin = clients.join("org2-admin.toml");
    let out = dir.path().join("other.backup");
    let (other, text) = backup(&org2_admin, &out);
    assert!(other, "org2's admin backs up its own node 2: {text}");
    pay("after", 2).await;

    // The disk dies; a restore into node 3 is refused.
    c.kill(3);
    std::fs::remove_dir_all(&c.layout.node(3).data_dir).unwrap();
    let in_place = joining_config(&c, dir.path(), 3, "org3", &dir.path().join("none.json"));
    let (restored, text) = restore(&file, &in_place);
    assert!(
        !restored && text.contains("node 3 is a genesis node"),
        "{text}"
    );

    // Node 5 replaces it: voted in, restored from the backup, started.
    issue_node(&c, "org3", 5);
    let pki = c.layout.dir.join("pki");
    let ports = alliance::demo::free_ports(2).unwrap();
    let cert = std::fs::read_to_string(pki.join("org3/node-5.crt")).unwrap();
    let action = json!({"replace_node": {"old": 3, "new": {"id": 5, "org": "org3",
        "api_addr": ports[0].to_string(), "raft_addr": ports[1].to_string(), "cert": cert}}});
    let added = propose(&c, 1, action).await["id"].as_u64().unwrap();
    vote(&c, 1, 1, added, true).await;
    vote(&c, 2, 2, added, true).await;
    // Org3's own approval, through another organization's node.
    let r = vote(&c, 3, 1, added, true).await;
    assert_eq!(r.body["state"], "executed", "{}", r.body);
    let join = dir.path().join("join5.json");
    let org1_admin = clients.join("org1-admin.toml");
    let (bundled, text) = alliance(&[
        "client".as_ref(),
        "--config".as_ref(),
        org1_admin.as_os_str(),
        "gov".as_ref(),
        "join-bundle".as_ref(),
        added.to_string().as_ref(),
        "--out".as_ref(),
        join.as_os_str(),
    ]);
    assert!(bundled, "{text}");
    let config5 = joining_config(&c, dir.path(), 5, "org3", &join);
    let (restored, text) = restore(&file, &config5);
    assert!(restored, "{text}");
    let (twice, text) = restore(&file, &config5);
    assert!(!twice && text.contains("not empty"), "{text}");
    let node5 = joined_node(dir.path(), 5, "org3", &ports, config5);
    let _node5 = start(&node5);
    eventually("node 5 to be a voter", || async {
        let status = c.status(1).await?;
        status["voters"]
            .as_array()?
            .contains(&json!(5))
            .then_some(())
    })
    .await;
    eventually("node 3 to leave Raft", || async {
        let status = c.status(1).await?;
        (status["voters"] == json!([1, 2, 5])).then_some(())
    })
    .await;

    // Node 3 cannot come back on a wiped disk.
    c.restart(3);
    let exit = c.wait_exit(3).await;
    assert!(!exit.success());
    let log = std::fs::read_to_string(&c.layout.node(3).log).unwrap();
    // Refused as removed, or (a peer that has not yet dropped it from its
    // peers) as a node that lost its storage: either way it stops.
    assert!(
        log.contains("node 3 was removed by vote") || log.contains("cannot rejoin under this id"),
        "{log}"
    );

    // Node 5 votes: without node 1, nodes 2 and 5 commit; it has every
    // acknowledged transfer.
    c.kill(1);
    transfer_until_ok(&c.app(1, 2), "org1.without-1", "org1.ops", "org2.ops", 1).await;
    let app1_at5 = c
        .layout
        .client_at("org1", "app", &node5.api_url, REQUEST_TIMEOUT)
        .unwrap();
    eventually("node 5 to have every acknowledged transfer", || async {
        let r = app1_at5.account("org1.ops", true).await.ok()?;
        (r.is_success() && r.body["balance"] == json!((1_000_000 - 21).to_string())).then_some(())
    })
    .await;
}

/// A node certificate that `issuer`'s CA signs in `victim`'s name (what a
/// hostile member holding its own CA key can make), as PEM.
fn mint_foreign_node_cert(c: &Cluster, issuer: &str, victim: &str, id: u64) -> String {
    let ca = c.layout.dir.join("pki").join(issuer);
    let dir = tempfile::tempdir().unwrap();
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    let script = r#"cd "$1" && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out k.pem 2>/dev/null &&
        openssl req -new -key k.pem -subj "/O=$3/OU=node/CN=$4" -out r.csr &&
        openssl x509 -req -in r.csr -CA "$2/ca.crt" -CAkey "$2/ca.key" -set_serial 4242 \
          -days 60 -extfile ext.cnf -out c.pem 2>/dev/null"#;
    let out = std::process::Command::new("sh")
        .args(["-c", script, "sh"])
        .args([dir.path().as_os_str(), ca.as_os_str()])
        .args([victim, &id.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.path().join("c.pem")).unwrap()
}

/// Issues node `id` of `org` a certificate with our script.
fn issue_node(c: &Cluster, org: &str, id: u64) {
    crate::harness::issue_node_cert(&c.layout.dir.join("pki"), org, id);
}

/// Node 4 of org1, voted in by org1 and org2 at free ports: its ports (API,
/// Raft) and the proposal's id.
async fn vote_in_node4_of_org1(c: &Cluster) -> (Vec<std::net::SocketAddr>, u64) {
    let cert = crate::harness::issue_node_cert(&c.layout.dir.join("pki"), "org1", 4);
    let ports = alliance::demo::free_ports(2).unwrap();
    let action = json!({"add_node": {"id": 4, "org": "org1", "api_addr": ports[0].to_string(),
        "raft_addr": ports[1].to_string(), "cert": cert}});
    let added = pass(c, action).await["id"].as_u64().unwrap();
    (ports, added)
}

/// The leader is SIGKILLed while node 4 is a learner that cannot catch up
/// (it is not started yet): the next leader makes it a voter once it runs.
/// Then the leader's own node is removed while writes flow through another
/// node: they fail for a while at most, and every acknowledged one is on
/// every remaining node.
#[tokio::test(flavor = "multi_thread")]
async fn membership_changes_survive_a_leader_crash_and_the_leaders_removal() {
    let mut c = Cluster::start().await;
    c.seed(1_000_000).await;
    let (ports, added) = vote_in_node4_of_org1(&c).await;
    eventually("node 4 to be a learner", || async {
        let status = c.status(1).await?;
        status["learners"]
            .as_array()?
            .contains(&json!(4))
            .then_some(())
    })
    .await;

    // The leader dies between the learner and voter steps.
    let leader = c.wait_for_leader().await;
    c.kill(leader);
    c.restart(leader);
    let dir = tempfile::tempdir().unwrap();
    let join = dir.path().join("join4.json");
    // Node 1 may be the restarted leader, not listening yet.
    let bundle = eventually("the join bundle", || async {
        admin(&c, 1, 1).join_bundle(added).await.ok()?.ok()
    })
    .await;
    std::fs::write(&join, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let node4 = joined_node(
        dir.path(),
        4,
        "org1",
        &ports,
        joining_config(&c, dir.path(), 4, "org1", &join),
    );
    let _node4 = start(&node4);
    eventually("node 4 to be a voter", || async {
        let status = c.status(1).await?;
        (status["voters"] == json!([1, 2, 3, 4])).then_some(())
    })
    .await;

    // The leader's own node is removed while writes flow through another.
    let leader = c.wait_for_leader().await;
    let via = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flowing = {
        let (app, stop) = (c.app(1, via), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0u32);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("org1.during-{i}");
                i += 1;
                match app.transfer(&id, "org1.ops", "org2.ops", 1).await {
                    Ok(r) if r.is_success() => acked.push(id),
                    _ => failed += 1,
                }
            }
            (acked, failed)
        })
    };
    let org = leader as usize;
    let removal = propose(&c, org, json!({"remove_node": {"id": leader}})).await["id"]
        .as_u64()
        .unwrap();
    let voters: Vec<usize> = (1..=3).filter(|o| *o != org).collect();
    vote(&c, org, leader, removal, true).await;
    let r = vote(&c, voters[0], voters[0] as u64, removal, true).await;
    assert_eq!(r.body["state"], "executed", "{}", r.body);
    let mut remaining: Vec<u64> = vec![1, 2, 3, 4];
    remaining.retain(|id| *id != leader);
    eventually("the leader's node to leave Raft", || async {
        let status = c.status(via).await?;
        (status["voters"] == json!(remaining)).then_some(())
    })
    .await;
    // Writes go on after it.
    transfer_until_ok(
        &c.app(1, via),
        "org1.after-removal",
        "org1.ops",
        "org2.ops",
        1,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = flowing.await.unwrap();
    eprintln!(
        "writes during the removal: {} acknowledged, {failed} failed",
        acked.len()
    );
    assert!(!acked.is_empty());
    let app1_at4 = c
        .layout
        .client_at("org1", "app", &node4.api_url, REQUEST_TIMEOUT)
        .unwrap();
    for id in &acked {
        for (node, client) in [(via, c.app(1, via)), (4, app1_at4.clone())] {
            let found = eventually(&format!("{id} on node {node}"), || async {
                let r = client.get_transfer(id).await.ok()?;
                r.is_success().then_some(r.body)
            })
            .await;
            assert_eq!(found["amount"], "1");
        }
    }
}

/// A joint configuration in flight when the leader dies: with both
/// followers frozen (SIGSTOP), the leader promotes node 4, which receives
/// the joint configuration that cannot commit; the leader is SIGKILLed and
/// the followers resume. Whoever leads next, the cluster converges to
/// voters 1, 2, 3 and 4.
#[tokio::test(flavor = "multi_thread")]
async fn a_joint_configuration_left_by_a_dead_leader_is_finished() {
    let mut c = Cluster::start().await;
    c.seed(1_000).await;
    let (ports, added) = vote_in_node4_of_org1(&c).await;
    let leader = c.wait_for_leader().await;
    eventually("node 4 to be a learner", || async {
        let status = c.status(leader).await?;
        status["learners"]
            .as_array()?
            .contains(&json!(4))
            .then_some(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let join = dir.path().join("join4.json");
    let bundle = admin(&c, 1, leader)
        .join_bundle(added)
        .await
        .unwrap()
        .unwrap();
    std::fs::write(&join, serde_json::to_vec(&bundle).unwrap()).unwrap();

    // The followers freeze; node 4 starts and catches up from the leader,
    // which promotes it: a joint configuration that cannot commit.
    let followers: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    for f in &followers {
        c.pause(*f);
    }
    let node4 = joined_node(
        dir.path(),
        4,
        "org1",
        &ports,
        joining_config(&c, dir.path(), 4, "org1", &join),
    );
    let _node4 = start(&node4);
    let app1_at4 = c
        .layout
        .client_at("org1", "app", &node4.api_url, REQUEST_TIMEOUT)
        .unwrap();
    eventually("node 4 to hold the joint configuration", || async {
        let status = app1_at4.cluster().await.ok()?.body;
        status["voters"]
            .as_array()?
            .contains(&json!(4))
            .then_some(())
    })
    .await;
    let at_leader = c.status(leader).await.unwrap();
    assert!(
        at_leader["commit_index"].as_u64() < at_leader["last_log_index"].as_u64(),
        "the joint configuration must not have committed: {at_leader}"
    );

    // The leader dies with it in flight; the followers resume.
    c.kill(leader);
    for f in &followers {
        c.resume(*f);
    }
    c.restart(leader);
    for node in c.ids() {
        eventually(&format!("node {node} to see voters 1, 2, 3, 4"), || async {
            let status = c.status(node).await?;
            (status["voters"] == json!([1, 2, 3, 4]) && status["learners"] == json!([]))
                .then_some(())
        })
        .await;
    }
    transfer_until_ok(&c.app(1, 1), "org1.after-joint", "org1.ops", "org2.ops", 1).await;
}
