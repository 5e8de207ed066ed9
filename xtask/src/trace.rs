//! `cargo xtask trace`: decodes trace records from a console log (live
//! `[trace]` lines or a host `[trace-dump]`/`[trace-bin]` dump) into a table,
//! a summary and a Chrome trace-event JSON (Perfetto), and renders stage-2
//! dumps (`[hyp] s2 ...` lines) as an SVG map.
//!
//! Over 600 lines because its decoding, summary and map share one record
//! parser and one console-log scanner; split by output it would be three
//! files importing the same private helpers. (To split: the SVG map.)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hyp_abi::trace::{Kind, Record, Resolution, Who, RECORD_SIZE};

/// Every record in a log, in order of appearance.
pub fn records(log: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for line in log.lines() {
        let hex = ["[hyp] trace ", "[trace-dump] ", "[trace-bin] "]
            .iter()
            .find_map(|p| line.find(p).map(|i| &line[i + p.len()..]))
            .map(|rest| rest.split(" |").next().unwrap_or("").trim());
        let Some(hex) = hex else { continue };
        if hex.len() != RECORD_SIZE * 2 {
            continue;
        }
        let bytes: Option<Vec<u8>> =
            (0..RECORD_SIZE).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
        if let Some(r) = bytes.as_deref().and_then(Record::from_bytes) {
            out.push(r);
        }
    }
    out
}

