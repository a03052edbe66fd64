//! Ledger semantics through the API on a real cluster: batches, precision,
//! two-phase transfers and their races, expiry, history, grants.

use serde_json::{json, Value};

use crate::harness::{eventually, ok, Cluster};

const ISSUED: u64 = 1_000_000;

fn t(id: &str, from: &str, to: &str, amount: u64) -> Value {
    json!({"id": id, "debit_account": from, "credit_account": to, "amount": amount})
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_are_atomic_or_per_item_and_amounts_keep_their_precision() {
    let c = Cluster::start().await;
    c.seed(ISSUED).await;
    let app1 = c.app(1, 2);

    // Atomic with one bad leg: nothing changes; every item says why.
    let bad = vec![
        t("org1.ab-1", "org1.ops", "org2.ops", 10),
        t("org1.ab-2", "org1.ops", "nobody", 5),
    ];
    let r = app1.batch(bad.clone(), true).await.unwrap();
    assert_eq!(
        (r.status, r.code()),
        (422, Some("batch_rejected")),
        "{}",
        r.body
    );
    assert_eq!(
        r.body["results"][0]["error"]["code"],
        "linked_transfer_failed"
    );
    assert_eq!(
        r.body["results"][1]["error"]["code"],
        "credit_account_not_found"
    );
    assert_eq!(app1.get_transfer("org1.ab-1").await.unwrap().status, 404);
    assert_eq!(
        c.balance(2, 2, "org2.ops", false).await.as_deref(),
        Some("0")
    );

    // Sent again, the refused batch gets the same answer (its refusals are
    // remembered under its ids), even sent as a plain batch.
    let r = app1.batch(bad.clone(), true).await.unwrap();
    assert_eq!((r.status, r.code()), (422, Some("batch_rejected")));
    let r = ok(app1.batch(bad, false).await);
    assert_eq!(
        r.body["results"][0]["error"]["code"], "linked_transfer_failed",
        "{}",
        r.body
    );

    // The same transfers under new ids, not atomic: each its own result.
    let plain = vec![
        t("org1.ab-3", "org1.ops", "org2.ops", 10),
        t("org1.ab-4", "org1.ops", "nobody", 5),
    ];
    let r = ok(app1.batch(plain, false).await);
    assert_eq!(r.body["results"][0]["ok"], true);
    assert_eq!(
        r.body["results"][1]["error"]["code"],
        "credit_account_not_found"
    );

    // A batch may ask for only its refused items, by index; through every
    // node, since a follower forwards the answer's shape with the batch.
    let mut moved = 0; // by this part, from org1.ops to org2.ops
    for node in c.ids() {
        let items = [
            t(&format!("org1.rf-{node}-0"), "org1.ops", "org2.ops", 1),
            t(&format!("org1.rf-{node}-1"), "org1.ops", "nobody", 1),
            t(&format!("org1.rf-{node}-2"), "org1.ops", "org2.ops", 2),
        ];
        let r = ok(c.app(1, node).batch_refused_only(&items, false).await);
        assert_eq!(r.body["applied"], 2, "{}", r.body);
        assert_eq!(r.body["results"], Value::Null, "{}", r.body);
        let refused = r.body["refused"].as_array().unwrap();
        assert_eq!(refused.len(), 1, "{}", r.body);
        assert_eq!(refused[0]["index"], 1);
        assert_eq!(refused[0]["id"], format!("org1.rf-{node}-1"));
        assert_eq!(refused[0]["error"]["code"], "credit_account_not_found");
        assert_eq!(
            ok(app1.get_transfer(&format!("org1.rf-{node}-2")).await).body["amount"],
            "2"
        );
        moved += 3;
    }
    // Atomic: 422, nothing applied, and only the item refused for its own
    // reason is listed (`batch_rejected` implies the linked failures).
    let r = app1
        .batch_refused_only(
            &[
                t("org1.ra-0", "org1.ops", "org2.ops", 1),
                t("org1.ra-1", "org1.ops", "nobody", 1),
            ],
            true,
        )
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (422, Some("batch_rejected")));
    assert_eq!(r.body["applied"], 0, "{}", r.body);
    assert_eq!(r.body["refused"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["refused"][0]["index"], 1);
    assert_eq!(r.body["refused"][0]["id"], "org1.ra-1");
    assert_eq!(
        r.body["refused"][0]["error"]["code"],
        "credit_account_not_found"
    );
    assert_eq!(app1.get_transfer("org1.ra-0").await.unwrap().status, 404);
    // A batch of one goes through group commit, and still answers as asked.
    let r = ok(app1
        .batch_refused_only(&[t("org1.ro-0", "org1.ops", "nobody", 1)], false)
        .await);
    assert_eq!(r.body["applied"], 0, "{}", r.body);
    assert_eq!(r.body["refused"][0]["id"], "org1.ro-0", "{}", r.body);
    // An unknown answer is refused before anything is applied.
    let body = json!({"transfers": [t("org1.rx-0", "org1.ops", "org2.ops", 1)], "answer": "some"});
    let r = app1
        .post_raw("/v1/transfers", body.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (400, Some("malformed_json")));
    assert_eq!(app1.get_transfer("org1.rx-0").await.unwrap().status, 404);
    // A batch of one is answered as a batch.
    let r = ok(app1
        .batch(vec![t("org1.one-0", "org1.ops", "org2.ops", 1)], false)
        .await);
    assert_eq!(
        r.body["results"][0]["transfer"]["id"], "org1.one-0",
        "{}",
        r.body
    );
    moved += 1;

    // A full batch of 8000 is one entry and commits whole.
    let big: Vec<Value> = (0..8000)
        .map(|i| t(&format!("org1.big-{i}"), "org1.ops", "org3.ops", 1 + i % 3))
        .collect();
    let sent: u64 = (0..8000u64).map(|i| 1 + i % 3).sum();
    let r = ok(c.app(1, 3).batch(big, true).await);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 8000);
    let heights: std::collections::BTreeSet<_> = results
        .iter()
        .map(|i| i["transfer"]["height"].as_u64())
        .collect();
    assert_eq!(heights.len(), 1, "one batch, one block");
    assert_eq!(
        c.balance(3, 1, "org3.ops", false).await,
        Some(sent.to_string())
    );
    let too_many: Vec<Value> = (0..8191)
        .map(|i| t(&format!("org1.tm-{i}"), "org1.ops", "org3.ops", 1))
        .collect();
    let r = app1.batch(too_many, false).await.unwrap();
    assert_eq!((r.status, r.code()), (400, Some("invalid_batch")));

    // 2^64-1 round-trips exactly, and a balance past 2^53 reads back exactly.
    let admin1 = c.client("org1", "admin", 1);
    let max = json!({"id": "org1.max-1", "debit_account": "org1.treasury", "credit_account": "org1.ops", "amount": "18446744073709551615"});
    let r = ok(admin1
        .call(reqwest::Method::POST, "/v1/transfers", Some(&max))
        .await);
    assert_eq!(r.body["amount"], "18446744073709551615");
    ok(admin1
        .transfer("org1.max-2", "org1.treasury", "org1.ops", u64::MAX)
        .await);
    let expected = u128::from(ISSUED) + 2 * u128::from(u64::MAX) - 10 - moved - u128::from(sent);
    for node in c.ids() {
        assert_eq!(
            c.balance(1, node, "org1.ops", false).await,
            Some(expected.to_string())
        );
    }
    assert_eq!(
        ok(app1.get_transfer("org1.max-1").await).body["amount"],
        "18446744073709551615"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_transfer_resolves_once_and_expires_at_one_point_everywhere() {
    let c = Cluster::start().await;
    c.seed(ISSUED).await;
    let pending = |id: &str, timeout: Option<u64>| {
        let mut body = t(id, "org1.ops", "org2.ops", 500);
        body["pending"] = json!(true);
        if let Some(ms) = timeout {
            body["timeout_ms"] = json!(ms);
        }
        body
    };
    let app1 = c.app(1, 1);
    let r = ok(app1
        .call(
            reqwest::Method::POST,
            "/v1/transfers",
            Some(&pending("org1.race", None)),
        )
        .await);
    assert_eq!(r.body["state"], "pending");
    let a = ok(app1.account("org1.ops", false).await);
    assert_eq!(
        (a.body["balance"].as_str(), a.body["available"].as_str()),
        (Some("1000000"), Some("999500"))
    );

    // Post on one node, void on another, at once: exactly one wins.
    let (on1, on2) = (c.app(1, 1), c.app(1, 2));
    let (posted, voided) = tokio::join!(
        on1.post_pending("org1.race", None),
        on2.void_pending("org1.race")
    );
    let (posted, voided) = (posted.unwrap(), voided.unwrap());
    let wins = [posted.is_success(), voided.is_success()];
    assert_eq!(
        wins.iter().filter(|w| **w).count(),
        1,
        "post {} / void {}",
        posted.body,
        voided.body
    );
    let loser = if posted.is_success() {
        &voided
    } else {
        &posted
    };
    assert_eq!(loser.status, 409, "{}", loser.body);
    let (state, org2) = if posted.is_success() {
        ("posted", "500")
    } else {
        ("voided", "0")
    };
    for node in c.ids() {
        assert_eq!(
            ok(c.app(1, node).get_transfer("org1.race").await).body["state"],
            state
        );
        assert_eq!(
            c.balance(2, node, "org2.ops", false).await.as_deref(),
            Some(org2)
        );
    }

    // Expiry with no other traffic: the leader ticks, and every replica
    // expires it in the same block.
    ok(app1
        .call(
            reqwest::Method::POST,
            "/v1/transfers",
            Some(&pending("org1.short", Some(300))),
        )
        .await);
    let mut resolved = Vec::new();
    for node in c.ids() {
        let height = eventually("the pending transfer to expire", || async {
            let r = c
                .app(1, node)
                .call(
                    reqwest::Method::GET,
                    "/v1/transfers/org1.short?consistency=local",
                    None,
                )
                .await
                .ok()?;
            (r.body["state"] == "expired").then(|| r.body["resolved_height"].as_u64())?
        })
        .await;
        resolved.push(height);
    }
    assert!(resolved.windows(2).all(|w| w[0] == w[1]), "{resolved:?}");
    let r = on1.post_pending("org1.short", None).await.unwrap();
    assert_eq!(
        (r.status, r.code()),
        (409, Some("pending_transfer_expired"))
    );
    let a = ok(app1.account("org1.ops", false).await);
    assert_eq!(a.body["debits_pending"], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_pages_never_skip_or_repeat_and_grants_apply_everywhere() {
    let c = Cluster::start().await;
    c.seed(ISSUED).await;
    let writer = c.app(1, 1);
    let adding = tokio::spawn(async move {
        for i in 0..60u64 {
            ok(writer
                .transfer(&format!("org1.h-{i}"), "org1.ops", "org3.ops", i + 1)
                .await);
        }
    });
    let reader = c.app(3, 2);
    let (mut next_seq, mut cursor): (u64, Option<String>) = (0, None);
    let mut seen_transfers = Vec::new();
    loop {
        let page = ok(reader.history("org3.ops", cursor.as_deref(), 7).await);
        for item in page.body["items"].as_array().unwrap() {
            assert_eq!(
                item["seq"].as_u64(),
                Some(next_seq),
                "skipped or repeated: {item}"
            );
            next_seq += 1;
            seen_transfers.push(item["transfer"].as_str().unwrap().to_owned());
        }
        cursor = Some(
            page.body["next_cursor"]
                .as_str()
                .map_or(next_seq.to_string(), str::to_owned),
        );
        if adding.is_finished() && next_seq == 60 {
            break;
        }
        if page.body["next_cursor"].is_null() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    adding.await.unwrap();
    let expected: Vec<String> = (0..60).map(|i| format!("org1.h-{i}")).collect();
    assert_eq!(seen_transfers, expected, "history is in commit order");
    let last = ok(reader.history("org3.ops", Some("59"), 7).await);
    assert_eq!(
        last.body["items"][0]["balance_after"],
        (1..=60u64).sum::<u64>().to_string()
    );

    // The balance as of a past block.
    let h30 = ok(reader.get_transfer("org1.h-29").await).body["height"]
        .as_u64()
        .unwrap();
    let at = ok(reader
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/org3.ops?at_height={h30}"),
            None,
        )
        .await);
    assert_eq!(at.body["balance"], (1..=30u64).sum::<u64>().to_string());
    let before = ok(reader
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/org3.ops?at_height={}", h30 - 1),
            None,
        )
        .await);
    assert_eq!(before.body["balance"], (1..=29u64).sum::<u64>().to_string());

    // Grants: an admin lets org3 read org2.ops (seeded for org3 already) and
    // org1.ops; it applies on every node at once; revoking hides it again.
    let partner3 = |node| c.client("org3", "partner", node);
    assert_eq!(
        partner3(3).account("org1.ops", false).await.unwrap().status,
        404
    );
    let admin1 = c.client("org1", "admin", 2);
    ok(admin1
        .set_readers("org1.ops", &["org2".into(), "org3".into()])
        .await);
    for node in c.ids() {
        ok(partner3(node).account("org1.ops", false).await);
    }
    let r = c.app(1, 1).set_readers("org1.ops", &[]).await.unwrap();
    assert_eq!((r.status, r.code()), (403, Some("grant_requires_admin")));
    ok(admin1.set_readers("org1.ops", &["org2".into()]).await);
    assert_eq!(
        partner3(1).account("org1.ops", false).await.unwrap().status,
        404
    );

    // Listing: the caller's readable accounts, a page at a time.
    let page = ok(c
        .app(1, 1)
        .call(reqwest::Method::GET, "/v1/accounts?limit=1", None)
        .await);
    assert_eq!(page.body["accounts"].as_array().map(Vec::len), Some(1));
    let next = page.body["next_cursor"].as_str().unwrap().to_owned();
    let page2 = ok(c
        .app(1, 1)
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts?limit=10&cursor={next}"),
            None,
        )
        .await);
    assert!(page2.body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["id"].as_str().unwrap() > next.as_str()));

    // A closed account takes no new transfer.
    ok(c.client("org3", "admin", 3).close_account("org3.ops").await);
    let r = c
        .app(1, 1)
        .transfer("org1.to-closed", "org1.ops", "org3.ops", 1)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (422, Some("credit_account_closed")));
}
