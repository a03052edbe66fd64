//! The admin scripts, embedded in the binary so the demo works from any
//! directory: written out under the demo's directory and run with `sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The admin scripts, embedded so the demo works from any directory.
pub const SCRIPTS: [(&str, &str); 3] = [
    ("new-org.sh", include_str!("../../scripts/new-org.sh")),
    ("issue-cert.sh", include_str!("../../scripts/issue-cert.sh")),
    (
        "new-genesis.sh",
        include_str!("../../scripts/new-genesis.sh"),
    ),
];

/// Writes the embedded scripts under `dir/scripts` and returns that folder.
pub fn write_scripts(dir: &Path) -> Result<PathBuf> {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts)?;
    for (name, text) in SCRIPTS {
        std::fs::write(scripts.join(name), text)?;
    }
    Ok(scripts)
}

/// Runs one of our scripts with `sh`; its stderr is shown on failure.
pub fn run_script(scripts: &Path, name: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("sh")
        .arg(scripts.join(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Other(format!("running {name}: {e} (is `sh` installed?)")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{name} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