/// The table and summary, as text.
pub fn report(recs: &[Record]) -> String {
    let mut s = String::new();
    let t0 = recs.iter().map(|r| r.ts).min().unwrap_or(0);
    let _ = writeln!(s, "{:>10}  {:>3}  record", "ticks", "cpu");
    for r in recs {
        let _ = writeln!(s, "{:>10}  {:>3}  {}", r.ts - t0, r.cpu, r);
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut whos: BTreeMap<String, usize> = BTreeMap::new();
    let mut ipas: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut dma: BTreeMap<u64, (usize, std::collections::BTreeSet<u64>)> = BTreeMap::new();
    for r in recs.iter().filter(|r| r.kind() == Some(Kind::Dma)) {
        let e = dma.entry(r.arg2).or_default();
        e.0 += 1;
        e.1.insert(r.ipa & !0xfff);
    }
    for r in recs {
        *kinds.entry(r.kind().map(Kind::name).unwrap_or("?")).or_default() += 1;
        let who = if r.who == 0 { "host".to_string() } else { format!("{}", Who(r.who, 0)).replace("/vcpu0", "") };
        *whos.entry(who.clone()).or_default() += 1;
        if r.kind() == Some(Kind::Fault) {
            *ipas.entry((who, r.ipa & !0xfff)).or_default() += 1;
        }
    }
    let _ = writeln!(s, "\nsummary: {} records", recs.len());
    let _ = writeln!(s, "  by kind: {}", kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
    let _ = writeln!(s, "  by who:  {}", whos.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
    if !dma.is_empty() {
        let per = dma.iter().map(|(st, (n, pages))| format!("stream {st:#x}: {n} on {} page(s)", pages.len()));
        let _ = writeln!(s, "  DMA blocked by the SMMU: {}", per.collect::<Vec<_>>().join(", "));
    }
    let mut top: Vec<_> = ipas.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let _ = writeln!(s, "  most-faulting pages:");
    for ((who, ipa), n) in top.iter().take(10) {
        let _ = writeln!(s, "    {n:>5}  {who} {ipa:#x}");
    }
    s
}

/// The system counter's rate the hyp reported at boot (`[hyp] system
/// counter: N Hz`); QEMU virt's 62.5 MHz of QEMU < 9.1 for older logs.
pub fn counter_hz(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.split("[hyp] system counter: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(62_500_000)
}

/// Chrome trace-event JSON: one track per physical CPU (pid 0) and one per
/// VM and vCPU (pid = 1 + VM handle; the host is pid 1). `hz`: the rate of
/// the records' CNTPCT timestamps.
pub fn chrome_json(recs: &[Record], hz: u64) -> String {
    let t0 = recs.iter().map(|r| r.ts).min().unwrap_or(0);
    let mut ev = Vec::new();
    let mut pids = BTreeMap::new();
    for r in recs {
        let us = (r.ts - t0) as f64 * 1e6 / hz.max(1) as f64;
        let name = match (r.kind(), Resolution::from_u8(r.resolution)) {
            (Some(Kind::Fault), res) => format!("fault {res:?}"),
            (Some(k), _) => k.name().to_string(),
            (None, _) => "?".into(),
        };
        let text = format!("{r}").replace('\\', "\\\\").replace('"', "\\\"");
        let args = format!("{{\"record\":\"{text}\",\"ipa\":\"{:#x}\"}}", r.ipa);
        ev.push(format!(
            "{{\"name\":\"{name}\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{us:.3},\"pid\":0,\"tid\":{},\"args\":{args}}}",
            r.cpu
        ));
        let pid = 1 + r.who as u32;
        pids.insert(pid, r.who);
        ev.push(format!(
            "{{\"name\":\"{name}\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{us:.3},\"pid\":{pid},\"tid\":{},\"args\":{args}}}",
            r.vcpu
        ));
    }
    ev.push("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"args\":{\"name\":\"physical CPUs\"}}".into());
    for (pid, who) in pids {
        let name = if who == 0 { "host".to_string() } else { format!("vm {who}") };
        ev.push(format!("{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{pid},\"args\":{{\"name\":\"{name}\"}}}}"));
    }
    format!("{{\"traceEvents\":[\n{}\n]}}\n", ev.join(",\n"))
}

/// One range of a stage-2 dump.
#[derive(Clone, Debug, PartialEq)]
pub struct S2Range {
    pub table: String,
    pub start: u64,
    pub end: u64,
    /// Output address of a mapped range.
    pub pa: Option<u64>,
    /// State, memory type and permissions ("owned Normal rwx"), or who owns
    /// an unmapped range ("vm 1-owned (unmapped)").
    pub what: String,
    pub level: u8,
    /// How many ranges of the dump this one stands for: adjacent ranges of
    /// the same state, level and contiguous PA are drawn as one box.
    pub count: u64,
}

impl S2Range {
    /// Who owns the range and in which state, as words.
    pub fn owner_state(&self) -> (String, &'static str) {
        let me = self.table.clone();
        if self.what.starts_with("hyp-owned") {
            ("hyp".into(), "hyp-owned, unmapped")
        } else if self.what.starts_with("hyp-donated") {
            ("hyp".into(), "donated to the hyp by the host (RECLAIM_HYP gives it back), unmapped")
        } else if let Some(vm) = self.what.strip_suffix("-owned (unmapped)") {
            (vm.to_string(), "guest-owned, unmapped")
        } else if self.what.starts_with("shared-borrowed") {
            ("a guest, lent to this table".into(), "shared-borrowed")
        } else if self.what.starts_with("shared-owned") {
            (me, "shared-owned, lent to the host")
        } else if self.what.starts_with("owned") {
            (me, "owned")
        } else {
            ("?".into(), "?")
        }
    }

    /// Memory type and permissions of a mapped range ("Normal", "rwx").
    pub fn attrs(&self) -> Option<(&str, &str)> {
        self.pa?;
        let mut w = self.what.split_whitespace().skip(1);
        Some((w.next()?, w.next()?))
    }

    /// The `<title>` tooltip: owner, state, permissions, level, IPA → PA.
    pub fn tooltip(&self) -> String {
        let (owner, state) = self.owner_state();
        let mut t =
            format!("{} stage-2, IPA {:#x}..{:#x} ({})", self.table, self.start, self.end, size(self.end - self.start));
        if let Some(pa) = self.pa {
            let _ = write!(t, " → PA {:#x}..{:#x}", pa, pa + (self.end - self.start));
        }
        if self.count > 1 {
            let _ = write!(t, "\n{} adjacent ranges of this state, drawn as one", self.count);
        }
        let _ = write!(t, "\nowner: {owner}; state: {state}");
        if let Some((mem, perm)) = self.attrs() {
            let _ = write!(t, "\n{mem} memory, permissions {perm}");
        } else {
            t.push_str("\nnot mapped: an access faults");
        }
        let _ = write!(
            t,
            "\nlevel {} ({} {})",
            self.level,
            level_block(self.level),
            if self.level == 3 { "pages" } else { "blocks" }
        );
        t
    }
}

/// One stage-2 dump: its ranges and the moment of the run it shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    pub table: String,
    pub ranges: Vec<S2Range>,
    pub table_pages: Option<u64>,
    /// The last ownership transition before the dump (needs transition
    /// records in the log: `--dump-s2` streams them).
    pub after: Option<String>,
    /// The last line the host or a guest printed before the dump.
    pub context: Option<String>,
}

impl Band {
    /// "dump N: TABLE stage-2 after ...".
    pub fn caption(&self, n: usize) -> String {
        let mut c = format!("dump {n}: {} stage-2", self.table);
        match (&self.after, &self.context) {
            (Some(a), _) => {
                let _ = write!(c, ", after {a}");
            }
            (None, Some(l)) => {
                let _ = write!(c, ", after \"{l}\"");
            }
            (None, None) => {}
        }
        if let Some(p) = self.table_pages {
            let _ = write!(c, " ({p} table pages)");
        }
        c
    }
}

fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n.is_multiple_of(1 << 30) => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n.is_multiple_of(1 << 20) => format!("{} MiB", n >> 20),
        n => format!("{} KiB", n >> 10),
    }
}

fn level_block(level: u8) -> &'static str {
    match level {
        1 => "1 GiB",
        2 => "2 MiB",
        _ => "4 KiB",
    }
}

