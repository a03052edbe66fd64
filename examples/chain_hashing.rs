//! Cost of the tamper-evident chain per block: hashing N leaves (canonical
//! transfer records), the Merkle root, the state digest of the changed
//! records, and the header. Run: `cargo run --release --example chain_hashing`.

use std::hint::black_box;
use std::time::Instant;

use alliance::ledger::chain::{leaf_hash, merkle_root, BlockHeader, StateDigest};

fn leaf(i: usize) -> String {
    format!(
        "{{\"transfer\":{{\"id\":\"t-{i}\",\"debit_account\":\"org1.ops\",\"credit_account\":\"acct-{}\",\"amount\":{},\
         \"asset\":\"USD\",\"memo\":null,\"posted_by\":\"org1\",\"timestamp_ms\":1700000000000,\"height\":7,\
         \"log_index\":9,\"leaf_index\":{i},\"pending\":false,\"timeout_ms\":null,\"expires_at_ms\":null,\
         \"state\":\"posted\",\"posted_amount\":null,\"resolved_height\":null}}}}",
        i % 1000,
        1 + i % 1000
    )
}

fn main() {
    for (n, rounds) in [(1usize, 20_000usize), (100, 2_000), (8000, 25)] {
        let leaves: Vec<String> = (0..n).map(leaf).collect();
        // A transfer changes two accounts, itself and two history items.
        let records: Vec<Vec<u8>> = (0..5 * n).map(|i| leaf(i).into_bytes()).collect();
        let start = Instant::now();
        for _ in 0..rounds {
            let hashes: Vec<_> = leaves.iter().map(|l| leaf_hash(l.as_bytes())).collect();
            let root = merkle_root(&hashes);
            let mut d = StateDigest::default();
            for r in &records {
                d.add("record", r);
            }
            let header = BlockHeader {
                merkle_root: root,
                state_digest: d.finish(),
                leaf_count: n as u64,
                ..Default::default()
            };
            black_box(header.hash());
        }
        let per_block = start.elapsed().as_secs_f64() / rounds as f64;
        println!(
            "{n:>5} transfers/block: {:>9.1} µs per block, {:.2} µs per transfer",
            per_block * 1e6,
            per_block * 1e6 / n as f64
        );
    }
}
