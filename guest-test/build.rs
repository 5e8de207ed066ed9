fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        // A plain QEMU-virt EL1 program: linked at RAM + 512 KiB (the DTB sits
        // at the base of guest RAM, as QEMU does for ELF images).
        println!("cargo:rustc-link-arg-bins=--defsym=__link_base=0x40080000");
        println!("cargo:rustc-link-arg-bins=-T{dir}/../linker/el1.ld");
        println!("cargo:rerun-if-changed={dir}/../linker/el1.ld");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
