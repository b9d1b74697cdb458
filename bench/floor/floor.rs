//! The "floor" RUSTC_WRAPPER of scripts/bench: the least any compilation cache can cost.
//!
//! Record mode (`FLOOR_MODE=record`) runs rustc, and for each successful compilation stores its
//! outputs (the targets of rustc's dep-info file), stdout and stderr under a key made of the
//! working directory and the full argv. Replay mode (`FLOOR_MODE=replay`) looks the key up and
//! only hard-links (`FLOOR_LINK=1`) or copies the outputs into place and replays the output;
//! anything not recorded is exec'd to rustc. No hashing of inputs, no daemon: correct only for
//! rebuilding exactly what was recorded, which is all a floor has to be.
//! Built with plain `rustc -O` (std only) by scripts/bench.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{exit, Command, Stdio};

extern "C" {
    // POSIX utimes(2); a null `times` sets both times to now.
    fn utimes(path: *const std::ffi::c_char, times: *const std::ffi::c_void) -> std::ffi::c_int;
}

/// Sets a placed output's mtime to now: a hard link shares the recorded file's old mtime, which
/// would make Cargo see it as older than the build-script outputs of this very build.
fn touch(path: &Path) {
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: `c` is a valid NUL-terminated path; a null times pointer is allowed.
        unsafe { utimes(c.as_ptr(), std::ptr::null()) };
    }
}

fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn key(cwd: &Path, args: &[OsString]) -> String {
    let mut h = fnv1a(cwd.as_os_str().as_bytes(), 0xcbf2_9ce4_8422_2325);
    for a in args {
        h = fnv1a(b"\0", h);
        h = fnv1a(a.as_bytes(), h);
    }
    format!("{h:016x}")
}

fn exec_rustc(args: &[OsString]) -> ! {
    let err = Command::new(&args[0]).args(&args[1..]).exec();
    eprintln!("floor: cannot exec {:?}: {err}", args[0]);
    exit(127)
}

/// Value of a rustc option given as `--flag value` or `--flag=value`.
fn flag(args: &[OsString], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == name {
            return it.next();
        }
        if let Some(v) = a.strip_prefix(&eq) {
            return Some(v.to_string());
        }
    }
    None
}

/// Value of a codegen option `-C name=value` / `-Cname=value`.
fn codegen(args: &[OsString], name: &str) -> Option<String> {
    let pre = format!("{name}=");
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        let opt = if a == "-C" { it.next() } else { a.strip_prefix("-C").map(str::to_string) };
        if let Some(v) = opt.as_deref().and_then(|o| o.strip_prefix(&pre)) {
            return Some(v.to_string());
        }
    }
    None
}

/// Output files of a compilation: the targets of its dep-info rules that have prerequisites.
fn outputs(dep_info: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string(dep_info).unwrap_or_default();
    let mut outs = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(i) = line.find(": ") {
            let target = line[..i].replace("\\ ", " ");
            if !line[i + 2..].trim().is_empty() {
                outs.push(PathBuf::from(target));
            }
        }
    }
    outs
}