/// A transition record in the words of the ABI call behind it.
fn transition_words(r: &Record) -> String {
    use hyp_abi::trace::op;
    let call = match r.arg {
        op::GUEST_SHARE => "MEM_SHARE",
        op::GUEST_UNSHARE => "MEM_UNSHARE",
        op::RELINQUISH => "MEM_RELINQUISH",
        op::TEARDOWN => "VM_DESTROY",
        op::DONATE_GUEST => "DONATE_GUEST",
        op::SHARE_HYP => "SHARE_HYP",
        op::UNSHARE_HYP => "UNSHARE_HYP",
        op::DONATE_HYP => "DONATE_HYP",
        op::RECLAIM_HYP => "RECLAIM_HYP",
        op::PIN => "PIN",
        op::UNPIN => "UNPIN",
        other => op::name(other),
    };
    let who = if r.who == 0 { "host".to_string() } else { format!("vm {}", r.who) };
    let text = r.to_string();
    let result = text.rsplit_once(" -> ").map_or("", |(_, res)| res);
    if r.arg == op::TEARDOWN {
        return format!("{who} {call}, {} returned to the host: {result}", size(r.far));
    }
    format!("{who} {call} of {:#x} ({}): {result}", r.ipa, size(r.far))
}

/// Parses `[hyp] s2 NAME: 0xA..0xB[ -> PA] WHAT LN` lines; each dump (a run of
/// lines for one table, ended by "N table pages") becomes one band, captioned
/// with the last transition record and the last host or guest line before it.
pub fn s2_bands(log: &str) -> Vec<Band> {
    let mut bands: Vec<Band> = Vec::new();
    let mut cur: Vec<S2Range> = Vec::new();
    let (mut after, mut context): (Option<String>, Option<String>) = (None, None);
    for line in log.lines() {
        if let Some(r) = records(line).first().filter(|r| r.kind() == Some(Kind::Transition)) {
            after = Some(transition_words(r));
            continue;
        }
        let Some(rest) = line.split("[hyp] s2 ").nth(1) else {
            if (line.starts_with("[host] ") || line.starts_with("[vm ")) && cur.is_empty() {
                context = Some(line.to_string());
            }
            continue;
        };
        let Some((name, body)) = rest.split_once(": ") else { continue };
        if let Some(n) = body.strip_suffix(" table pages") {
            if !cur.is_empty() {
                bands.push(Band {
                    table: name.to_string(),
                    ranges: std::mem::take(&mut cur),
                    table_pages: n.parse().ok(),
                    after: after.clone(),
                    context: context.clone(),
                });
            }
            continue;
        }
        let Some((range, tail)) = body.split_once(' ') else { continue };
        let Some((a, b)) = range.split_once("..") else { continue };
        let parse = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok();
        let (Some(start), Some(end)) = (parse(a), parse(b)) else { continue };
        // Mapped ranges name their PA: "-> 0x... state ...".
        let (pa, tail) = match tail.strip_prefix("-> ") {
            Some(t) => t.split_once(' ').map_or((None, ""), |(p, rest)| (parse(p), rest)),
            None => (None, tail),
        };
        let (what, level) = match tail.rsplit_once(" L") {
            Some((w, l)) => (w.to_string(), l.parse().unwrap_or(3)),
            None => (tail.to_string(), 3),
        };
        cur.push(S2Range { table: name.to_string(), start, end, pa, what, level, count: 1 });
    }
    if let Some(last) = cur.first().map(|r| r.table.clone()) {
        bands.push(Band { table: last, ranges: cur, table_pages: None, after, context });
    }
    bands
}

