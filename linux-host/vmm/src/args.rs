//! The VMM's command line.
//!
//! ```text
//! pkvm-vmm [--dev PATH] GUEST...        GUEST: --guest FILE [--args TEXT] [OPTS]
//!                                              --linux-guest IMAGE --initrd FILE [--disk FILE] [OPTS]
//!                                       OPTS:  [--guest-mem SIZE] [--guest-vcpus N]
//! pkvm-vmm --hostile N [--seed S]
//! pkvm-vmm --bench N
//! ```
//! Options after a guest apply to it. An ELF guest's memory defaults to
//! 64M, a Linux guest's to 128M.

/// What a guest runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// An AArch64 ELF program with these bootargs (its DTB's).
    Elf { bootargs: String },
    /// An arm64 Linux Image with its initramfs and, for its virtio-blk, a
    /// disk file the guest reads and writes.
    Linux { initrd: Option<String>, disk: Option<String> },
}

#[derive(Debug, PartialEq, Eq)]
pub struct GuestArgs {
    pub path: String,
    pub mem: u64,
    pub vcpus: u32,
    pub kind: Kind,
}

pub const ELF_MEM: u64 = 64 << 20;
pub const LINUX_MEM: u64 = 128 << 20;

/// "64M", "1G", "4096K", "1048576".
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The device and the guests, in order.
pub fn parse(args: &[String]) -> Result<(String, Vec<GuestArgs>), String> {
    let mut dev = "/dev/pkvm".to_string();
    let mut guests: Vec<GuestArgs> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = match a.as_str() {
            "--dev" | "--guest" | "--linux-guest" | "--guest-mem" | "--guest-vcpus" | "--args" | "--initrd"
            | "--disk" => it.next().cloned().ok_or(format!("{a} needs a value"))?,
            other => return Err(format!("unknown argument {other}")),
        };
        let elf = |bootargs| Kind::Elf { bootargs };
        match a.as_str() {
            "--dev" => dev = v,
            "--guest" => guests.push(GuestArgs { path: v, mem: ELF_MEM, vcpus: 1, kind: elf(String::new()) }),
            "--linux-guest" => guests.push(GuestArgs {
                path: v,
                mem: LINUX_MEM,
                vcpus: 1,
                kind: Kind::Linux { initrd: None, disk: None },
            }),
            _ => {
                let g = guests.last_mut().ok_or(format!("{a} goes after a --guest or --linux-guest"))?;
                match (a.as_str(), &mut g.kind) {
                    ("--guest-mem", _) => {
                        g.mem = parse_size(&v)
                            .filter(|m| *m >= 1 << 20 && m.is_multiple_of(4096))
                            .ok_or(format!("--guest-mem {v}: a multiple of 4K, at least 1M (e.g. 64M)"))?;
                    }
                    ("--guest-vcpus", _) => {
                        g.vcpus =
                            v.parse().ok().filter(|n| (1..=8).contains(n)).ok_or(format!("--guest-vcpus {v}: 1..8"))?;
                    }
                    ("--args", Kind::Elf { bootargs }) => *bootargs = v,
                    ("--initrd", Kind::Linux { initrd, .. }) => *initrd = Some(v),
                    ("--disk", Kind::Linux { disk, .. }) => *disk = Some(v),
                    ("--args", _) => return Err("--args goes with a --guest (a Linux guest's are fixed)".into()),
                    _ => return Err(format!("{a} goes with a --linux-guest")),
                }
            }
        }
    }
    if guests.is_empty() {
        return Err("no --guest FILE or --linux-guest IMAGE".into());
    }
    if let Some(g) = guests.iter().find(|g| matches!(g.kind, Kind::Linux { initrd: None, .. })) {
        return Err(format!("--linux-guest {}: give its --initrd", g.path));
    }
    Ok((dev, guests))
}

/// `--hostile N [--seed S]`, if that is what `args` asks for.
pub fn hostile(args: &[String]) -> Option<Result<(u64, u64), String>> {
    if args.first().map(String::as_str) != Some("--hostile") {
        return None;
    }
    let num =
        |i: usize, what: &str| args.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or(format!("{what} needs a number"));
    Some(match args.len() {
        2 => num(1, "--hostile").map(|n| (n, 1)),
        4 if args[2] == "--seed" => num(1, "--hostile").and_then(|n| Ok((n, num(3, "--seed")?))),
        _ => Err("usage: pkvm-vmm --hostile N [--seed S]".into()),
    })
}

/// `--bench N`, if that is what `args` asks for.
pub fn bench(args: &[String]) -> Option<Result<usize, String>> {
    match args {
        [b, n] if b == "--bench" => Some(n.parse().ok().filter(|&n| n > 0).ok_or("--bench needs a count".into())),
        [b, ..] if b == "--bench" => Some(Err("usage: pkvm-vmm --bench N".into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_apply_to_their_guest() {
        let (dev, g) = parse(&args(
            "--guest a.elf --guest-mem 32M --guest b.elf --guest-vcpus 2 --args test=all \
             --linux-guest Image --initrd i.cpio --disk d.img --guest-vcpus 2",
        ))
        .unwrap();
        assert_eq!(dev, "/dev/pkvm");
        assert_eq!(
            g,
            [
                GuestArgs {
                    path: "a.elf".into(),
                    mem: 32 << 20,
                    vcpus: 1,
                    kind: Kind::Elf { bootargs: String::new() }
                },
                GuestArgs {
                    path: "b.elf".into(),
                    mem: ELF_MEM,
                    vcpus: 2,
                    kind: Kind::Elf { bootargs: "test=all".into() }
                },
                GuestArgs {
                    path: "Image".into(),
                    mem: LINUX_MEM,
                    vcpus: 2,
                    kind: Kind::Linux { initrd: Some("i.cpio".into()), disk: Some("d.img".into()) },
                },
            ]
        );
        assert_eq!(parse(&args("--dev /tmp/x --guest a")).unwrap().0, "/tmp/x");
    }

    #[test]
    fn bad_arguments_say_why() {
        let e = |s: &str| parse(&args(s)).unwrap_err();
        assert!(e("").contains("no --guest"));
        assert!(e("--guest-mem 8M --guest a").contains("after a --guest"));
        assert!(e("--guest a --guest-mem 100K").contains("at least 1M"));
        assert!(e("--guest a --guest-mem 1000001").contains("multiple of 4K"));
        assert!(e("--guest a --guest-vcpus 9").contains("1..8"));
        assert!(e("--guest a --bogus").contains("unknown argument"));
        assert!(e("--guest").contains("needs a value"));
        assert!(e("--guest a --initrd x").contains("goes with a --linux-guest"));
        assert!(e("--linux-guest I --initrd x --args y").contains("a Linux guest's are fixed"));
        assert!(e("--linux-guest I --disk d").contains("give its --initrd"));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999G"), None);
    }

    #[test]
    fn bench_mode() {
        assert_eq!(bench(&args("--guest a")), None);
        assert_eq!(bench(&args("--bench 100")), Some(Ok(100)));
        assert!(bench(&args("--bench 0")).unwrap().is_err());
        assert!(bench(&args("--bench 1 2")).unwrap().is_err());
    }

    #[test]
    fn hostile_mode() {
        assert_eq!(hostile(&args("--guest a")), None);
        assert_eq!(hostile(&args("--hostile 10")), Some(Ok((10, 1))));
        assert_eq!(hostile(&args("--hostile 10 --seed 7")), Some(Ok((10, 7))));
        assert!(hostile(&args("--hostile x")).unwrap().is_err());
        assert!(hostile(&args("--hostile 1 --seed")).unwrap().is_err());
    }
}
