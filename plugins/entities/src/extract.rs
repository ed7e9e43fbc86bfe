//! Hashtags, mentions, URLs and cashtags in plain text, by the rules of
//! Twitter's twitter-text (its conformance suite is the specification; the
//! tests run it). Indices are code points, as in Twitter's API.
//!
//! The URL grammar needs backtracking and look-ahead that a linear regex engine
//! lacks, so each extractor is a small hand-written scanner over the text's
//! code points. The URL scanner follows the structure of twitter-text's:
//!
//! ```text
//! url     = preceding (protocol)? domain (":" port)? ("/" path)? ("?" query)?
//! domain  = subdomain* domain-name tld          (tld followed by no [0-9a-zA-Z@+-])
//! ```
//!
//! tried at every start position, leftmost first, greedy with backtracking
//! over where the TLD is; a match that is then refused still consumes its text.

use std::sync::OnceLock;

use unicode_general_category::{GeneralCategory as G, get_general_category};

/// One extracted entity: its text (without `#`, `@`, `$` for tags) and its
/// code-point span in the input (sign included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub value: String,
    pub start: usize,
    pub end: usize,
}

/// A mention, possibly of a list (`@user/list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub screen_name: String,
    /// `/list-name` or empty.
    pub list_slug: String,
    pub start: usize,
    pub end: usize,
}

/// Everything found in one text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entities {
    pub hashtags: Vec<Entity>,
    pub mentions: Vec<Mention>,
    pub urls: Vec<Entity>,
    pub cashtags: Vec<Entity>,
}

/// Extract all four kinds; hashtags inside URLs are dropped.
pub fn extract(text: &str) -> Entities {
    let chars: Vec<char> = text.chars().collect();
    let urls = urls(&chars);
    let hashtags =
        hashtags(&chars).into_iter().filter(|h| !urls.iter().any(|u| h.start < u.end && u.start < h.end)).collect();
    Entities { hashtags, mentions: mentions_or_lists(&chars), urls, cashtags: cashtags(&chars) }
}

// ---- character classes ---------------------------------------------------------

fn is_letter_or_mark(c: char) -> bool {
    c.is_alphabetic()
        || matches!(
            get_general_category(c),
            G::UppercaseLetter
                | G::LowercaseLetter
                | G::TitlecaseLetter
                | G::ModifierLetter
                | G::OtherLetter
                | G::NonspacingMark
                | G::SpacingMark
                | G::EnclosingMark
        )
}

fn is_decimal_digit(c: char) -> bool {
    get_general_category(c) == G::DecimalNumber
}

/// Characters that may appear in a hashtag besides letters, marks and digits.
const HASHTAG_SPECIAL: &[char] = &[
    '_', '\u{200c}', '\u{200d}', '\u{a67e}', '\u{05be}', '\u{05f3}', '\u{05f4}', '\u{ff5e}', '\u{301c}', '\u{309b}',
    '\u{309c}', '\u{30a0}', '\u{30fb}', '\u{3003}', '\u{0f0b}', '\u{0f0c}', '\u{00b7}',
];

fn is_hashtag_char(c: char) -> bool {
    is_letter_or_mark(c) || is_decimal_digit(c) || HASHTAG_SPECIAL.contains(&c)
}

/// Latin letters with accents (they end a mention: `@alice` in `@aliceìnheiro` is not one).
fn is_latin_accent(c: char) -> bool {
    matches!(c,
        '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{f6}' | '\u{f8}'..='\u{ff}' | '\u{100}'..='\u{24f}'
        | '\u{253}' | '\u{254}' | '\u{256}' | '\u{257}' | '\u{259}' | '\u{25b}' | '\u{263}' | '\u{268}'
        | '\u{26f}' | '\u{272}' | '\u{289}' | '\u{28b}' | '\u{2bb}' | '\u{300}'..='\u{36f}' | '\u{1e00}'..='\u{1eff}')
}

fn is_cyrillic(c: char) -> bool {
    matches!(c, '\u{400}'..='\u{52f}' | '\u{2de0}'..='\u{2dff}' | '\u{a640}'..='\u{a69f}')
}

fn is_directional(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn is_invalid(c: char) -> bool {
    matches!(c, '\u{fffe}' | '\u{feff}' | '\u{ffff}')
}

fn is_space(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{180e}' | '\u{2000}'
                ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
        )
}

