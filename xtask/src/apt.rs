//! The machine's apt sources, and the entries the xtask adds when apt lacks
//! a suite it needs (Debian 12: `bookworm-backports` for QEMU 10, and a
//! `deb-src` entry for Debian's Linux source).
//!
//! An added entry uses the machine's own mirror: the URIs of the entry
//! that serves the release's main suite (`bookworm` on Debian 12) in apt's
//! sources (`Dir::Etc::sourcelist` and the `*.list` and `*.sources` files of
//! `Dir::Etc::sourceparts`, as `apt-config` reports them), in that entry's
//! format (one-line or deb822) and with its options (`Signed-By`,
//! `Architectures`, `Trusted`, ...): a local mirror or a caching proxy
//! serves the added suite as it serves the others. No mirror is named here.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::progress::{self, Progress, Total};
use crate::sys::as_root;

/// How an entry is written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    /// `deb [options] uri suite component...` (`*.list`).
    OneLine,
    /// `Types:`, `URIs:`, ... paragraphs (`*.sources`).
    Deb822,
}

/// One entry of apt's sources (a deb822 paragraph may list several types,
/// URIs and suites).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub format: Format,
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// The other options as written: one-line `key=value` (name "key",
    /// value "value"), or deb822 fields (value: the text after the colon,
    /// continuation lines included).
    pub options: Vec<(String, String)>,
    /// The file it is in.
    pub file: PathBuf,
}

/// Entries of a one-line sources file (`sources.list`, `*.list`).
pub fn parse_one_line(text: &str, file: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((ty, rest)) = line.split_once(char::is_whitespace) else { continue };
        if ty != "deb" && ty != "deb-src" {
            continue;
        }
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((opts, r)) => (opts, r),
            None => ("", rest),
        };
        let rest = rest.trim_start();
        let options: Vec<(String, String)> = options
            .split_whitespace()
            .map(|o| o.split_once('=').map_or((o.to_string(), String::new()), |(k, v)| (k.into(), v.into())))
            .collect();
        // A CD-ROM's URI names the disc in brackets, spaces included.
        let (uri, rest) = match rest.strip_prefix("cdrom:[").and_then(|r| r.split_once(']')) {
            Some((disc, r)) => {
                let end = r.find(char::is_whitespace).unwrap_or(r.len());
                (format!("cdrom:[{disc}]{}", &r[..end]), &r[end..])
            }
            None => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                (rest[..end].to_string(), &rest[end..])
            }
        };
        let mut words = rest.split_whitespace().map(String::from);
        let Some(suite) = words.next().filter(|_| !uri.is_empty()) else { continue };
        out.push(Entry {
            format: Format::OneLine,
            types: vec![ty.into()],
            uris: vec![uri],
            suites: vec![suite],
            components: words.collect(),
            options,
            file: file.into(),
        });
    }
    out
}

/// Entries of a deb822 sources file (`*.sources`); paragraphs with
/// `Enabled: no` are left out.
pub fn parse_deb822(text: &str, file: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut flush = |fields: &mut Vec<(String, String)>| {
        let get = |name: &str| {
            fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).unwrap_or("")
        };
        let words = |name: &str| get(name).split_whitespace().map(String::from).collect::<Vec<_>>();
        let enabled = !get("Enabled").trim().eq_ignore_ascii_case("no");
        let (types, uris, suites) = (words("Types"), words("URIs"), words("Suites"));
        if enabled && !types.is_empty() && !uris.is_empty() && !suites.is_empty() {
            let own = ["Types", "URIs", "Suites", "Components", "Enabled"];
            out.push(Entry {
                format: Format::Deb822,
                types,
                uris,
                suites,
                components: words("Components"),
                options: fields
                    .iter()
                    .filter(|(n, _)| !own.iter().any(|o| o.eq_ignore_ascii_case(n)))
                    .cloned()
                    .collect(),
                file: file.into(),
            });
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut fields);
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.to_string()));
        }
    }
    flush(&mut fields);
    out
}

/// Entries of one sources file, by its name.
pub fn parse(text: &str, file: &Path) -> Vec<Entry> {
    if file.extension().is_some_and(|e| e == "sources") {
        parse_deb822(text, file)
    } else {
        parse_one_line(text, file)
    }
}

