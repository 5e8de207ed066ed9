//! The patterns of expected lines: `*` stands for any text, `{name}` for a
//! word (letters, digits, `_`) that must be the same wherever `name`
//! appears in a scenario.

/// Matches `line` against a pattern where `*` stands for any text.
#[cfg(test)]
fn matches(pat: &str, line: &str) -> bool {
    matches_bound(pat, line, &mut Vec::new())
}

/// A pattern piece: literal text, `*`, or `{name}`.
enum Tok<'a> {
    Lit(&'a str),
    Star,
    Var(&'a str),
}

fn tokens(pat: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut rest = pat;
    while !rest.is_empty() {
        let var = rest
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .filter(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if let Some((name, r)) = var {
            out.push(Tok::Var(name));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('*') {
            out.push(Tok::Star);
            rest = r;
        } else {
            let end = rest[1..].find(['*', '{']).map_or(rest.len(), |i| i + 1);
            out.push(Tok::Lit(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

fn word_end(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len())
}

fn match_toks(toks: &[Tok], s: &str, vars: &mut Vec<(String, String)>) -> bool {
    match toks.first() {
        None => s.is_empty(),
        Some(Tok::Lit(l)) => s.strip_prefix(l).is_some_and(|r| match_toks(&toks[1..], r, vars)),
        Some(Tok::Star) => match toks.get(1) {
            None => true,
            // Only where the next literal occurs.
            Some(Tok::Lit(l)) => s.match_indices(l).any(|(i, _)| match_toks(&toks[1..], &s[i..], vars)),
            Some(_) => (0..=s.len()).filter(|i| s.is_char_boundary(*i)).any(|i| match_toks(&toks[1..], &s[i..], vars)),
        },
        Some(Tok::Var(name)) => {
            if let Some((_, v)) = vars.iter().find(|(n, _)| n == name) {
                let v = v.clone();
                return s.strip_prefix(v.as_str()).is_some_and(|r| word_end(r) == 0 && match_toks(&toks[1..], r, vars));
            }
            let end = word_end(s);
            if end == 0 {
                return false;
            }
            vars.push((name.to_string(), s[..end].to_string()));
            if match_toks(&toks[1..], &s[end..], vars) {
                return true;
            }
            vars.pop();
            false
        }
    }
}

/// Like [`matches`], and `{name}` stands for a word (letters, digits, `_`)
/// that must be the same wherever `name` appears: the first line that
/// matches binds it in `vars` (e.g. an address a run prints twice).
pub fn matches_bound(pat: &str, line: &str, vars: &mut Vec<(String, String)>) -> bool {
    match_toks(&tokens(pat), line, vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("a*c", "abc"));
        assert!(matches("a*", "a"));
        assert!(!matches("a*c", "abd"));
        assert!(matches("x", "x"));
        assert!(!matches("x", "xy"));
        assert!(matches("[hyp] a * b * c", "[hyp] a 1 b 2 c"));
        assert!(matches("a*b*b", "a b b b"), "backtracks to the last literal");
        assert!(!matches("a*b", "a b c"));
    }

    #[test]
    fn bound_words() {
        let mut v = Vec::new();
        assert!(matches_bound("at {a} now", "at 0x4023b104 now", &mut v));
        assert!(matches_bound("FAR {a}  ELR {a} *", "FAR 0x4023b104  ELR 0x4023b104 x", &mut v));
        assert!(!matches_bound("FAR {a}  ELR *", "FAR 0x4023b10  ELR 0", &mut v), "a prefix is not the word");
        assert!(!matches_bound("FAR {a}*", "FAR 0x4023b108", &mut v));
        assert!(!matches_bound("ELR {b} {b}", "ELR 1 2", &mut v));
        assert_eq!(v, [("a".to_string(), "0x4023b104".to_string())], "failed matches bind nothing");
        assert!(matches_bound("{x}", "w0_rd", &mut Vec::new()) && !matches_bound("{x}", "", &mut Vec::new()));
        assert!(matches("a{b c}", "a{b c}"), "braces around non-words are text");
    }
}
