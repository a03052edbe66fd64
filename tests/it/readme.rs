//! The README's shell examples, run as written against a demo consortium,
//! so that the documentation cannot drift from what the program does.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{start_demo, DEADLINE};

/// A fenced shell example of the README: the line its text starts on,
/// whether it is run, and its text.
struct Example {
    line: usize,
    run: bool,
    text: String,
}

/// The README's ```` ```sh ```` blocks; ```` ```sh not-run ```` marks those
/// this test cannot run (a build, a node that serves until stopped,
/// benchmarks of minutes, a second machine).
fn examples(readme: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let mut open: Option<Example> = None;
    for (i, line) in readme.lines().enumerate() {
        match (&mut open, line) {
            (None, "```sh") | (None, "```sh not-run") => {
                open = Some(Example {
                    line: i + 2,
                    run: line == "```sh",
                    text: String::new(),
                })
            }
            (Some(_), "```") => found.extend(open.take()),
            (Some(example), text) => {
                example.text.push_str(text);
                example.text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(open.is_none(), "a ```sh block is not closed");
    found
}

/// Every shell example not marked `not-run` runs, in README order, in one
/// POSIX shell with `set -e` (one session, as a reader who pastes them
/// one after another: later ones use the variables and the directory
/// earlier ones set), in a directory holding the demo as `alliance-demo`
/// and the repository's `scripts/`, with `alliance` on the PATH. The only
/// change to their text: the ports the node-4 walkthrough gives its node
/// are replaced by free ones; and `curl` fails on an error status. An
/// example that shows a refusal checks it with `grep`, so a command that
/// should fail and does not fails the run.
#[tokio::test(flavor = "multi_thread")]
async fn the_readmes_shell_examples_run_against_a_demo() {
    let examples = examples(include_str!("../../README.md"));
    let run: Vec<&Example> = examples.iter().filter(|e| e.run).collect();
    // A fall below this means examples were marked `not-run`: say why
    // in the README, then lower it.
    const RUN_MIN: usize = 20;
    assert!(
        run.len() >= RUN_MIN,
        "{} examples, {} run",
        examples.len(),
        run.len()
    );

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let _demo = start_demo(&w.join("alliance-demo")).await;
    let bin = w.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_alliance"), bin.join("alliance")).unwrap();
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    std::os::unix::fs::symlink(scripts, w.join("scripts")).unwrap();

    // The node-4 walkthrough's own addresses, replaced below by free ports.
    let node4 = ["127.0.0.1:7104", "127.0.0.1:7204"];
    assert!(
        node4.iter().all(|a| run.iter().any(|e| e.text.contains(a))),
        "the README's node-4 walkthrough gives its node other addresses: update this test"
    );
    let ports = alliance::demo::free_ports(2).unwrap();
    // An example's curl that gets an error status fails (as `alliance
    // client` does), so that a refused request cannot pass unnoticed.
    let mut script = String::from("set -ex\ncurl() { command curl --fail-with-body \"$@\"; }\n");
    for e in &run {
        script.push_str(&format!("echo '>>> README.md line {}' >&2\n", e.line));
        let text = e
            .text
            .replace(node4[0], &ports[0].to_string())
            .replace(node4[1], &ports[1].to_string());
        script.push_str(&text);
    }
    script.push_str("echo '>>> all examples ran' >&2\n");
    std::fs::write(w.join("examples.sh"), &script).unwrap();

    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut shell = ProcessGroup(
        Command::new("sh")
            .arg(w.join("examples.sh"))
            .current_dir(w)
            .env("PATH", path)
            .env("HOME", w)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(w.join("examples.out")).unwrap())
            .stderr(std::fs::File::create(w.join("examples.err")).unwrap())
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    // The walkthroughs make proposals, vote and add a node: minutes in a
    // debug build on two cores, at most.
    let deadline = tokio::time::Instant::now() + 5 * DEADLINE;
    let status = loop {
        if let Some(status) = shell.0.try_wait().unwrap() {
            break Some(status);
        }
        if tokio::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let err = std::fs::read_to_string(w.join("examples.err")).unwrap();
    let out = std::fs::read_to_string(w.join("examples.out")).unwrap();
    let at = err
        .lines()
        .rev()
        .find(|l| l.starts_with(">>> "))
        .unwrap_or("");
    let tail = |s: &str| {
        s.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        status.is_some_and(|s| s.success()) && at == ">>> all examples ran",
        "the README's examples stopped at {at} ({status:?}):\nstderr:\n{}\nstdout:\n{}",
        tail(&err),
        tail(&out)
    );
}

/// The examples' shell and what it started (node 4 runs in the
/// background): killed together when the test ends.
struct ProcessGroup(std::process::Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}