/// Where apt reads its sources: (`sources.list`, the `sources.list.d`
/// directory), from `apt-config`, else apt's defaults.
pub fn source_locations() -> (PathBuf, PathBuf) {
    let defaults = (PathBuf::from("/etc/apt/sources.list"), PathBuf::from("/etc/apt/sources.list.d"));
    let Ok(out) = Command::new("apt-config")
        .args(["shell", "SL", "Dir::Etc::sourcelist/f", "SP", "Dir::Etc::sourceparts/d"])
        .stderr(Stdio::null())
        .output()
    else {
        return defaults;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let var = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix("='")?.strip_suffix('\'')).map(PathBuf::from)
    };
    (var("SL").unwrap_or(defaults.0), var("SP").unwrap_or(defaults.1))
}

/// The files apt reads, in its order: the list, then the directory's
/// `*.list` and `*.sources` by name.
pub fn source_files(list: &Path, parts: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(parts).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.retain(|p| p.is_file() && p.extension().is_some_and(|e| e == "list" || e == "sources"));
    files.sort();
    files.insert(0, list.to_path_buf());
    files
}

/// Every entry apt reads on this machine.
pub fn read_sources(files: &[PathBuf]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => out.extend(parse(&t, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", f.display())),
        }
    }
    Ok(out)
}

/// Is `entry` one apt can fetch from as it is (not a CD-ROM)?
fn fetchable(entry: &Entry) -> bool {
    entry.uris.iter().all(|u| u.contains(':') && !u.starts_with("cdrom:"))
}

/// The entry that serves the release's main suite `codename` with its
/// `main` component: a binary (`deb`) one if there is, else a `deb-src`.
pub fn main_entry<'a>(entries: &'a [Entry], codename: &str) -> Option<&'a Entry> {
    let serves =
        |e: &&Entry| e.suites.iter().any(|s| s == codename) && e.components.iter().any(|c| c == "main") && fetchable(e);
    let binary = |e: &&Entry| e.types.iter().any(|t| t == "deb");
    entries.iter().filter(serves).find(binary).or_else(|| entries.iter().find(serves))
}

/// Does apt already have `suite` for `ty` (deb or deb-src)?
pub fn has(entries: &[Entry], ty: &str, suite: &str) -> bool {
    entries.iter().any(|e| e.types.iter().any(|t| t == ty) && e.suites.iter().any(|s| s == suite))
}

/// An entry the xtask adds: its file and its text.
#[derive(Debug, PartialEq)]
pub struct Addition {
    pub file: PathBuf,
    pub text: String,
}

/// The entry for `suite` (`ty`: deb or deb-src, component main) on the
/// mirror of the entry that serves `codename`, to be written into `parts`
/// as `pkvm-rs-<name>.list` or `.sources` (the format of that entry).
pub fn addition(
    entries: &[Entry],
    codename: &str,
    ty: &str,
    suite: &str,
    parts: &Path,
    name: &str,
) -> Result<Addition> {
    let Some(main) = main_entry(entries, codename) else {
        let seen: Vec<String> = entries
            .iter()
            .map(|e| format!("{} {} ({})", e.types.join(","), e.suites.join(","), e.file.display()))
            .collect();
        bail!(
            "apt has no entry for Debian's {codename} suite with its main component (the xtask adds {suite} on \
             that entry's mirror); the entries found: {}. Add an entry for {codename}, or add this one yourself: \
             {ty} <your mirror> {suite} main",
            if seen.is_empty() { "none".to_string() } else { seen.join("; ") }
        );
    };
    let header = format!(
        "# Added by cargo xtask (pkvm-rs): {ty} {suite}, on the mirror of the {codename} entry in {}\n",
        main.file.display()
    );
    let (ext, body) = match main.format {
        Format::Deb822 => {
            let mut b = format!("Types: {ty}\nURIs: {}\nSuites: {suite}\nComponents: main\n", main.uris.join(" "));
            for (n, v) in &main.options {
                b += &format!("{n}:{v}\n");
            }
            ("sources", b)
        }
        Format::OneLine => {
            let opts: Vec<String> =
                main.options.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect();
            let opts = if opts.is_empty() { String::new() } else { format!("[{}] ", opts.join(" ")) };
            ("list", main.uris.iter().map(|u| format!("{ty} {opts}{u} {suite} main\n")).collect())
        }
    };
    Ok(Addition { file: parts.join(format!("pkvm-rs-{name}.{ext}")), text: header + &body })
}