fn record(args: &[OsString], entry: &Path, link: bool) -> ! {
    let out_dir = flag(args, "--out-dir");
    let crate_name = flag(args, "--crate-name");
    let reads_stdin = args.iter().any(|a| a == "-");
    let (Some(out_dir), Some(crate_name), false) = (out_dir, crate_name, reads_stdin) else {
        exec_rustc(args)
    };
    let extra = codegen(args, "extra-filename").unwrap_or_default();
    // Stream rustc's output through as it comes: Cargo starts dependent crates as soon as it
    // reads the rmeta artifact notification on stderr, so buffering stderr until rustc exits
    // would cost the build its pipelining.
    let mut child = match Command::new(&args[0])
        .args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("floor: cannot run {:?}: {e}", args[0]);
            exit(127)
        }
    };
    let mut child_out = child.stdout.take().expect("piped stdout");
    let stdout_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        child_out.read_to_end(&mut buf).ok();
        std::io::stdout().write_all(&buf).ok();
        buf
    });
    // FLOOR_BUFFER=1 holds stderr back until rustc exits, as a daemon that returns a finished
    // compilation's output does: the pipelining experiment of docs/benchmarks.md.
    let buffer = env::var("FLOOR_BUFFER").map(|v| v == "1").unwrap_or(false);
    let mut stderr_buf = Vec::new();
    let mut reader = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
        if !buffer {
            let mut err = std::io::stderr().lock();
            err.write_all(&line).ok();
            err.flush().ok();
        }
        stderr_buf.extend_from_slice(&line);
        line.clear();
    }
    let status = child.wait().expect("floor: wait for rustc");
    if buffer {
        std::io::stderr().write_all(&stderr_buf).ok();
    }
    let stdout_buf = stdout_thread.join().unwrap_or_default();
    struct Out {
        status: std::process::ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    }
    let out = Out { status, stdout: stdout_buf, stderr: stderr_buf };
    let code = out.status.code().unwrap_or(1);
    if code == 0 {
        let dep_info = Path::new(&out_dir).join(format!("{crate_name}{extra}.d"));
        let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).expect("floor: store");
        let mut manifest = Vec::new();
        for (i, path) in outputs(&dep_info).iter().enumerate() {
            let stored = tmp.join(i.to_string());
            let ok = if link { fs::hard_link(path, &stored).is_ok() } else { false };
            if !ok {
                fs::copy(path, &stored).expect("floor: store output");
            }
            manifest.extend_from_slice(format!("{i}\t").as_bytes());
            manifest.extend_from_slice(path.as_os_str().as_bytes());
            manifest.push(b'\n');
        }
        fs::write(tmp.join("manifest"), manifest).expect("floor: manifest");
        fs::write(tmp.join("stdout"), &out.stdout).expect("floor: stdout");
        fs::write(tmp.join("stderr"), &out.stderr).expect("floor: stderr");
        let _ = fs::rename(&tmp, entry);
    }
    exit(code)
}

fn replay(args: &[OsString], entry: &Path, link: bool) -> ! {
    let Ok(manifest) = fs::read(entry.join("manifest")) else { exec_rustc(args) };
    for line in manifest.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let tab = line.iter().position(|b| *b == b'\t').expect("floor: manifest line");
        let src = entry.join(OsString::from_vec(line[..tab].to_vec()));
        let dst = PathBuf::from(OsString::from_vec(line[tab + 1..].to_vec()));
        let _ = fs::remove_file(&dst);
        let placed = if link { fs::hard_link(&src, &dst) } else { fs::copy(&src, &dst).map(|_| ()) };
        if let Err(e) = placed {
            eprintln!("floor: cannot place {dst:?}: {e}");
            exit(1)
        }
        if link {
            touch(&dst);
        }
    }
    std::io::stdout().write_all(&fs::read(entry.join("stdout")).unwrap_or_default()).ok();
    std::io::stderr().write_all(&fs::read(entry.join("stderr")).unwrap_or_default()).ok();
    exit(0)
}

fn main() {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: floor RUSTC [ARGS...] (FLOOR_MODE=record|replay, FLOOR_STORE=DIR)");
        exit(2)
    }
    let mode = env::var("FLOOR_MODE").unwrap_or_default();
    let store = PathBuf::from(env::var_os("FLOOR_STORE").unwrap_or_default());
    let link = env::var("FLOOR_LINK").map(|v| v == "1").unwrap_or(false);
    let cwd = env::current_dir().unwrap_or_default();
    let entry = store.join(key(&cwd, &args));
    match mode.as_str() {
        "record" => record(&args, &entry, link),
        "replay" => replay(&args, &entry, link),
        _ => exec_rustc(&args),
    }
}
