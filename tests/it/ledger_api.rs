//! Ledger rules and input validation through the API: every refusal has a
//! code and changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::harness::{ok, Cluster};

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_code_and_changes_nothing() {
    let c = Cluster::start().await;
    c.seed(1_000).await;
    let app1 = c.app(1, 2); // through a node that may be a follower
    let app2 = c.app(2, 3);

    // Overdraft.
    let r = app2
        .transfer("org2.od-1", "org2.ops", "org1.ops", 1)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (422, Some("insufficient_funds")));
    let r = app1
        .transfer("org1.od-2", "org1.ops", "org2.ops", 1_001)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (422, Some("insufficient_funds")));

    // Exactly once: the same body returns the original; another body is 409.
    let first = ok(app1
        .transfer("org1.once-1", "org1.ops", "org2.ops", 100)
        .await);
    let again = ok(c
        .app(1, 3)
        .transfer("org1.once-1", "org1.ops", "org2.ops", 100)
        .await);
    assert_eq!(first.body, again.body);
    let r = app1
        .transfer("org1.once-1", "org1.ops", "org2.ops", 101)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.code()),
        (409, Some("exists_with_different_fields"))
    );

    let post = |body: serde_json::Value| {
        let app1 = app1.clone();
        async move {
            app1.call(Method::POST, "/v1/transfers", Some(&body))
                .await
                .unwrap()
        }
    };
    let t = |amount: serde_json::Value| json!({"id": "org1.bad-1", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": amount});
    let cases = [
        (t(json!(1.5)), 400, "invalid_amount"),
        (t(json!(1e3)), 400, "invalid_amount"),
        (t(json!(-5)), 400, "invalid_amount"),
        (t(json!(0)), 400, "invalid_amount"),
        (t(json!("1.0")), 400, "invalid_amount"),
        (t(json!("+1")), 400, "invalid_amount"),
        (t(json!("007")), 400, "invalid_amount"),
        (t(json!("18446744073709551616")), 400, "invalid_amount"),
        (t(json!(null)), 400, "invalid_amount"),
        // The largest amount parses exactly and is refused for funds, not form.
        (t(json!(u64::MAX)), 422, "insufficient_funds"),
        (t(json!("18446744073709551615")), 422, "insufficient_funds"),
        (
            json!({"id": "org1.x".repeat(65), "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1}),
            400,
            "invalid_transfer_id",
        ),
        (
            json!({"id": "tx-\u{e9}", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1}),
            400,
            "invalid_transfer_id",
        ),
        (
            json!({"id": "org1.ok-id-1", "debit_account": "ORG1.ops", "credit_account": "org2.ops", "amount": 1}),
            400,
            "invalid_account_id",
        ),
        (
            json!({"id": "org1.ok-id-2", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1, "asset": "usd"}),
            400,
            "invalid_asset",
        ),
        (
            json!({"id": "org1.ok-id-3", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1, "memo": "m".repeat(513)}),
            400,
            "memo_too_long",
        ),
        (
            json!({"id": "org1.ok-id-4", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1, "memo": "pay\u{0007}"}),
            400,
            "invalid_memo",
        ),
        (
            json!({"id": "org1.ok-id-5", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1, "memo": "invoice \u{202E}fdp.exe"}),
            400,
            "invalid_memo",
        ),
        (
            json!({"id": "org1.ok-id-6", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1, "memo": "\u{2066}isolated\u{2069}"}),
            400,
            "invalid_memo",
        ),
        (
            json!({"id": "org1.ok-id-7", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1, "memo": "c1 \u{009B}"}),
            400,
            "invalid_memo",
        ),
        (
            json!({"id": "org1.ok-id-8", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1, "extra": true}),
            400,
            "malformed_json",
        ),
        (
            json!({"id": "org1.ok-id-9", "debit_account": "org1.ops", "amount": 1}),
            400,
            "malformed_json",
        ),
        (
            json!({"id": "org1.ok-id-10", "debit_account": "org1.ops", "credit_account": "org1.ops", "amount": 1}),
            422,
            "accounts_must_be_different",
        ),
        (
            json!({"id": "org1.ok-id-11", "debit_account": "org1.ops", "credit_account": "nobody", "amount": 1}),
            404,
            "credit_account_not_found",
        ),
        (
            json!({"id": "org1.ok-id-12", "debit_account": "org1.ops", "credit_account": "org2.ops", "amount": 1, "asset": "EUR"}),
            422,
            "asset_mismatch",
        ),
    ];
    for (body, status, code) in cases {
        let r = post(body.clone()).await;
        assert_eq!((r.status, r.code()), (status, Some(code)), "{body}");
    }
    // A body is an object: a batch or a transfer written as an array is
    // refused, and so is a key given twice.
    let leg =
        r#"{"id":"org1.arr-1","debit_account":"org1.ops","credit_account":"org2.ops","amount":1}"#;
    for raw in [
        b"{not json".to_vec(),
        b"".to_vec(),
        b"[]".to_vec(),
        vec![0xff, 0xfe],
        format!("[[{leg}]]").into_bytes(),
        format!("[[{leg}], false, \"refused\"]").into_bytes(),
        br#"["org1.arr-1","org1.ops","org2.ops",1,null,null,false,null]"#.to_vec(),
        br#"{"id":"org1.arr-1","id":"org1.arr-2","debit_account":"org1.ops","credit_account":"org2.ops","amount":1}"#.to_vec(),
        format!(r#"{{"transfers":[{leg}],"transfers":[{leg}]}}"#).into_bytes(),
    ] {
        let r = app1.post_raw("/v1/transfers", raw.clone()).await.unwrap();
        assert_eq!(
            (r.status, r.code()),
            (400, Some("malformed_json")),
            "{}",
            String::from_utf8_lossy(&raw)
        );
    }
    for id in ["org1.arr-1", "org1.arr-2"] {
        assert_eq!(app1.get_transfer(id).await.unwrap().status, 404, "{id}");
    }
    // A write's body must be declared JSON: a browser holding a member
    // certificate can be made to post a form, never JSON. Nothing moves.
    for (path, body) in [
        ("/v1/transfers", leg.as_bytes().to_vec()),
        ("/v1/transfers/org1.arr-1/void", Vec::new()),
        (
            "/v1/accounts",
            br#"{"id":"org1.form","asset":"USD"}"#.to_vec(),
        ),
    ] {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
        ] {
            let r = app1
                .post_typed(path, content_type, body.clone())
                .await
                .unwrap();
            assert_eq!(
                (r.status, r.code()),
                (415, Some("unsupported_media_type")),
                "{path} {content_type:?}"
            );
        }
    }
    assert_eq!(app1.get_transfer("org1.arr-1").await.unwrap().status, 404);
    assert_eq!(app1.account("org1.form", false).await.unwrap().status, 404);
    // The media type's case and parameters do not matter.
    let typed = br#"{"id":"org1.typed","asset":"USD"}"#.to_vec();
    let typed = app1
        .post_typed(
            "/v1/accounts",
            Some("Application/JSON; charset=utf-8"),
            typed,
        )
        .await
        .unwrap();
    assert_eq!(typed.status, 200, "{:?}", typed.body);
    let huge = format!(
        "{{\"id\":\"big\",\"memo\":\"{}\"}}",
        "m".repeat(5 * 1024 * 1024)
    );
    let r = app1
        .post_raw("/v1/transfers", huge.into_bytes())
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (413, Some("body_too_large")));
    let r = app1
        .call(Method::GET, "/v1/accounts/Not_Valid", None)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (400, Some("invalid_account_id")));
    let r = app1
        .call(
            Method::GET,
            "/v1/accounts/org1.ops?consistency=eventual",
            None,
        )
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (400, Some("invalid_query")));
    let r = app1.call(Method::GET, "/v2/anything", None).await.unwrap();
    assert_eq!((r.status, r.code()), (404, Some("route_not_found")));
    let r = app1
        .call(Method::DELETE, "/v1/accounts", None)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (405, Some("method_not_allowed")));
    assert!(r.body.to_string().contains("POST, GET"), "{}", r.body);

    // Accounts: duplicates with other fields, another organization's
    // namespace, allow_negative for apps.
    let r = app1
        .create_account("org1.ops", "EUR", false, &[])
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (409, Some("account_exists")));
    // The same answer for an org1 id that exists and one that does not.
    for id in ["org1.ops", "org1.never-made"] {
        let r = c
            .app(2, 1)
            .create_account(id, "USD", false, &[])
            .await
            .unwrap();
        assert_eq!((r.status, r.code()), (403, Some("id_outside_namespace")));
        let r = c.app(2, 1).transfer(id, "org2.ops", "org1.ops", 1).await;
        let r = r.unwrap();
        assert_eq!((r.status, r.code()), (403, Some("id_outside_namespace")));
    }
    let r = app1
        .create_account("org1.credit", "USD", true, &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.code()),
        (403, Some("allow_negative_requires_admin"))
    );
    let admin1 = c.client("org1", "admin", 1);
    let r = admin1
        .create_account("org1.x", "USD", false, &["nosuchorg".into()])
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (422, Some("unknown_reader_org")));
    let r = app1
        .create_account("org1.y", "USD", false, &["org2".into()])
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (403, Some("grant_requires_admin")));

    // Only the one accepted transfer moved money.
    for node in c.ids() {
        assert_eq!(
            c.balance(1, node, "org1.ops", false).await.as_deref(),
            Some("900")
        );
        assert_eq!(
            c.balance(2, node, "org2.ops", false).await.as_deref(),
            Some("100")
        );
    }
    for id in [
        "org2.od-1",
        "org1.od-2",
        "org1.bad-1",
        "org1.ok-id-13",
        "big",
    ] {
        assert_eq!(app1.get_transfer(id).await.unwrap().status, 404, "{id}");
    }
    assert_eq!(
        app1.account("org1.credit", false).await.unwrap().status,
        404
    );

    // A refused transfer keeps its answer: re-sent after funds arrive, it is
    // still refused (exactly once), while a new id goes through.
    ok(admin1
        .transfer("org1.top-up", "org1.treasury", "org1.ops", 5_000)
        .await);
    let r = app1
        .transfer("org1.od-2", "org1.ops", "org2.ops", 1_001)
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (422, Some("insufficient_funds")));
    ok(app1
        .transfer("org1.od-2b", "org1.ops", "org2.ops", 1_001)
        .await);
    assert_eq!(
        c.balance(2, 2, "org2.ops", false).await.as_deref(),
        Some("1101")
    );
}