/// The machine's apt entries and the file an addition goes into.
pub struct Sources {
    pub entries: Vec<Entry>,
    pub parts: PathBuf,
}

impl Sources {
    pub fn read() -> Result<Sources> {
        let (list, parts) = source_locations();
        Ok(Sources { entries: read_sources(&source_files(&list, &parts))?, parts })
    }

    /// See [`addition`].
    pub fn addition(&self, codename: &str, ty: &str, suite: &str, name: &str) -> Result<Addition> {
        addition(&self.entries, codename, ty, suite, &self.parts, name)
    }
}

/// Writes `a` as root and runs `apt-get update`.
pub fn add(a: &Addition) -> Result<()> {
    let file = a.file.display().to_string();
    eprintln!("xtask: adding this apt entry as {file}:\n{}", a.text.trim_end());
    let Some(mut c) = as_root(&["tee", &file]) else {
        bail!("adding {file} needs root: run as root, or add it yourself and run apt-get update:\n{}", a.text);
    };
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().context("running tee")?;
    child.stdin.take().context("tee's stdin")?.write_all(a.text.as_bytes())?;
    if !child.wait()?.success() {
        bail!("writing {file} failed");
    }
    let Some(mut update) = as_root(&["apt-get", "update"]) else { bail!("apt-get update needs root") };
    if !update.status().context("running apt-get update")?.success() {
        bail!("apt-get update failed after adding {file}");
    }
    Ok(())
}

/// An apt size as apt prints it (`153 MB`, `1,007 kB`, `12.5 MB`, `512 B`)
/// in bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, unit) = s.trim().split_once(' ')?;
    let mul = match unit.trim() {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some((num.replace(',', "").parse::<f64>().ok()? * mul) as u64)
}

/// What an apt-get line says about the download's size: `Need to get N of
/// ...` gives the total, `Get:K ... [N]` one file's size.
fn size_in(line: &str) -> Option<(bool, u64)> {
    if let Some(rest) = line.strip_prefix("Need to get ") {
        // "Need to get 153 MB of source archives." / "Need to get 0 B/153 MB of archives."
        let amount = rest.split(" of ").next()?;
        return Some((true, parse_size(amount.rsplit('/').next()?)?));
    }
    if line.starts_with("Get:") {
        let inner = line.trim_end().strip_suffix(']')?.rsplit_once('[')?.1;
        return Some((false, parse_size(inner)?));
    }
    None
}