/// A character that may start, end or fill a domain label (not punctuation,
/// space, a control or directional mark).
fn is_domain_char(c: char) -> bool {
    !(c.is_ascii_punctuation()
        || is_space(c)
        || is_invalid(c)
        || is_directional(c)
        || c.is_control()
        || matches!(
            get_general_category(c),
            G::OtherPunctuation
                | G::OpenPunctuation
                | G::ClosePunctuation
                | G::InitialPunctuation
                | G::FinalPunctuation
                | G::DashPunctuation
                | G::ConnectorPunctuation
        ))
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || is_cyrillic(c) || is_latin_accent(c) || "!*';:=+,.$/%#[]-\u{2013}_~|&@".contains(c)
}

fn is_path_ending_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || is_cyrillic(c) || is_latin_accent(c) || "=_#/-+".contains(c)
}

fn is_query_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!?*'();:&=+$/%#[]-_.,~|@".contains(c)
}

fn is_query_ending_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_&=#/".contains(c)
}

// ---- hashtags --------------------------------------------------------------------

pub fn hashtags(chars: &[char]) -> Vec<Entity> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '#' && c != '＃' {
            i += 1;
            continue;
        }
        // Boundary: nothing hashtag-like (or `&`, an HTML entity) just before,
        // except the emoji variation selectors.
        let boundary = i == 0 || {
            let p = chars[i - 1];
            p == '\u{fe0e}' || p == '\u{fe0f}' || !(is_hashtag_char(p) || p == '&')
        };
        let next = chars.get(i + 1).copied();
        if !boundary || matches!(next, Some('\u{fe0f}' | '\u{20e3}')) {
            i += 1;
            continue;
        }
        let body_start = i + 1;
        let mut j = body_start;
        while j < chars.len() && is_hashtag_char(chars[j]) {
            j += 1;
        }
        let body = &chars[body_start..j];
        let has_alpha = body.iter().any(|&c| is_letter_or_mark(c));
        if body.is_empty() || !has_alpha {
            i = j.max(i + 1);
            continue;
        }
        let after = &chars[j..];
        let refused = matches!(after.first(), Some('#' | '＃')) || after.starts_with(&[':', '/', '/']);
        if !refused {
            out.push(Entity { value: body.iter().collect(), start: i, end: j });
        }
        i = j;
    }
    out
}

// ---- cashtags --------------------------------------------------------------------

