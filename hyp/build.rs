fn main() {
    // Only the EL2 binary gets the linker script; host builds (tests) do not.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        println!("cargo:rustc-link-arg-bins=-T{dir}/../linker/hyp.ld");
        println!("cargo:rerun-if-changed={dir}/../linker/hyp.ld");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
