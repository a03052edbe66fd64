//! The admin scripts, called as an admin would.

use std::path::Path;
use std::process::Command;

fn script(dir: &Path, name: &str, args: &[&str]) -> std::process::Output {
    let scripts = alliance::demo::write_scripts(dir).unwrap();
    Command::new("sh")
        .arg(scripts.join(name))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn scripts_refuse_bad_input_and_never_overwrite_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let pki = pki.to_str().unwrap();
    for bad in ["../x", "A", "", "-rf", "a b"] {
        let out = script(tmp.path(), "new-org.sh", &["--dir", pki, "--org", bad]);
        assert_eq!(out.status.code(), Some(2), "org {bad:?}");
    }
    assert!(!Path::new(pki).join("x").exists());
    assert!(!tmp.path().join("x").exists());
    assert_eq!(
        script(tmp.path(), "new-org.sh", &["--help"]).status.code(),
        Some(0)
    );

    assert!(
        script(tmp.path(), "new-org.sh", &["--dir", pki, "--org", "org1"])
            .status
            .success()
    );
    let key = Path::new(pki).join("org1/ca.key");
    let before = std::fs::read(&key).unwrap();
    assert!(
        script(tmp.path(), "new-org.sh", &["--dir", pki, "--org", "org1"])
            .status
            .success()
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "re-running must keep the key"
    );

    let issue = |role: &str, name: &str| {
        script(
            tmp.path(),
            "issue-cert.sh",
            &[
                "--dir", pki, "--org", "org1", "--role", role, "--name", name,
            ],
        )
    };
    assert_eq!(issue("root", "x").status.code(), Some(2));
    assert_eq!(issue("node", "01").status.code(), Some(2));
    assert_eq!(issue("app", "").status.code(), Some(2));
    assert!(issue("app", "app1").status.success());
    let leaf = Path::new(pki).join("org1/app-app1.key");
    let leaf_before = std::fs::read(&leaf).unwrap();
    assert!(issue("app", "app1").status.success());
    assert_eq!(std::fs::read(&leaf).unwrap(), leaf_before);

    let missing = script(
        tmp.path(),
        "issue-cert.sh",
        &[
            "--dir", pki, "--org", "nope", "--role", "app", "--name", "a",
        ],
    );
    assert!(!missing.status.success());
    let genesis = tmp.path().join("g.toml");
    let bad_node = script(
        tmp.path(),
        "new-genesis.sh",
        &[
            "--out",
            genesis.to_str().unwrap(),
            "--name",
            "c",
            "--org",
            &format!("org1={pki}/org1/ca.crt"),
            "--node",
            "01,org1,127.0.0.1:1,127.0.0.1:2",
        ],
    );
    assert_eq!(bad_node.status.code(), Some(2));
    assert!(!genesis.exists());
}

/// Runs our own script `name` (not embedded in the binary) with each of
/// `bad`, expecting exit 2 and a message naming the script, and `--help`.
fn refuses_bad_arguments(name: &str, bad: &[&[&str]]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let run = |args: &[&str]| Command::new("sh").arg(&path).args(args).output().unwrap();
    for args in bad {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{name}: ")));
    }
    assert_eq!(run(&["--help"]).status.code(), Some(0));
}

/// `chaos.sh` checks its arguments before it builds anything.
#[test]
fn chaos_script_refuses_bad_arguments() {
    refuses_bad_arguments(
        "chaos.sh",
        &[
            &[],
            &["--minutes"],
            &["--minutes", "x"],
            &["--minutes", "0"],
            &["--minutes", "1441"],
            &["--minutes", "99999999999999999999999"],
            &["--minutes", "5", "--seed", "-1"],
            &["--minutes", "5", "--seed", "18446744073709551616"],
            &["--minutes", "5", "extra"],
        ],
    );
}

/// `bench-etcd.sh` checks its arguments before it installs or builds anything.
#[test]
fn bench_etcd_script_refuses_bad_arguments() {
    let here = env!("CARGO_MANIFEST_DIR");
    refuses_bad_arguments(
        "bench-etcd.sh",
        &[
            &[],
            &["--etcdbench"],
            &["--etcdbench", "/no/such/path"],
            &["--etcdbench", here, "--clients", ""],
            &["--etcdbench", here, "--clients", "1 x"],
            &["--etcdbench", here, "--clients", "0"],
            &["--etcdbench", here, "--clients", "4097"],
            &["--etcdbench", here, "--seconds", "0"],
            &["--etcdbench", here, "--etcd-writes", "99999999999"],
            &["--etcdbench", here, "--bogus"],
        ],
    );
}