pub fn cashtags(chars: &[char]) -> Vec<Entity> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            i += 1;
            continue;
        }
        let boundary = i == 0 || is_space(chars[i - 1]) || matches!(chars[i - 1], '\u{200e}' | '\u{200f}');
        if !boundary {
            i += 1;
            continue;
        }
        let letters = |from: usize| chars[from..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
        let ends_ok = |at: usize| at >= chars.len() || is_space(chars[at]) || chars[at].is_ascii_punctuation();
        let n = letters(i + 1);
        let mut found = None;
        if (1..=6).contains(&n) {
            let base_end = i + 1 + n;
            // `$TEST.T`, `$Stock_X`: an optional suffix of one or two letters.
            if let Some(&sep) = chars.get(base_end)
                && (sep == '.' || sep == '_')
            {
                let m = letters(base_end + 1);
                if (1..=2).contains(&m) && ends_ok(base_end + 1 + m) {
                    found = Some(base_end + 1 + m);
                }
            }
            if found.is_none() && ends_ok(base_end) {
                found = Some(base_end);
            }
        }
        match found {
            Some(end) => {
                out.push(Entity { value: chars[i + 1..end].iter().collect(), start: i, end });
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

// ---- mentions ----------------------------------------------------------------------

pub fn mentions_or_lists(chars: &[char]) -> Vec<Mention> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '@' && chars[i] != '＠' {
            i += 1;
            continue;
        }
        let blocked = |c: char| is_name(c) || "!#$%&*@＠".contains(c);
        let preceded_ok = i == 0 || !blocked(chars[i - 1]) || {
            // "RT@user", "rt@user": a retweet marker at a word start.
            i >= 2
                && chars[i - 2].eq_ignore_ascii_case(&'r')
                && chars[i - 1].eq_ignore_ascii_case(&'t')
                && (i == 2 || !(is_name(chars[i - 3]) || "+~.-".contains(chars[i - 3])))
        };
        if !preceded_ok {
            i += 1;
            continue;
        }
        let name_start = i + 1;
        let n = chars[name_start..].iter().take_while(|&&c| is_name(c)).take(20).count();
        if n == 0 {
            i += 1;
            continue;
        }
        let mut end = name_start + n;
        let mut list_slug = String::new();
        if chars.get(end) == Some(&'/') && chars.get(end + 1).is_some_and(|c| c.is_ascii_alphabetic()) {
            let m = chars[end + 1..]
                .iter()
                .take_while(|&&c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                .take(25)
                .count();
            list_slug = chars[end..end + 1 + m].iter().collect();
            end += 1 + m;
        }
        let after = &chars[end..];
        let refused = matches!(after.first(), Some(&c) if c == '@' || c == '＠' || is_latin_accent(c))
            || after.starts_with(&[':', '/', '/']);
        if !refused {
            out.push(Mention {
                screen_name: chars[name_start..name_start + n].iter().collect(),
                list_slug,
                start: i,
                end,
            });
        }
        i = end;
    }
    out
}

/// Mentions of users (not of lists).
pub fn mentions(chars: &[char]) -> Vec<Entity> {
    mentions_or_lists(chars)
        .into_iter()
        .filter(|m| m.list_slug.is_empty())
        .map(|m| Entity { value: m.screen_name, start: m.start, end: m.end })
        .collect()
}

// ---- URLs --------------------------------------------------------------------------

struct Tlds {
    /// Lower-cased TLDs, longest first.
    by_len: Vec<Vec<char>>,
}

fn tlds() -> &'static Tlds {
    static T: OnceLock<Tlds> = OnceLock::new();
    T.get_or_init(|| {
        let mut list: Vec<String> = include_str!("../data/tld_lib.yml")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .map(|t| t.trim().trim_matches('"').to_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        list.sort_by_key(|t| std::cmp::Reverse(t.chars().count()));
        list.dedup();
        Tlds { by_len: list.iter().map(|t| t.chars().collect()).collect() }
    })
}

fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// Length of a TLD (or `xn--` punycode label) that starts at `at` and is
/// followed by no `[0-9a-zA-Z@+-]`; longest first.
fn tld_lengths(chars: &[char], at: usize, limit: usize) -> Vec<usize> {
    let ok_after = |end: usize| end >= limit || !(chars[end].is_ascii_alphanumeric() || "@+-".contains(chars[end]));
    let mut out = Vec::new();
    for t in &tlds().by_len {
        let end = at + t.len();
        if end <= limit && chars[at..end].iter().zip(t).all(|(&a, &b)| lower(a) == b) && ok_after(end) {
            out.push(t.len());
        }
    }
    // validPunycode: xn--[0-9a-z]+ (no look-ahead).
    let rest = &chars[at..limit];
    if rest.len() > 4 && rest[..4].iter().map(|&c| lower(c)).eq("xn--".chars()) {
        let n = rest[4..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
        if n > 0 {
            out.push(4 + n);
        }
    }
    out
}

/// Whether `label` (a run of chars) is a valid subdomain (`_` allowed inside)
/// or domain name (`-` only inside).
fn valid_label(label: &[char], allow_underscore: bool) -> bool {
    let (Some(&first), Some(&last)) = (label.first(), label.last()) else { return false };
    is_domain_char(first)
        && is_domain_char(last)
        && label.iter().all(|&c| is_domain_char(c) || c == '-' || (allow_underscore && c == '_'))
}

struct UrlMatch {
    start: usize,
    protocol: bool,
    domain: (usize, usize),
    /// Whether a path or query follows the domain (and port).
    has_path_or_query: bool,
    end: usize,
}

/// The domain at `from` (labels, then a TLD), greedy over the number of labels.
fn match_domain(chars: &[char], from: usize) -> Option<usize> {
    // Labels: runs of domain chars, `-` and `_`, separated by single dots.
    let mut label_starts = vec![from];
    let mut i = from;
    loop {
        while i < chars.len() && (is_domain_char(chars[i]) || chars[i] == '-' || chars[i] == '_') {
            i += 1;
        }
        if i < chars.len() && chars[i] == '.' && i > *label_starts.last().unwrap_or(&from) {
            i += 1;
            label_starts.push(i);
        } else {
            break;
        }
    }
    let limit = chars.len();
    // The TLD starts at label k (k ≥ 1); labels before it: subdomains, then the domain name.
    for k in (1..label_starts.len()).rev() {
        let name = &chars[label_starts[k - 1]..label_starts[k] - 1];
        if !valid_label(name, false) {
            continue;
        }
        let subs_ok = (1..k).all(|s| valid_label(&chars[label_starts[s - 1]..label_starts[s] - 1], true));
        if !subs_ok {
            continue;
        }
        if let Some(len) = tld_lengths(chars, label_starts[k], limit).first() {
            return Some(label_starts[k] + len);
        }
    }
    None
}

/// `(` general+ `)` or one level of nesting; returns the end after `)`.
fn balanced_parens(chars: &[char], at: usize) -> Option<usize> {
    if chars.get(at) != Some(&'(') {
        return None;
    }
    let mut i = at + 1;
    let run = |i: &mut usize| {
        let s = *i;
        while *i < chars.len() && is_path_char(chars[*i]) {
            *i += 1;
        }
        *i - s
    };
    let n = run(&mut i);
    if chars.get(i) == Some(&')') && n > 0 {
        return Some(i + 1);
    }
    if chars.get(i) == Some(&'(') {
        let inner = balanced_inner(chars, i)?;
        i = inner;
        run(&mut i);
        if chars.get(i) == Some(&')') {
            return Some(i + 1);
        }
    }
    None
}

fn balanced_inner(chars: &[char], at: usize) -> Option<usize> {
    let mut i = at + 1;
    let s = i;
    while i < chars.len() && is_path_char(chars[i]) {
        i += 1;
    }
    (i > s && chars.get(i) == Some(&')')).then_some(i + 1)
}

/// The path after a `/` at `slash`: returns its end (at least after the `/`).
fn match_path(chars: &[char], slash: usize) -> usize {
    let mut i = slash + 1;
    let mut last_good = slash + 1; // "/" alone is a path
    loop {
        if i < chars.len() && is_path_char(chars[i]) {
            if is_path_ending_char(chars[i]) {
                last_good = i + 1;
            }
            i += 1;
        } else if let Some(end) = balanced_parens(chars, i) {
            i = end;
            last_good = end;
        } else {
            break;
        }
    }
    last_good
}

/// The query at `q` (`?`): its end, if it ends with a valid character.
fn match_query(chars: &[char], q: usize) -> Option<usize> {
    let mut i = q + 1;
    let mut last_good = None;
    while i < chars.len() && is_query_char(chars[i]) {
        if is_query_ending_char(chars[i]) {
            last_good = Some(i + 1);
        }
        i += 1;
    }
    last_good
}

fn starts_with_ci(chars: &[char], at: usize, s: &str) -> bool {
    let n = s.chars().count();
    at + n <= chars.len() && chars[at..at + n].iter().zip(s.chars()).all(|(&a, b)| lower(a) == b)
}

fn match_url_at(chars: &[char], start: usize) -> Option<UrlMatch> {
    if start > 0 {
        let p = chars[start - 1];
        if p.is_ascii_alphanumeric() || "@＠$#＃".contains(p) || is_invalid(p) {
            return None;
        }
    }
    let protocol_len = ["https://", "http://"].iter().find(|p| starts_with_ci(chars, start, p)).map(|p| p.len());
    let attempts: Vec<(bool, usize)> = match protocol_len {
        Some(n) => vec![(true, start + n), (false, start)],
        None => vec![(false, start)],
    };
    for (protocol, domain_start) in attempts {
        let Some(domain_end) = match_domain(chars, domain_start) else { continue };
        let mut end = domain_end;
        if chars.get(end) == Some(&':') {
            let n = chars[end + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n > 0 {
                end += 1 + n;
            }
        }
        let mut has_path_or_query = false;
        if chars.get(end) == Some(&'/') {
            end = match_path(chars, end);
            has_path_or_query = true;
        }
        if chars.get(end) == Some(&'?')
            && let Some(q) = match_query(chars, end)
        {
            end = q;
            has_path_or_query = true;
        }
        return Some(UrlMatch { start, protocol, domain: (domain_start, domain_end), has_path_or_query, end });
    }
    None
}

/// ASCII domains inside a (possibly non-ASCII) domain: `(?:[-a-z0-9à-ÿ]+\.)+tld`.
fn ascii_domains(chars: &[char], from: usize, to: usize) -> Vec<(usize, usize)> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || is_latin_accent(c);
    let mut out = Vec::new();
    let mut i = from;
    while i < to {
        if !ok(chars[i]) {
            i += 1;
            continue;
        }
        // Greedy: as many `label.` as possible, then a TLD; back off label by label.
        let mut label_ends = Vec::new();
        let mut j = i;
        loop {
            let s = j;
            while j < to && ok(chars[j]) {
                j += 1;
            }
            if j > s && j < to && chars[j] == '.' {
                j += 1;
                label_ends.push(j);
            } else {
                break;
            }
        }
        let mut found = None;
        for &tld_start in label_ends.iter().rev() {
            if let Some(len) = tld_lengths(&chars[..to], tld_start, to).first() {
                found = Some(tld_start + len);
                break;
            }
        }
        match found {
            Some(end) => {
                out.push((i, end));
                i = end;
            }
            None => {
                // No match starting here; try from the next position.
                i += 1;
            }
        }
    }
    out
}

const MAX_URL_LENGTH: usize = 4096;
const MAX_TCO_SLUG_LENGTH: usize = 40;

/// RFC 3492 Punycode of a label (for the DNS length check of IDN hosts).
fn punycode(input: &[char]) -> Option<String> {
    const BASE: u32 = 36;
    const TMIN: u32 = 1;
    const TMAX: u32 = 26;
    const SKEW: u32 = 38;
    const DAMP: u32 = 700;
    let adapt = |mut delta: u32, num: u32, first: bool| {
        delta = if first { delta / DAMP } else { delta / 2 };
        delta += delta / num;
        let mut k = 0;
        while delta > ((BASE - TMIN) * TMAX) / 2 {
            delta /= BASE - TMIN;
            k += BASE;
        }
        k + (BASE - TMIN + 1) * delta / (delta + SKEW)
    };
    let digit = |d: u32| char::from(if d < 26 { b'a' + d as u8 } else { b'0' + (d - 26) as u8 });
    let mut out: String = input.iter().filter(|c| c.is_ascii()).collect();
    let b = out.len() as u32;
    if b > 0 {
        out.push('-');
    }
    let (mut n, mut delta, mut bias, mut h) = (128u32, 0u32, 72u32, b);
    let total = input.len() as u32;
    while h < total {
        let m = input.iter().map(|&c| c as u32).filter(|&c| c >= n).min()?;
        delta = delta.checked_add((m - n).checked_mul(h + 1)?)?;
        n = m;
        for &c in input {
            let c = c as u32;
            if c < n {
                delta = delta.checked_add(1)?;
            }
            if c == n {
                let mut q = delta;
                let mut k = BASE;
                loop {
                    let t = if k <= bias {
                        TMIN
                    } else if k >= bias + TMAX {
                        TMAX
                    } else {
                        k - bias
                    };
                    if q < t {
                        break;
                    }
                    out.push(digit(t + (q - t) % (BASE - t)));
                    q = (q - t) / (BASE - t);
                    k += BASE;
                }
                out.push(digit(q));
                bias = adapt(delta, h + 1, h == b);
                delta = 0;
                h += 1;
            }
        }
        delta += 1;
        n += 1;
    }
    Some(out)
}

/// DNS limits on the host: every label ≤ 63 bytes once in ASCII (Punycode),
/// no `xn--` label that is not ASCII.
fn valid_host(host: &[char]) -> bool {
    host.split(|&c| c == '.').all(|label| {
        if label.iter().all(char::is_ascii) {
            label.len() <= 63
        } else if starts_with_ci(label, 0, "xn--") {
            false
        } else {
            punycode(label).is_some_and(|p| p.len() + 4 <= 63)
        }
    })
}

pub fn urls(chars: &[char]) -> Vec<Entity> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < chars.len() {
        let Some(m) = (pos..chars.len()).find_map(|s| match_url_at(chars, s)) else { break };
        pos = m.end.max(m.start + 1);
        if !m.protocol {
            // Without a protocol: not right after `-_./`, and only the ASCII
            // domains inside the match count; the last one takes the path.
            if m.start > 0 && "-_./".contains(chars[m.start - 1]) {
                continue;
            }
            let found = ascii_domains(chars, m.domain.0, m.domain.1);
            let Some(&(last_start, _)) = found.last() else { continue };
            for &(s, e) in &found {
                let end = if s == last_start && m.has_path_or_query { m.end } else { e };
                out.push(Entity { value: chars[s..end].iter().collect(), start: s, end });
            }
            continue;
        }
        let mut end = m.end;
        // t.co links: the slug only (plus a query), no more path.
        let scheme = if starts_with_ci(chars, m.start, "https://") { 8 } else { 7 };
        if starts_with_ci(chars, m.start + scheme, "t.co/") {
            let slug_start = m.start + scheme + 5;
            let slug = chars[slug_start..m.end].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
            if slug > MAX_TCO_SLUG_LENGTH {
                continue;
            }
            end = slug_start + slug;
            if chars.get(end) == Some(&'?')
                && let Some(q) = match_query(chars, end)
            {
                end = q.min(m.end);
            }
        }
        if end - m.start > MAX_URL_LENGTH || !valid_host(&chars[m.domain.0..m.domain.1]) {
            continue;
        }
        out.push(Entity { value: chars[m.start..end].iter().collect(), start: m.start, end });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punycode_matches_rfc_examples() {
        let p = |s: &str| punycode(&s.chars().collect::<Vec<_>>()).expect("encodes");
        assert_eq!(p("münchen"), "mnchen-3ya");
        assert_eq!(p("はじめよう"), "p8j9a0d9c9a");
    }
}