/// Adjacent ranges of the same state and level whose IPAs (and PAs, when
/// mapped) follow on, merged into one: a 128 MiB Linux guest's 1,024
/// shared 4 KiB pool pages become one box whose tooltip still says exactly
/// what each page is.
pub fn aggregate(ranges: &[S2Range]) -> Vec<S2Range> {
    let mut out: Vec<S2Range> = Vec::new();
    for r in ranges {
        if let Some(last) = out.last_mut() {
            let pa_follows = match (last.pa, r.pa) {
                (Some(a), Some(b)) => a + (last.end - last.start) == b,
                (None, None) => true,
                _ => false,
            };
            if last.end == r.start && last.what == r.what && last.level == r.level && pa_follows {
                last.end = r.end;
                last.count += r.count;
                continue;
            }
        }
        out.push(r.clone());
    }
    out
}

/// Legend: (label, colour).
const LEGEND: [(&str, &str); 7] = [
    ("owned", "#1f77b4"),
    ("shared-owned (lent)", "#ff7f0e"),
    ("shared-borrowed", "#2ca02c"),
    ("hyp-owned", "#d62728"),
    ("guest-private (host's view)", "#9467bd"),
    ("device", "#7f7f7f"),
    ("no entry", "#ffffff"),
];

fn colour(what: &str) -> &'static str {
    if what.starts_with("hyp") {
        LEGEND[3].1
    } else if what.starts_with("vm") {
        LEGEND[4].1
    } else if what.starts_with("shared-owned") {
        LEGEND[1].1
    } else if what.starts_with("shared-borrowed") {
        LEGEND[2].1
    } else if what.contains("Device") {
        LEGEND[5].1
    } else {
        LEGEND[0].1
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An SVG picture: one band per stage-2 dump, captioned with the moment of
/// the run it shows; each range a box coloured by owner and state, marked
/// with its mapping level and subdivided into its blocks (1G/2M/4K) so
/// splits show; the IPA at every range boundary below; a tooltip per range.
/// The address axis is compressed: each range's width grows with log2(size);
/// holes (no entry) are drawn as empty boxes.
pub fn svg(bands: &[Band]) -> String {
    let (w, band_h, label_w, box_h) = (1400.0, 112.0, 60.0, 30.0);
    let mut s = String::new();
    let h = 50.0 + band_h * bands.len() as f64 + 40.0;
    let _ = writeln!(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"monospace\" font-size=\"11\">");
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(s, "<text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">stage-2 map: one band per dump, in the order of the run</text>");
    let _ = writeln!(s, "<text x=\"10\" y=\"36\" fill=\"#555\">IPA axis compressed (box width ~ log2 of the range size); white ticks = block boundaries; L1/L2/L3 = mapping level (1 GiB / 2 MiB / 4 KiB); hover a box for details</text>");
    for (i, band) in bands.iter().enumerate() {
        let y0 = 50.0 + i as f64 * band_h;
        let y = y0 + 26.0;
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.1}\" font-size=\"12\" font-weight=\"bold\">{}</text>",
            y0 + 12.0,
            esc(&band.caption(i + 1))
        );
        if let (Some(_), Some(ctx)) = (&band.after, &band.context) {
            let _ = writeln!(
                s,
                "<text x=\"10\" y=\"{:.1}\" font-size=\"10\" fill=\"#555\">last console line: {}</text>",
                y0 + 23.0,
                esc(ctx)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            y + box_h / 2.0 + 4.0,
            esc(&band.table)
        );
        // Ranges (runs of the same state merged) plus the holes between them.
        let ranges = aggregate(&band.ranges);
        let mut boxes: Vec<(u64, u64, Option<&S2Range>)> = Vec::new();
        for r in &ranges {
            if let Some(&(_, end, _)) = boxes.last() {
                if end < r.start {
                    boxes.push((end, r.start, None));
                }
            }
            boxes.push((r.start, r.end, Some(r)));
        }
        let weight = |b: &(u64, u64, Option<&S2Range>)| {
            let lg = ((b.1 - b.0) as f64).log2().max(1.0);
            if b.2.is_some() {
                lg
            } else {
                lg * 0.5
            }
        };
        let total: f64 = boxes.iter().map(weight).sum();
        let mut x = label_w;
        let mut ticks = vec![];
        for b in &boxes {
            let bw = (w - label_w - 50.0) * weight(b) / total;
            ticks.push((x, b.0));
            match b.2 {
                Some(r) => {
                    let _ = writeln!(
                        s,
                        "<g><title>{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{box_h}\" fill=\"{}\" stroke=\"black\" stroke-width=\"0.6\"/>",
                        esc(&r.tooltip()),
                        colour(&r.what)
                    );
                    let blocks = ((r.end - r.start) >> (12 + 9 * (3 - r.level.min(3) as u32))).clamp(1, 64);
                    for k in 1..blocks {
                        let bx = x + bw * k as f64 / blocks as f64;
                        let _ = writeln!(s, "<line x1=\"{bx:.1}\" y1=\"{:.1}\" x2=\"{bx:.1}\" y2=\"{:.1}\" stroke=\"white\" stroke-width=\"0.5\"/>", y + 2.0, y + box_h - 2.0);
                    }
                    // Level and size inside the box when there is room.
                    let label = format!("L{} {}", r.level, size(r.end - r.start));
                    let label = if bw > label.len() as f64 * 6.7 + 4.0 { label } else { format!("L{}", r.level) };
                    if bw > 16.0 {
                        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"white\" stroke=\"black\" stroke-width=\"2.2\" paint-order=\"stroke\">{label}</text>", x + bw / 2.0, y + box_h / 2.0 + 4.0);
                    }
                    s.push_str("</g>\n");
                }
                None => {
                    let _ = writeln!(
                        s,
                        "<g><title>{} stage-2, IPA {:#x}..{:#x} ({}): no entry{}</title><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"white\" stroke=\"#999\" stroke-width=\"0.6\" stroke-dasharray=\"3,2\"/></g>",
                        esc(&band.table),
                        b.0,
                        b.1,
                        size(b.1 - b.0),
                        if band.table == "host" { " (host memory is mapped on its first access)" } else { "" },
                        y + 4.0,
                        box_h - 8.0
                    );
                }
            }
            x += bw;
        }
        if let Some(&(_, end, _)) = boxes.last() {
            ticks.push((x, end));
        }
        // The IPA at each boundary, alternating between two rows.
        for (k, (tx, addr)) in ticks.iter().enumerate() {
            let row = (k % 2) as f64;
            let ty = y + box_h + 12.0 + row * 12.0;
            let _ = writeln!(
                s,
                "<line x1=\"{tx:.1}\" y1=\"{y:.1}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#333\" stroke-width=\"0.6\"/>",
                ty - 9.0
            );
            let _ = writeln!(
                s,
                "<text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"10\" text-anchor=\"middle\">{addr:#x}</text>"
            );
        }
    }
    let ly = 50.0 + band_h * bands.len() as f64 + 10.0;
    let mut x = 10.0;
    for (label, c) in LEGEND {
        let _ = writeln!(s, "<rect x=\"{x}\" y=\"{ly}\" width=\"14\" height=\"14\" fill=\"{c}\" stroke=\"#999\" stroke-width=\"0.6\"/><text x=\"{}\" y=\"{}\">{label}</text>", x + 18.0, ly + 11.0);
        x += 40.0 + label.len() as f64 * 6.7;
    }
    s.push_str("</svg>\n");
    s
}

