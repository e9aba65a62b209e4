//! Running `netd inspect` as an operator would: the real binary, in the node's namespace
//! (`nsenter --net`, so underlay routes are the node's), against its socket and config.

use crate::cluster::{netd_bin, Node};
use crate::cmd::Background;
use crate::netns;
use serde_json::Value;
use std::path::Path;

/// One `netd inspect` run: exit code, stdout, stderr.
#[derive(Debug)]
pub struct Inspect {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Inspect {
    /// The JSON output; panics (with the output) when it does not parse.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "inspect output is not JSON ({e}); code {} stdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }
}

fn base_args(node: &Node) -> Vec<String> {
    vec![
        format!("--net={}", netns::path(&node.netns).display()),
        netd_bin().display().to_string(),
        "inspect".into(),
        "--socket".into(),
        node.socket.display().to_string(),
        "--config".into(),
        node.config_path.display().to_string(),
    ]
}

/// `netd inspect ARGS...` on `node`.
pub fn inspect(node: &Node, args: &[&str]) -> Inspect {
    let mut full = base_args(node);
    full.extend(args.iter().map(|s| s.to_string()));
    let out = std::process::Command::new("nsenter")
        .args(&full)
        .output()
        .expect("spawning netd inspect");
    Inspect {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `netd inspect events --json` on `node` in the background (output in `dir`).
pub fn watch(node: &Node, dir: &Path, tag: &str) -> Background {
    let mut full = base_args(node);
    full.extend(["--json".into(), "events".into()]);
    Background::spawn("nsenter", &full, dir, tag).expect("spawning netd inspect events")
}
