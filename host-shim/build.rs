fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        // Position-independent, linked at 0: the hyp places the Image at a
        // 2 MiB-aligned address of its choosing, as for Linux.
        println!("cargo:rustc-link-arg-bins=--defsym=__link_base=0");
        println!("cargo:rustc-link-arg-bins=-pie");
        // Core is not built PIC: let its read-only data carry relocations,
        // which start.S applies before the MMU is on.
        println!("cargo:rustc-link-arg-bins=-znotext");
        println!("cargo:rustc-link-arg-bins=-T{dir}/../linker/el1.ld");
        println!("cargo:rerun-if-changed={dir}/../linker/el1.ld");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