/// `alliance client import` posts a CSV file in batches: a refused line is
/// counted with its line and code, a second run changes nothing (ids make
/// it idempotent), and a malformed file sends nothing.
#[tokio::test(flavor = "multi_thread")]
async fn import_posts_a_file_in_batches_and_counts_refusals() {
    let c = Cluster::start().await;
    c.seed(1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("pay.csv");
    let mut text = String::from("id,debit_account,credit_account,amount,memo\n");
    for i in 0..25 {
        text.push_str(&format!(
            "org1.imp-{i},org1.ops,org2.ops,2,\"batch {i}, May\"\n"
        ));
    }
    text.push_str("org1.imp-big,org1.ops,org2.ops,5000,too much\n");
    std::fs::write(&csv, text).unwrap();
    let config = c.layout.dir.join("clients/org1-app.toml");
    let import = |file: &std::path::Path| {
        crate::harness::run_cli([
            "client".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "import".as_ref(),
            file.as_os_str(),
            "--batch".as_ref(),
            "10".as_ref(),
        ])
    };
    let balance = || async { c.balance(2, 1, "org2.ops", false).await };
    for run in 0..2 {
        let (code, text) = import(&csv);
        assert_eq!(code, Some(1), "one refused: {text}");
        let start = text.find('{').unwrap();
        let summary: serde_json::Value = serde_json::from_str(&text[start..]).unwrap();
        assert_eq!(summary["transfers"], 26, "run {run}: {summary}");
        assert_eq!(summary["applied"], 25, "run {run}: {summary}");
        assert_eq!(summary["refused_by_code"], json!({"insufficient_funds": 1}));
        assert_eq!(summary["refused_first"][0]["line"], 27);
        assert_eq!(balance().await.as_deref(), Some("50"), "run {run}");
    }
    let r = ok(c.app(1, 1).get_transfer("org1.imp-3").await);
    assert_eq!(r.body["memo"], "batch 3, May");
    // The first batch of ten, 2 each, in one block; nothing before it.
    let height = r.body["height"].as_u64().unwrap();
    let org2 = c.layout.dir.join("clients/org2-app.toml");
    for (at, expected) in [(height, "20"), (height - 1, "0")] {
        let (code, text) = crate::harness::run_cli([
            "client".as_ref(),
            "--config".as_ref(),
            org2.as_os_str(),
            "balance".as_ref(),
            "org2.ops".as_ref(),
            "--at-height".as_ref(),
            at.to_string().as_ref(),
        ]);
        assert_eq!(code, Some(0), "{text}");
        let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(shown["balance"], expected, "{text}");
        assert_eq!(shown["at_height"], at, "{text}");
    }
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "id,debit_account,credit_account,amount\norg1.bad-1,org1.ops,org2.ops,1\norg1.bad-2,org1.ops\n",
    )
    .unwrap();
    let (code, text) = import(&bad);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("bad.csv:3: 2 fields"), "{text}");
    assert_eq!(balance().await.as_deref(), Some("50"), "nothing was sent");
    let missing = c.app(1, 1).get_transfer("org1.bad-1").await.unwrap();
    assert_eq!(missing.status, 404);
}
