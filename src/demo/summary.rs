//! What `alliance demo` prints once the consortium is up: its nodes, and
//! commands to try against it.

use std::time::Duration;

use super::Layout;

pub(super) fn print_summary(layout: &Layout, leader: u64, elapsed: Duration) {
    println!(
        "alliance demo: consortium \"{}\" is up in {:.1}s under {}",
        layout.consortium,
        elapsed.as_secs_f64(),
        layout.dir.display()
    );
    for n in &layout.nodes {
        let tag = if n.id == leader { "  (leader)" } else { "" };
        println!(
            "  node {} ({})  api {}  peer {}  public {}  log {}{tag}",
            n.id,
            n.org,
            n.api_url,
            n.peer_url,
            n.public_url,
            n.log.display()
        );
    }
    let org1 = layout.org(&layout.nodes[0].org);
    let app = &org1.identities["app"];
    let curl = format!(
        "curl -sS --cacert {} --cert {} --key {}",
        org1.ca_cert.display(),
        app.cert.display(),
        app.key.display()
    );
    let url = &layout.nodes[0].api_url;
    println!(
        "\nTry it (as {}'s app, against node {}):",
        org1.name, layout.nodes[0].id
    );
    println!("  {curl} {url}/v1/accounts/{}.ops", org1.name);
    if let Some(other) = layout.orgs.get(1) {
        println!(
            "  {curl} -H 'content-type: application/json' -d '{{\"id\":\"{}.my-first-transfer\",\"debit_account\":\"{}.ops\",\"credit_account\":\"{}.ops\",\"amount\":\"100\"}}' {url}/v1/transfers",
            org1.name, org1.name, other.name
        );
    }
    println!("  {curl} {url}/v1/cluster");
    println!(
        "  curl -sS --cacert {} {}/public/v1/head      # the public window: no client certificate",
        org1.ca_cert.display(),
        layout.nodes[0].public_url
    );
    println!(
        "  alliance client --config {} balance {}.ops",
        app.client_config.display(),
        org1.name
    );
    println!(
        "Everything made is listed in {}",
        Layout::index_path(&layout.dir).display()
    );
}
