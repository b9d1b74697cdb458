//! distbuild-wrap, compiled: the shim Cargo runs instead of rustc, for the cost of a process.
//!
//! The same program as `distbuild_wrap.py` (which stays the reference and the fallback when
//! this cannot be built) without an interpreter to start: Cargo calls
//! `distbuild-wrap /path/to/rustc ARGS...`, the shim hands the invocation to the local master
//! over a Unix socket and replays its answer. If the master cannot be reached, answers
//! nonsense or dies mid-request, the shim execs rustc itself (so Cargo's jobserver
//! descriptors and stdin stay intact) and counts a fallback; a panic does the same.
//! `DISTBUILD_DISABLE=1` bypasses everything. The wire format is documented in
//! `distbuild/master/protocol.py`.
//!
//! Standard library only, built by `rustc -O` (distbuild/master/shim.py), with the Python
//! that starts the master baked in through the `DISTBUILD_PYTHON` build environment.

use std::env;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{self, Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const PYTHON: &str = env!("DISTBUILD_PYTHON");
const CONNECT_WAIT_S: f64 = 10.0; // how long to wait for an auto-started master
// After a master failed to start (<home>/master.failed says why), shims run rustc at once for
// this long instead of each paying for another failed start.
const RETRY_START: Duration = Duration::from_secs(30);
const CONNECT_POLL: Duration = Duration::from_millis(20);
const REQUEST_MAGIC: &[u8] = b"DBW1";
const REPLY_MAGIC: &[u8] = b"DBR1";
// What the daemon must not inherit from the build that happened to start it.
const BUILD_VARS: [&str; 6] = ["CARGO_", "RUSTC", "OUT_DIR", "RUST_", "MAKEFLAGS", "MFLAGS"];

extern "C" {
    fn setsid() -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
}

fn var(name: &str) -> Option<String> {
    env::var_os(name).map(|v| v.to_string_lossy().into_owned()).filter(|v| !v.is_empty())
}

fn home() -> String {
    let user_home = var("HOME").unwrap_or_else(|| "/".into());
    let mut home = var("DISTBUILD_HOME").unwrap_or_else(|| {
        let cache = var("XDG_CACHE_HOME").unwrap_or_else(|| format!("{user_home}/.cache"));
        format!("{cache}/cargo-distbuild")
    });
    if let Some(rest) = home.strip_prefix('~') {
        home = format!("{user_home}{rest}");
    }
    if !home.starts_with('/') {
        let cwd = env::current_dir().unwrap_or_else(|_| "/".into());
        home = format!("{}/{home}", cwd.display());
    }
    home
}

fn exec_rustc(argv: &[OsString]) -> ! {
    // Searches PATH when argv[0] has no slash, like execvp.
    let err = Command::new(&argv[0]).args(&argv[1..]).exec();
    eprintln!("distbuild-wrap: cannot run {}: {err}", argv[0].to_string_lossy());
    process::exit(127)
}

/// `DISTBUILD_BUILD_ID` if it is a plain name (it names a file).
fn build_id() -> Option<String> {
    var("DISTBUILD_BUILD_ID").filter(|b| {
        b.len() <= 64 && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    })
}

/// Count the fallback (one byte appended to <home>/fallbacks, and within a build to
/// <home>/builds/<id>.fallbacks) and run rustc.
fn fallback(home: &str, argv: &[OsString]) -> ! {
    let mut files = vec![format!("{home}/fallbacks")];
    if let Some(build) = build_id() {
        files.push(format!("{home}/builds/{build}.fallbacks"));
    }
    for path in files {
        if let Ok(mut f) = OpenOptions::new().append(true).create(true).open(path) {
            let _ = f.write_all(b"f");
        }
    }
    exec_rustc(argv)
}

/// Start the daemon detached from Cargo: its own session, no inherited descriptors.
fn start_master(home: &str) -> io::Result<Child> {
    fs::create_dir_all(home)?;
    let log = OpenOptions::new().append(true).create(true).open(format!("{home}/master.log"))?;
    let python = var("DISTBUILD_PYTHON").unwrap_or_else(|| PYTHON.to_string());
    let mut cmd = Command::new(python);
    cmd.args(["-m", "distbuild.master.daemon"]).current_dir("/").env_clear();
    for (k, v) in env::vars_os() {
        let key = k.to_string_lossy();
        if !BUILD_VARS.iter().any(|p| key.starts_with(p)) {
            cmd.env(k, v);
        }
    }
    // The daemon runs in "/": paths it is given must not be relative to our directory.
    cmd.env("DISTBUILD_HOME", home);
    if let Some(config) = var("DISTBUILD_CONFIG") {
        if !config.starts_with('/') && !config.starts_with('~') {
            let cwd = env::current_dir()?;
            cmd.env("DISTBUILD_CONFIG", cwd.join(config));
        }
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    unsafe {
        cmd.pre_exec(|| {
            setsid();
            // Close Cargo's jobserver pipe and anything else on exec (std's own pipe to
            // report exec errors is close-on-exec already).
            for fd in 3..1024 {
                fcntl(fd, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn failed_recently(home: &str) -> bool {
    fs::metadata(format!("{home}/master.failed"))
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().map_or(true, |age| age < RETRY_START))
        .unwrap_or(false)
}

/// Note that starting a master failed (the master itself writes why when it can).
fn mark_failed(home: &str) {
    let path = format!("{home}/master.failed");
    if let Ok(mut f) = OpenOptions::new().append(true).create(true).open(&path) {
        if f.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            let _ = f.write_all(b"the master did not come up; see master.log\n");
        }
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

fn connect_or_start(home: &str) -> Option<UnixStream> {
    let sock = format!("{home}/master.sock");
    if let Ok(s) = UnixStream::connect(&sock) {
        return Some(s);
    }
    if failed_recently(home) {
        return None;
    }
    let mut child = Some(start_master(home).ok()?);
    let wait = var("DISTBUILD_CONNECT_WAIT").and_then(|v| v.parse().ok()).unwrap_or(CONNECT_WAIT_S);
    let deadline = Instant::now() + Duration::from_secs_f64(wait);
    while Instant::now() < deadline {
        thread::sleep(CONNECT_POLL);
        if let Ok(s) = UnixStream::connect(&sock) {
            return Some(s);
        }
        if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
            if !status.success() {
                break; // it could not start: do not wait out the limit
            }
            child = None; // another master holds the lock: it will answer
        }
    }
    mark_failed(home);
    None
}

fn request(s: &mut UnixStream, argv: &[OsString]) -> io::Result<Vec<u8>> {
    let mut fields: Vec<Vec<u8>> = vec![b"C".to_vec(), env::current_dir()?.into_os_string().into_vec()];
    fields.push(argv.len().to_string().into_bytes());
    fields.extend(argv.iter().map(|a| a.as_bytes().to_vec()));
    for (k, v) in env::vars_os() {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        fields.push(kv);
    }
    let payload = fields.join(&0u8);
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.extend_from_slice(REQUEST_MAGIC);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    s.write_all(&frame)?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    if &head[..4] != REPLY_MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad reply from master"));
    }
    let mut body = vec![0u8; u32::from_le_bytes(head[4..].try_into().unwrap()) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// The exit code to return, or None: run rustc (after counting a fallback if `fell_back`).
fn replay(body: &[u8]) -> Option<(bool, i32)> {
    match body.first() {
        Some(b'X') => Some((true, 0)),
        Some(b'R') if body.len() >= 13 => {
            let code = i32::from_le_bytes(body[1..5].try_into().ok()?);
            let out_len = usize::try_from(u64::from_le_bytes(body[5..13].try_into().ok()?)).ok()?;
            let rest = &body[13..];
            if out_len > rest.len() {
                return None;
            }
            io::stdout().lock().write_all(&rest[..out_len]).ok()?;
            io::stdout().flush().ok()?;
            io::stderr().lock().write_all(&rest[out_len..]).ok()?;
            Some((false, code))
        }
        _ => None,
    }
}

fn run(home: &str, argv: &[OsString]) -> i32 {
    let Some(mut s) = connect_or_start(home) else { fallback(home, argv) };
    let timeout = var("DISTBUILD_REQUEST_TIMEOUT").and_then(|v| v.parse().ok()).unwrap_or(3600.0);
    let body = s
        .set_read_timeout(Some(Duration::from_secs_f64(timeout)))
        .and_then(|()| request(&mut s, argv));
    drop(s);
    match body.ok().as_deref().and_then(replay) {
        Some((true, _)) => exec_rustc(argv),
        Some((false, code)) => code,
        None => fallback(home, argv),
    }
}

fn main() {
    let argv: Vec<OsString> = env::args_os().skip(1).collect();
    if argv.is_empty() {
        eprintln!("usage: distbuild-wrap RUSTC [ARGS...]  (set as RUSTC_WRAPPER)");
        process::exit(2);
    }
    if var("DISTBUILD_DISABLE").as_deref() == Some("1") {
        exec_rustc(&argv);
    }
    let home = home();
    // A bug in the shim must not break the build either.
    match std::panic::catch_unwind(|| run(&home, &argv)) {
        Ok(code) => process::exit(code),
        Err(_) => fallback(&home, &argv),
    }
}
