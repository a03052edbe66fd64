//! Does sled, as vendored here, recover a prefix of one thread's writes after
//! SIGKILL? A state write that is not one atomic batch (a journal, or deltas
//! folded later; see BENCHMARKS.md, sessions 10 and 11) is only safe if it
//! does. Run: `cargo run --release --example sled_prefix [-- ROUNDS]`.
//!
//! A child process opens a node's store ([`Store::open`]: the same sled
//! configuration) and writes numbered steps to its `state` tree from one
//! thread. Step `i` writes `J` = i, then `A0`..`A9` = i, then `H`+i, then
//! `LA` = i, and every 50th step an atomic batch of `B1` = `B2` = i.
//! Meanwhile another thread appends to the `log` tree and makes it durable
//! ([`Durable::sync`]) every 300 µs, as the Raft log store does. The parent
//! kills the child (SIGKILL) after a random time, reopens the database and
//! checks that what survived is the state after some prefix of those
//! writes; then the next child goes on from there. Exits non-zero at the
//! first state that is not a prefix.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alliance::raft::store::{Durable, Store};

const ROUNDS_DEFAULT: u32 = 40;
/// The writer is killed this long after its start, plus up to
/// `KILL_WINDOW_MS`.
const KILL_AFTER_MIN_MS: u64 = 50;
const KILL_WINDOW_MS: u64 = 850;
const SYNC_EVERY_MICROS: u64 = 300;
/// About one Raft entry of a single transfer.
const LOG_VALUE_BYTES: usize = 300;
const BATCH_EVERY_STEPS: u64 = 50;
/// Keys `A0`.. each step overwrites, like the accounts an entry changes.
const A_KEYS: usize = 10;
/// The first argument that makes this process the writer.
const WRITER_MODE: &str = "write";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, dir] = &args[..] {
        if mode == WRITER_MODE {
            write_forever(Path::new(dir));
        }
    }
    let rounds = match args.get(1).map(|r| r.parse::<u32>()) {
        None => ROUNDS_DEFAULT,
        Some(Ok(r)) if r > 0 => r,
        Some(_) => {
            eprintln!("usage: sled_prefix [ROUNDS] (a whole number above 0)");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let me = std::env::current_exe().expect("this program's path");
    for round in 1..=rounds {
        let mut child = Command::new(&me)
            .args([WRITER_MODE.as_ref(), dir.path().as_os_str()])
            .spawn()
            .expect("start the writer");
        let run_ms = KILL_AFTER_MIN_MS + random_below(KILL_WINDOW_MS);
        std::thread::sleep(Duration::from_millis(run_ms));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        match check(dir.path()) {
            Ok(la) => println!("round {round}: a prefix, last whole step {la:?}"),
            Err(e) => {
                println!("round {round}: NOT A PREFIX: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("ok: {rounds} kills, each recovered a prefix");
}

/// Milliseconds in 0..n from the clock's nanoseconds (not for cryptography).
fn random_below(n: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .subsec_nanos();
    u64::from(nanos) % n
}

fn open(dir: &Path) -> Store {
    Store::open(dir).expect("open the store")
}

fn num(v: sled::IVec) -> u64 {
    u64::from_be_bytes(v[..].try_into().expect("values are u64s"))
}

fn history_key(i: u64) -> Vec<u8> {
    [&b"H"[..], &i.to_be_bytes()].concat()
}

fn write_forever(dir: &Path) -> ! {
    let Store {
        state,
        log,
        durable,
        ..
    } = open(dir);
    std::thread::spawn(move || append_forever(&log, &durable));
    let start = state.get("LA").expect("read LA").map_or(0, |v| num(v) + 1);
    for i in start.. {
        let v = i.to_be_bytes();
        state.insert("J", &v).expect("insert");
        for k in 0..A_KEYS {
            state.insert(format!("A{k}"), &v).expect("insert");
        }
        state.insert(history_key(i), &v).expect("insert");
        state.insert("LA", &v).expect("insert");
        if i % BATCH_EVERY_STEPS == 0 {
            let mut batch = sled::Batch::default();
            batch.insert("B1", &v);
            batch.insert("B2", &v);
            state.apply_batch(batch).expect("batch");
        }
    }
    unreachable!("u64 steps do not run out")
}

/// What the Raft log store does to the same database: append, make durable.
fn append_forever(log: &sled::Tree, durable: &Durable) {
    for n in 0u64.. {
        log.insert(n.to_be_bytes(), vec![7u8; LOG_VALUE_BYTES])
            .expect("log insert");
        durable.sync().expect("sync");
        std::thread::sleep(Duration::from_micros(SYNC_EVERY_MICROS));
    }
}

/// The last whole step, if the state is one a prefix of the writes leaves.
fn check(dir: &Path) -> Result<Option<u64>, String> {
    let state = open(dir).state;
    let get = |k: &[u8]| state.get(k).expect("read").map(num);
    let Some(la) = get(b"LA") else {
        return Ok(None);
    };
    let next = la + 1;
    let j = get(b"J").ok_or("LA without J")?;
    let a: Vec<u64> = (0..A_KEYS)
        .map(|k| get(format!("A{k}").as_bytes()).ok_or(format!("LA without A{k}")))
        .collect::<Result<_, _>>()?;
    let fail = |what: &str| Err(format!("{what}: LA {la}, J {j}, A {a:?}"));
    if j != la && j != next {
        return fail("J is neither the last step nor the next");
    }
    if a.iter().any(|&x| x != la && x != next) || a.windows(2).any(|w| w[0] < w[1]) {
        return fail("the A keys are not the next step's up to some point, then the last's");
    }
    if a[0] == next && j != next {
        return fail("the next step's A0 without its J");
    }
    if get(&history_key(la)).is_none() {
        return fail("the last step's H is missing");
    }
    if get(&history_key(next)).is_some() && a[A_KEYS - 1] != next {
        return fail("the next step's H without its last A");
    }
    if get(&history_key(next + 1)).is_some() {
        return fail("an H beyond the next step");
    }
    if get(b"B1") != get(b"B2") || get(b"B1").is_some_and(|b| b > la) {
        return fail("the batch is torn or ahead of LA");
    }
    Ok(Some(la))
}