pub fn trace_cmd(file: &Path, json: Option<PathBuf>, map: Option<PathBuf>) -> Result<i32> {
    let log = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if let Some(out) = map {
        let bands = s2_bands(&log);
        std::fs::write(&out, svg(&bands))?;
        println!("stage-2 map: {} band(s) -> {}", bands.len(), out.display());
        return Ok(0);
    }
    let recs = records(&log);
    print!("{}", report(&recs));
    if let Some(out) = json {
        std::fs::write(&out, chrome_json(&recs, counter_hz(&log)))?;
        println!("chrome trace: {} events -> {} (open in ui.perfetto.dev)", recs.len() * 2, out.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/trace-sample.log")).unwrap()
    }

    #[test]
    fn decoder_output_is_stable() {
        let want =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/trace-sample.expected")).unwrap();
        assert_eq!(report(&records(&sample())), want);
    }

    #[test]
    fn dma_records_are_counted_per_stream() {
        let log = "[hyp] trace 6704b21e000000000700000000000800000000000000000000001040000000000000104000000000000000000000000010000000000000000800000000000000 | dma    stream=0x8 write addr=0x40100000 translation fault (event 0x10) -> blocked\n[hyp] trace 03bcc21e000000000700000000000800000000000000000004001040000000000400104000000000000000000000000010000000000000000800000000000000 | dma    stream=0x8 write addr=0x40100004 translation fault (event 0x10) -> blocked\n";
        let recs = records(log);
        assert_eq!(recs.len(), 2);
        let out = report(&recs);
        assert!(
            out.contains("dma    stream=0x8 write addr=0x40100004 translation fault (event 0x10) -> blocked"),
            "{out}"
        );
        assert!(out.contains("  by kind: dma 2\n"), "{out}");
        assert!(out.contains("  DMA blocked by the SMMU: stream 0x8: 2 on 1 page(s)\n"), "{out}");
    }

    #[test]
    fn chrome_json_has_a_track_per_cpu_and_vm() {
        let recs = records(&sample());
        let j = chrome_json(&recs, counter_hz(&sample()));
        assert_eq!(j.matches("\"ph\":\"i\"").count(), recs.len() * 2);
        assert!(j.contains("\"name\":\"vm 1\""));
        assert!(j.contains("\"name\":\"physical CPUs\""));
    }

    #[test]
    fn timestamps_follow_the_reported_counter_rate() {
        assert_eq!(counter_hz("[hyp] system counter: 1000000000 Hz\n"), 1_000_000_000);
        assert_eq!(counter_hz("no such line"), 62_500_000);
        let r = Record { ts: 1000, kind: Kind::Hypercall as u8, ..Default::default() };
        let r2 = Record { ts: 3000, ..r };
        // 2,000 ticks: 2 us at 1 GHz, 32 us at 62.5 MHz.
        assert!(chrome_json(&[r, r2], 1_000_000_000).contains("\"ts\":2.000"));
        assert!(chrome_json(&[r, r2], 62_500_000).contains("\"ts\":32.000"));
    }

    /// A Linux guest's stage-2 after boot: 128 MiB, a 4 MiB pool of 1,024
    /// shared 4 KiB pages, 32 more shared pages scattered among private
    /// ones, the rest 2 MiB blocks: runs of the same state become one box
    /// each, and each box's tooltip is exact.
    #[test]
    fn a_linux_guest_map_is_legible() {
        let mut log = String::new();
        let (base, pa0) = (0x4000_0000u64, 0x5000_0000u64);
        let line = |log: &mut String, s: u64, e: u64, what: &str, l: u8| {
            log.push_str(&format!("[hyp] s2 vm 1: {s:#x}..{e:#x} -> {:#x} {what} L{l}\n", pa0 + s - base));
        };
        // 2 MiB blocks, then the 2 MiB region with 32 scattered shared pages
        // (every 16th page), then the pool, then blocks again.
        for b in 0..60u64 {
            line(&mut log, base + b * 0x20_0000, base + (b + 1) * 0x20_0000, "owned Normal rwx", 2);
        }
        let split = base + 60 * 0x20_0000;
        for p in 0..512u64 {
            let what = if p % 16 == 0 { "shared-owned Normal rwx" } else { "owned Normal rwx" };
            line(&mut log, split + p * 4096, split + (p + 1) * 4096, what, 3);
        }
        let pool = base + 62 * 0x20_0000;
        for p in 0..1024u64 {
            line(&mut log, pool + p * 4096, pool + (p + 1) * 4096, "shared-owned Normal rwx", 3);
        }
        log.push_str("[hyp] s2 vm 1: 3 table pages\n");
        let bands = s2_bands(&log);
        assert_eq!(bands[0].ranges.len(), 60 + 512 + 1024);
        let agg = aggregate(&bands[0].ranges);
        // 1 run of blocks, 64 alternating runs in the split region, the pool.
        assert_eq!(agg.len(), 1 + 64 + 1);
        assert_eq!((agg[0].count, agg[0].end - agg[0].start), (60, 120 << 20));
        assert_eq!((agg[1].count, agg[2].count), (1, 15));
        let pool_run = agg.last().unwrap();
        assert_eq!((pool_run.start, pool_run.end, pool_run.count), (pool, pool + (4 << 20), 1024));
        let svg = svg(&bands);
        // One tooltip per run, one for the hole between the split block and the pool.
        assert_eq!(svg.matches("<title>").count(), 66 + 1);
        assert!(svg.contains(&format!(
            "<title>vm 1 stage-2, IPA {pool:#x}..{:#x} (4 MiB) → PA {:#x}..{:#x}\n1024 adjacent ranges of this state, \
             drawn as one\nowner: vm 1; state: shared-owned, lent to the host\nNormal memory, permissions rwx\nlevel 3 \
             (4 KiB pages)</title>",
            pool + (4 << 20),
            pa0 + pool - base,
            pa0 + pool - base + (4 << 20)
        )));
        // A PA that does not follow on is not merged.
        let mut r = bands[0].ranges[..2].to_vec();
        r[1].pa = Some(0x1234_0000);
        assert_eq!(aggregate(&r).len(), 2);
    }

    #[test]
    fn map_has_a_band_per_dump() {
        let bands = s2_bands(&sample());
        assert_eq!(bands.len(), 2, "host and vm 1");
        assert_eq!(
            bands[1].ranges[1],
            S2Range {
                table: "vm 1".into(),
                start: 0x40800000,
                end: 0x40803000,
                pa: Some(0x42c00000),
                what: "owned Normal rwx".into(),
                level: 3,
                count: 1,
            }
        );
        assert_eq!(bands[0].table_pages, Some(4));
        assert_eq!(bands[1].table_pages, Some(2));
        // The sample's last transition: the host donated 64 MiB (at PA
        // 0x42400000) to VM 1.
        assert_eq!(bands[1].after.as_deref(), Some("vm 1 DONATE_GUEST of 0x42400000 (64 MiB): ok"));
        assert_eq!(
            bands[1].caption(2),
            "dump 2: vm 1 stage-2, after vm 1 DONATE_GUEST of 0x42400000 (64 MiB): ok (2 table pages)"
        );
        let svg = svg(&bands);
        let ranges = aggregate(&bands[0].ranges).len() + aggregate(&bands[1].ranges).len();
        // One tooltip per range, plus one per hole between ranges.
        assert_eq!(svg.matches("<title>").count(), ranges + svg.matches(": no entry").count());
        assert!(svg.contains(
            "<title>vm 1 stage-2, IPA 0x40803000..0x40804000 (4 KiB) → PA 0x42c03000..0x42c04000\nowner: vm 1; state: shared-owned, lent to the host\nNormal memory, permissions rwx\nlevel 3 (4 KiB pages)</title>"
        ));
        assert!(svg.contains("<title>host stage-2, IPA 0x40000000..0x42200000 (34 MiB)\nowner: hyp; state: hyp-owned, unmapped\nnot mapped: an access faults\nlevel 2 (2 MiB blocks)</title>"));
        // Captions and the boundary addresses.
        assert!(svg.contains(">dump 1: host stage-2, after vm 1 DONATE_GUEST"));
        for addr in ["0x40800000", "0x40803000", "0x40804000", "0x44000000", "0x42200000", "0x7fe00000"] {
            assert!(svg.contains(&format!(">{addr}</text>")), "{addr}");
        }
        // The level (and size, where it fits) inside each box.
        assert!(svg.contains(">L2 34 MiB</text>"), "the hyp's carve-out");
        assert!(svg.contains(">L3 4 KiB</text>"), "the shared page");
    }
}
