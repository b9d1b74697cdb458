"""Helpers for tests and benchmarks of the Docker executor (real engine, no fakes).

* :data:`PROBE_SOURCE` is a small Rust program that tries what an action must not be able to
  do (connect out, write anywhere) and prints facts about its surroundings; tests compile it
  once with the host's rustc and run it as an action inside the container.
* :func:`host_toolchain` packages the host's rustup toolchain once per cache directory.
* :func:`leftover_containers` lists the action containers a test worker id left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import docker

from distbuild.cas.store import LocalCAS
from distbuild.errors import ExecutorUnavailable
from distbuild.executors.docker_cleanup import list_action_containers
from distbuild.toolchain import Toolchain, ensure_toolchain

PROBE_SOURCE = r"""
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args[0].as_str() {
        "connect" => {
            let addr: SocketAddr = args[1].parse().unwrap();
            match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(_) => println!("connected to {addr}"),
                Err(e) => { eprintln!("connect {addr} failed: {e}"); std::process::exit(3) }
            }
        }
        "write" => {
            let mut failed = false;
            for p in &args[1..] {
                match std::fs::write(p, b"written by the probe\n") {
                    Ok(()) => println!("wrote {p}"),
                    Err(e) => { eprintln!("write {p} failed: {e}"); failed = true }
                }
            }
            std::process::exit(if failed { 4 } else { 0 })
        }
        "sleep" => std::thread::sleep(Duration::from_secs_f64(args[1].parse().unwrap())),
        "bytes" => {
            let n: usize = args[1].parse().unwrap();
            let out: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
            std::io::stdout().write_all(&out).unwrap();
            std::io::stderr().write_all(b"\xff\x00 not utf-8 \xfe\n").unwrap();
            std::process::exit(args[2].parse().unwrap())
        }
        "status" => print!("{}", std::fs::read_to_string("/proc/self/status").unwrap()),
        "cat" => print!("{}", std::fs::read_to_string(&args[1]).unwrap_or_default()),
        "size" => println!("{}", std::fs::metadata(&args[1]).map(|m| m.len()).unwrap_or(0)),
        "alloc" => {
            let mib: usize = args[1].parse().unwrap();
            let mut v: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mib { v.push(vec![1u8; 1 << 20]); }
            println!("allocated {} MiB", v.len())
        }
        "threads" => {
            let n: usize = args[1].parse().unwrap();
            let mut handles = Vec::new();
            for i in 0..n {
                match std::thread::Builder::new()
                    .spawn(|| std::thread::sleep(Duration::from_millis(500))) {
                    Ok(h) => handles.push(h),
                    Err(e) => { eprintln!("thread {i} failed: {e}"); std::process::exit(5) }
                }
            }
            for h in handles { h.join().unwrap(); }
            println!("{n} threads")
        }
        other => { eprintln!("unknown probe command {other}"); std::process::exit(2) }
    }
}
"""


def host_rustc() -> str:
    """The real rustc of the host's default toolchain (not the rustup proxy)."""
    rustc = shutil.which("rustc")
    if rustc is None:
        raise ExecutorUnavailable("no rustc on PATH")
    sysroot = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    return os.path.join(sysroot, "bin", "rustc")


def build_probe(dest: Path, rustc: str | None = None) -> Path:
    """Compile PROBE_SOURCE with the host's rustc into ``dest`` (an executable)."""
    src = dest.with_suffix(".rs")
    src.write_text(PROBE_SOURCE)
    subprocess.run([rustc or host_rustc(), "--edition=2021", "-O", "-o", str(dest), str(src)],
                   check=True, capture_output=True)
    return dest


def host_toolchain(cache: Path, rustc: str | None = None) -> tuple[LocalCAS, Toolchain]:
    """The host toolchain packaged into ``cache/cas`` (packaged once, then remembered)."""
    store = LocalCAS(cache / "cas")
    return store, ensure_toolchain(rustc or host_rustc(), store, cache / "toolchains")


def leftover_containers(api: docker.APIClient, worker_id: str) -> list[str]:
    """Ids of the action containers of ``worker_id`` that still exist, running or stopped."""
    return [c["Id"][:12] for c in list_action_containers(api, worker_id)]
