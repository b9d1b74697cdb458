//! Integration test of the benchmark binary.

use std::process::Command;

#[test]
fn prints_counts_as_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_benchcli")).arg("a b a").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["counts"][0]["count"], 2);
}
