// Compiles a small C file with the `cc` crate and links it statically into this crate.
fn main() {
    println!("cargo:rerun-if-changed=csrc/checksum.c");
    cc::Build::new().file("csrc/checksum.c").opt_level(2).compile("benchchecksum");
}
