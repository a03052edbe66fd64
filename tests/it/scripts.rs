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

/// `bench-tigerbeetle.sh` checks its arguments, and that the binary runs,
/// before it builds or starts anything.
#[test]
fn bench_tigerbeetle_script_refuses_bad_arguments() {
    // Runs, so only the argument named in each case is wrong.
    let runs = "/bin/true";
    refuses_bad_arguments(
        "bench-tigerbeetle.sh",
        &[
            &[],
            &["--tigerbeetle"],
            &["--tigerbeetle", "/no/such/file"],
            &["--tigerbeetle", env!("CARGO_MANIFEST_DIR")],
            &["--tigerbeetle", "/bin/false"],
            &["--tigerbeetle", runs, "--transfers", "999"],
            &["--tigerbeetle", runs, "--transfers", "x"],
            &["--tigerbeetle", runs, "--accounts", "1"],
            &["--tigerbeetle", runs, "--workloads", ""],
            &["--tigerbeetle", runs, "--workloads", "8189"],
            &["--tigerbeetle", runs, "--workloads", "8190:1"],
            &["--tigerbeetle", runs, "--workloads", "100:0"],
            &["--tigerbeetle", runs, "--workloads", "100:65"],
            &["--tigerbeetle", runs, "--bogus"],
        ],
    );
}

/// `alliance completions bash` is a script bash loads, and it completes
/// subcommands; the other shells get a script too; `alliance man` is a roff
/// page naming every command; an unknown shell is refused with the choices.
#[test]
fn completions_and_the_man_page_are_generated() {
    let exe = env!("CARGO_BIN_EXE_alliance");
    let bash = |script: &str| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let registered = bash(&format!(
        "source <({exe} completions bash) && complete -p alliance"
    ));
    assert!(registered.contains("-F _alliance alliance"), "{registered}");
    // bash calls the function with the command, the word being completed
    // and the word before it.
    let offered = bash(&format!(
        "source <({exe} completions bash); COMP_WORDS=(alliance cl); COMP_CWORD=1; \
         _alliance alliance cl alliance; echo \"${{COMPREPLY[@]}}\""
    ));
    assert_eq!(offered.trim(), "client", "{offered}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = std::process::Command::new(exe)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("alliance"),
            "{shell}"
        );
    }
    let man = std::process::Command::new(exe).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(man.status.success());
    assert!(page.contains(".TH alliance 1"), "{page}");
    for command in ["demo", "node", "client", "audit", "completions"] {
        assert!(page.contains(command), "{command}: {page}");
    }
    let bad = std::process::Command::new(exe)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.contains("possible values: bash, elvish, fish, powershell, zsh"),
        "{said}"
    );
}

/// `new-genesis.sh --node-cert` registers a node's public key, as the node
/// hashes it, and refuses a certificate that is not that node's.
#[test]
fn genesis_registers_a_nodes_key_from_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let pki = pki.to_str().unwrap();
    for org in ["org1", "org2"] {
        let out = script(tmp.path(), "new-org.sh", &["--dir", pki, "--org", org]);
        assert!(out.status.success());
    }
    let issue = |org: &str, role: &str, name: &str| {
        let args = ["--dir", pki, "--org", org, "--role", role, "--name", name];
        assert!(script(tmp.path(), "issue-cert.sh", &args).status.success());
        format!("{pki}/{org}/{role}-{name}.crt")
    };
    let (node1, node2, app) = (
        issue("org1", "node", "1"),
        issue("org2", "node", "2"),
        issue("org1", "app", "1"),
    );
    let genesis = tmp.path().join("g.toml");
    let run = |certs: &[String]| {
        let mut args = vec![
            "--out".to_owned(),
            genesis.to_str().unwrap().to_owned(),
            "--force".to_owned(),
            "--name".to_owned(),
            "c".to_owned(),
        ];
        for org in ["org1", "org2"] {
            args.extend(["--org".to_owned(), format!("{org}={pki}/{org}/ca.crt")]);
        }
        args.extend([
            "--node".to_owned(),
            "1,org1,127.0.0.1:1,127.0.0.1:2".to_owned(),
        ]);
        args.extend([
            "--node".to_owned(),
            "2,org2,127.0.0.1:3,127.0.0.1:4".to_owned(),
        ]);
        for c in certs {
            args.extend(["--node-cert".to_owned(), c.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        script(tmp.path(), "new-genesis.sh", &args)
    };
    let refused = [
        vec![format!("3={node1}")],
        vec![format!("1={node2}")],
        vec![format!("1={app}")],
        vec![format!("2={node1}")],
        vec![format!("1={node1}"), format!("1={node1}")],
        vec!["1=/no/such/file".to_owned()],
        vec!["1=".to_owned()],
    ];
    for certs in refused {
        let out = run(&certs);
        assert_eq!(out.status.code(), Some(2), "{certs:?}");
        assert!(!genesis.exists(), "{certs:?}");
    }
    assert!(run(&[format!("1={node1}")]).status.success());
    let loaded = alliance::config::Genesis::load(&genesis).unwrap();
    let pem = std::fs::read(&node1).unwrap();
    let der = alliance::identity::first_cert_der(&pem).unwrap();
    let expected = hex::encode(alliance::identity::lapsed::key_sha256(&der).unwrap());
    assert_eq!(
        loaded.node(1).unwrap().key_sha256.as_deref(),
        Some(&*expected)
    );
    assert_eq!(loaded.node(2).unwrap().key_sha256, None);
}

/// `bench-history.sh` checks its arguments before it builds or starts
/// anything.
#[test]
fn bench_history_script_refuses_bad_arguments() {
    refuses_bad_arguments(
        "bench-history.sh",
        &[
            &["--millions"],
            &["--millions", "2"],
            &["--millions", "101"],
            &["--millions", "x"],
            &["--batch", "0"],
            &["--batch", "8190"],
            &["--snapshot-every", "9"],
            &["--snapshot-every", "100001"],
            &["--logs-kept"],
            &["--logs-kept", "-1"],
            &["--logs-kept", "100001"],
            &["--logs-kept", "x"],
            &["--bogus"],
        ],
    );
}

/// `api-contract.sh` checks its arguments before it starts anything.
#[test]
fn api_contract_script_refuses_bad_arguments() {
    let alliance = env!("CARGO_BIN_EXE_alliance");
    let here = env!("CARGO_MANIFEST_DIR");
    refuses_bad_arguments(
        "api-contract.sh",
        &[
            &[],
            &["--alliance"],
            &["--alliance", "/nonexistent/alliance"],
            &["--alliance", here],
            &["--alliance", alliance, "--examples", "0"],
            &["--alliance", alliance, "--examples", "10001"],
            &["--alliance", alliance, "--examples", "x"],
            &["--alliance", alliance, "--dir", here],
            &["--alliance", alliance, "--bogus"],
        ],
    );
}
