//! Running system commands as root (package installs).

use std::process::{Command, Stdio};

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

/// Runs `args` as root: directly when we are root, through `sudo -n` when
/// that works without a password; None when neither is possible.
pub fn as_root(args: &[&str]) -> Option<Command> {
    if is_root() {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        return Some(c);
    }
    let sudo_ok = Command::new("sudo")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    sudo_ok.then(|| {
        let mut c = Command::new("sudo");
        c.arg("-n").args(args);
        c
    })
}