/// Bytes in the files of `dir` and of `dir/partial` (where apt puts what it
/// is still fetching).
fn bytes_in(dir: &Path) -> u64 {
    let files = |d: &Path| -> u64 {
        std::fs::read_dir(d)
            .map(|r| r.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    files(dir) + files(&dir.join("partial"))
}

/// Runs `get` (an `apt-get source --download-only` or `apt-get download`
/// that downloads into `dir`), its progress followed: the total from
/// apt's lines, what has arrived from the files' sizes. Returns apt's
/// success.
pub fn download(get: &mut Command, dir: &Path, what: &str) -> Result<bool> {
    let mut child = get.current_dir(dir).stdout(Stdio::piped()).spawn().context("running apt-get")?;
    let stdout = child.stdout.take().context("apt-get's stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let before = bytes_in(dir);
    let mut p = Progress::new(what, Total::Unknown, progress::MB);
    let (mut need, mut files) = (None, 0);
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(l) => match size_in(&l) {
                Some((true, n)) => need = Some(n),
                Some((false, n)) => files += n,
                None => {}
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(t) = need.or((files > 0).then_some(files)) {
            p.set_total(Total::Exact(t));
        }
        p.set(bytes_in(dir).saturating_sub(before), "");
    }
    let ok = child.wait().context("waiting for apt-get")?.success();
    let _ = reader.join();
    let got = bytes_in(dir).saturating_sub(before);
    p.finish(&format!("{what}: {:.1} MB", got as f64 / 1e6));
    Ok(ok)
}

/// The machine's release from /etc/os-release: (ID, VERSION_CODENAME).
pub fn os_release() -> (String, String) {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        os.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().trim_matches('"').to_string()).unwrap_or_default()
    };
    (field("ID="), field("VERSION_CODENAME="))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n\
        # a comment inside the paragraph\n\
        URIs: http://apt-proxy.example:3142/debian\n\
        Suites: bookworm bookworm-updates\n\
        Components: main contrib\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
        Check-Valid-Until: no\n\
        \n\
        Types: deb\n\
        URIs: http://apt-proxy.example:3142/debian-security\n\
        Suites: bookworm-security\n\
        Components: main\n\
        \n\
        Types: deb\n\
        URIs: http://old.example/debian\n\
        Suites: bookworm\n\
        Components: main\n\
        Enabled: no\n";

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn deb822_entries() {
        let e = parse(DEB822, &p("/etc/apt/sources.list.d/debian.sources"));
        assert_eq!(e.len(), 2, "the disabled paragraph is left out: {e:?}");
        assert_eq!(e[0].uris, ["http://apt-proxy.example:3142/debian"]);
        assert_eq!(e[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(e[0].components, ["main", "contrib"]);
        assert_eq!(
            e[0].options,
            [
                ("Signed-By".to_string(), " /usr/share/keyrings/debian-archive-keyring.gpg".to_string()),
                ("Check-Valid-Until".to_string(), " no".to_string())
            ]
        );
        assert_eq!(e[1].suites, ["bookworm-security"]);
    }

    #[test]
    fn one_line_entries() {
        let text = "# deb http://commented.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/etc/keys/mirror.gpg] file:/srv/mirror/debian bookworm main non-free # x\n\
                    deb-src file:/srv/mirror/debian bookworm main\n\
                    deb cdrom:[Debian 12]/ bookworm main\n\
                    deb http://broken.example\n";
        let e = parse(text, &p("/etc/apt/sources.list"));
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!((e[0].types[0].as_str(), e[0].uris[0].as_str()), ("deb", "file:/srv/mirror/debian"));
        assert_eq!(e[0].components, ["main", "non-free"]);
        assert_eq!(
            e[0].options,
            [("arch".to_string(), "amd64".to_string()), ("signed-by".to_string(), "/etc/keys/mirror.gpg".to_string())]
        );
        assert_eq!((e[1].types[0].as_str(), e[1].options.len()), ("deb-src", 0));
        assert_eq!((e[2].uris[0].as_str(), e[2].suites[0].as_str()), ("cdrom:[Debian 12]/", "bookworm"));
        assert!(!fetchable(&e[2]), "a CD-ROM is not a mirror");
    }

    #[test]
    fn the_main_suite_entry_gives_the_mirror() {
        let e = parse(DEB822, &p("/etc/apt/sources.list.d/debian.sources"));
        let a =
            addition(&e, "bookworm", "deb", "bookworm-backports", &p("/etc/apt/sources.list.d"), "backports").unwrap();
        assert_eq!(a.file, p("/etc/apt/sources.list.d/pkvm-rs-backports.sources"));
        assert_eq!(
            a.text,
            "# Added by cargo xtask (pkvm-rs): deb bookworm-backports, on the mirror of the bookworm entry in \
             /etc/apt/sources.list.d/debian.sources\n\
             Types: deb\n\
             URIs: http://apt-proxy.example:3142/debian\n\
             Suites: bookworm-backports\n\
             Components: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
             Check-Valid-Until: no\n"
        );
        // The result reads back as the entry it describes.
        let back = parse(&a.text, &a.file);
        assert_eq!(
            (back[0].suites.as_slice(), back[0].uris.as_slice()),
            (&["bookworm-backports".to_string()][..], &e[0].uris[..])
        );
    }

    #[test]
    fn a_one_line_mirror_gives_a_one_line_entry() {
        let text = "deb cdrom:[Debian 12]/ bookworm main\n\
                    deb [arch=amd64 trusted=yes] file:/srv/mirror/debian bookworm main\n";
        let e = parse(text, &p("/etc/apt/sources.list"));
        let a = addition(&e, "bookworm", "deb-src", "bookworm-backports", &p("/parts"), "linux-src").unwrap();
        assert_eq!(a.file, p("/parts/pkvm-rs-linux-src.list"));
        assert!(
            a.text.ends_with("\ndeb-src [arch=amd64 trusted=yes] file:/srv/mirror/debian bookworm-backports main\n"),
            "{}",
            a.text
        );
        assert_eq!(parse(&a.text, &a.file)[0].types, ["deb-src"]);
    }

    #[test]
    fn a_binary_entry_is_preferred_and_security_is_not_the_archive() {
        let text = "deb-src http://src.example/debian bookworm main\n\
                    deb http://security.example/debian-security bookworm-security main\n\
                    deb http://bin.example/debian bookworm main\n";
        let e = parse(text, &p("/etc/apt/sources.list"));
        assert_eq!(main_entry(&e, "bookworm").unwrap().uris, ["http://bin.example/debian"]);
        assert_eq!(main_entry(&e[..2], "bookworm").unwrap().uris, ["http://src.example/debian"]);
        assert!(main_entry(&e[1..2], "bookworm").is_none());
        assert!(has(&e, "deb", "bookworm-security") && !has(&e, "deb-src", "bookworm-security"));
    }

    #[test]
    fn no_usable_entry_is_a_precise_error() {
        let e = parse(
            "deb cdrom:[Debian 12]/ bookworm main\ndeb http://x.example/debian-security bookworm-security main\n",
            &p("/etc/apt/sources.list"),
        );
        let err = addition(&e, "bookworm", "deb", "bookworm-backports", &p("/d"), "b").unwrap_err().to_string();
        assert!(err.contains("apt has no entry for Debian's bookworm suite with its main component"), "{err}");
        assert!(err.contains("deb bookworm-security (/etc/apt/sources.list)"), "{err}");
        assert!(err.contains("deb <your mirror> bookworm-backports main"), "{err}");
        let err = addition(&[], "bookworm", "deb", "bookworm-backports", &p("/d"), "b").unwrap_err().to_string();
        assert!(err.contains("the entries found: none"), "{err}");
    }

    #[test]
    fn files_are_read_in_apts_order() {
        let dir = crate::paths::target_dir().join("xtask-apt-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("parts")).unwrap();
        std::fs::write(dir.join("parts/b.sources"), "Types: deb\nURIs: file:/b\nSuites: s\nComponents: main\n")
            .unwrap();
        std::fs::write(dir.join("parts/a.list"), "deb file:/a s main\n").unwrap();
        std::fs::write(dir.join("parts/c.list.save"), "deb file:/c s main\n").unwrap();
        let files = source_files(&dir.join("sources.list"), &dir.join("parts"));
        let uris: Vec<String> = read_sources(&files).unwrap().into_iter().flat_map(|e| e.uris).collect();
        assert_eq!(uris, ["file:/a", "file:/b"], "no sources.list, *.save ignored");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn download_sizes() {
        assert_eq!(parse_size("153 MB"), Some(153_000_000));
        assert_eq!(parse_size("1,007 kB"), Some(1_007_000));
        assert_eq!(parse_size("12.5 MB"), Some(12_500_000));
        assert_eq!(parse_size("512 B"), Some(512));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(size_in("Need to get 153 MB of source archives."), Some((true, 153_000_000)));
        assert_eq!(size_in("Need to get 0 B/153 MB of source archives."), Some((true, 153_000_000)));
        let get =
            "Get:1 http://mirror.example/debian bookworm/main arm64 busybox-static arm64 1:1.35.0-4+b4 [1,007 kB]";
        assert_eq!(size_in(get), Some((false, 1_007_000)));
        assert_eq!(size_in("Reading package lists..."), None);
    }

    /// On a Debian machine: the entries the xtask would add here (printed
    /// with `--nocapture`; `cargo xtask apt-entries` prints them too).
    #[test]
    fn this_machines_entries() {
        let (id, codename) = os_release();
        if id != "debian" || codename.is_empty() || !Path::new("/etc/apt").is_dir() {
            return;
        }
        let s = Sources::read().unwrap();
        let a = s.addition(&codename, "deb", &format!("{codename}-backports"), "backports").unwrap();
        println!("{}\n{}", a.file.display(), a.text);
        let main = main_entry(&s.entries, &codename).unwrap();
        assert_eq!(parse(&a.text, &a.file)[0].uris, main.uris);
    }
}
