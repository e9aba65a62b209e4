//! Running external tools (`ip`, `bridge`, `ping`, `tcpdump`...) on the host or inside a
//! named network namespace, in the foreground or as background processes that die with
//! their guard.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command printed and how it ended.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub cmdline: String,
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Panics with the full command line and output unless the command succeeded.
    #[track_caller]
    pub fn expect_ok(self) -> CmdOutput {
        assert!(
            self.success,
            "`{}` failed ({:?})\nstdout: {}\nstderr: {}",
            self.cmdline, self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `program args...` on the host and waits for it.
pub fn run<S: AsRef<str>>(program: &str, args: &[S]) -> Result<CmdOutput> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let cmdline = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning `{cmdline}`"))?;
    Ok(CmdOutput {
        cmdline,
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a host command that must succeed; panics with its output otherwise.
#[track_caller]
pub fn run_ok<S: AsRef<str>>(program: &str, args: &[S]) -> CmdOutput {
    match run(program, args) {
        Ok(out) => out.expect_ok(),
        Err(e) => panic!("{e:#}"),
    }
}

/// Runs `cmd[0] cmd[1..]` inside the named network namespace (`ip netns exec`, which also
/// gives the tool a matching /sys) and waits for it.
pub fn exec_in<S: AsRef<str>>(netns: &str, cmd: &[S]) -> Result<CmdOutput> {
    let mut args = vec!["netns", "exec", netns];
    args.extend(cmd.iter().map(AsRef::as_ref));
    run("ip", &args)
}

/// Like [`exec_in`] but the command must succeed.
#[track_caller]
pub fn exec_in_ok<S: AsRef<str>>(netns: &str, cmd: &[S]) -> CmdOutput {
    match exec_in(netns, cmd) {
        Ok(out) => out.expect_ok(),
        Err(e) => panic!("{e:#}"),
    }
}

/// A process running in the background, killed (SIGKILL) and reaped when dropped so that
/// a panicking test leaves nothing behind. Output goes to files so long runs cannot block
/// on a full pipe.
pub struct Background {
    child: Child,
    pub cmdline: String,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Background {
    /// Starts `cmd` inside `netns` (via `ip netns exec`, which execs the tool, so the pid
    /// we hold is the tool's own). Output is written to `<dir>/<tag>.out|.err`.
    pub fn spawn_in<S: AsRef<str>>(netns: &str, cmd: &[S], dir: &Path, tag: &str) -> Result<Self> {
        let mut full = vec!["netns".to_string(), "exec".into(), netns.into()];
        full.extend(cmd.iter().map(|s| s.as_ref().to_string()));
        Self::spawn("ip", &full, dir, tag)
    }

    /// Starts `program args...` on the host with output to `<dir>/<tag>.out|.err`.
    pub fn spawn<S: AsRef<str>>(program: &str, args: &[S], dir: &Path, tag: &str) -> Result<Self> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let cmdline = format!("{program} {}", args.join(" "));
        let stdout_path = dir.join(format!("{tag}.out"));
        let stderr_path = dir.join(format!("{tag}.err"));
        let child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?)
            .spawn()
            .with_context(|| format!("spawning `{cmdline}`"))?;
        Ok(Self {
            child,
            cmdline,
            stdout_path,
            stderr_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` and waits up to `timeout` for the process to exit; SIGKILL after that.
    pub fn stop_with(&mut self, signal: i32, timeout: Duration) {
        if !self.is_running() {
            return;
        }
        // SAFETY: plain kill(2) on a child we spawned and have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("`{}` still running after {timeout:?}", self.cmdline);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
