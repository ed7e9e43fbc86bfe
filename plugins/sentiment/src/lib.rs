//! `sentiment`: a lexicon-based sentiment score for each post.
//!
//! Adds `compound` (−1 … +1), `label` (`positive` / `negative` / `neutral`),
//! and `positive`, `negative`, `neutral` (shares of the text's sentiment mass).
//!
//! The lexicon is VADER's (7,520 rated words, slang and emoticons; see
//! `data/README.md`). The scoring follows the published VADER heuristics
//! (Hutto & Gilbert, ICWSM 2014), re-implemented here:
//! * a word's valence is looked up as written, then lower-cased, then with its
//!   surrounding punctuation stripped;
//! * a booster ("very", "slightly" …) up to three words before changes the
//!   magnitude by 0.293; a word in capitals in a text that is not all capitals
//!   adds 0.733;
//! * a negation ("not", "never", "…n't") up to three words before multiplies
//!   by −0.74;
//! * after "but", sentiment weighs 1.5, before it 0.5;
//! * each "!" (up to four) adds 0.292 to the magnitude of the sum;
//! * compound = s / √(s² + 15).
//!
//! Configuration: `threshold` (default 0.05): |compound| below it is neutral.

use std::collections::HashMap;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::Deserialize;
use traptor_sdk::{Description, Enrichment, Fields, Outcome, Post, Stage, StageKind, export_stage};

const LEXICON: &str = include_str!("../data/vader_lexicon.tsv");

const BOOST: f64 = 0.293;
const CAPS_BOOST: f64 = 0.733;
const NEGATION: f64 = -0.74;
const EXCLAIM: f64 = 0.292;
const ALPHA: f64 = 15.0;

const BOOSTERS_UP: &[&str] = &[
    "absolutely",
    "amazingly",
    "awfully",
    "completely",
    "considerably",
    "decidedly",
    "deeply",
    "enormously",
    "entirely",
    "especially",
    "exceptionally",
    "extremely",
    "fabulously",
    "greatly",
    "hella",
    "highly",
    "hugely",
    "incredibly",
    "intensely",
    "majorly",
    "more",
    "most",
    "particularly",
    "purely",
    "quite",
    "really",
    "remarkably",
    "so",
    "substantially",
    "thoroughly",
    "totally",
    "tremendously",
    "uber",
    "unbelievably",
    "unusually",
    "utterly",
    "very",
    "super",
];
const BOOSTERS_DOWN: &[&str] = &[
    "almost",
    "barely",
    "hardly",
    "kinda",
    "kindof",
    "less",
    "little",
    "marginally",
    "occasionally",
    "partly",
    "scarcely",
    "slightly",
    "somewhat",
    "sorta",
    "sortof",
];
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "cannot", "without", "aint",
    "ain't", "isnt", "arent", "wasnt", "werent", "dont", "doesnt", "didnt", "cant", "couldnt", "wont", "wouldnt",
    "shouldnt", "havent", "hasnt", "hadnt",
];

fn lexicon() -> &'static HashMap<&'static str, f64> {
    static L: OnceLock<HashMap<&'static str, f64>> = OnceLock::new();
    L.get_or_init(|| {
        LEXICON
            .lines()
            .filter_map(|l| {
                let (w, v) = l.split_once('\t')?;
                Some((w, v.trim().parse().ok()?))
            })
            .collect()
    })
}

fn strip(w: &str) -> &str {
    w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
}

fn is_negation(w: &str) -> bool {
    let w = strip(w).to_lowercase().replace('’', "'");
    NEGATIONS.contains(&w.as_str()) || w.ends_with("n't")
}

fn valence(lex: &HashMap<&str, f64>, word: &str) -> Option<f64> {
    lex.get(word)
        .or_else(|| lex.get(word.to_lowercase().as_str()))
        .or_else(|| {
            let s = strip(word);
            (!s.is_empty()).then(|| lex.get(s.to_lowercase().as_str())).flatten()
        })
        .copied()
}

/// The scores of one text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub compound: f64,
    pub positive: f64,
    pub negative: f64,
    pub neutral: f64,
}

/// Score a text (see the module docs).
pub fn score(text: &str) -> Scores {
    let lex = lexicon();
    let words: Vec<&str> = text.split_whitespace().filter(|w| !w.starts_with('@') && !w.starts_with("http")).collect();
    let letters = text.chars().filter(|c| c.is_alphabetic());
    let (upper, total) = letters.fold((0, 0), |(u, t), c| (u + usize::from(c.is_uppercase()), t + 1));
    let shouting_text = total > 0 && upper == total;
    let but_at = words.iter().position(|w| strip(w).eq_ignore_ascii_case("but"));

    let mut sentiments = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let lower = strip(w).to_lowercase();
        if BOOSTERS_UP.contains(&lower.as_str()) || BOOSTERS_DOWN.contains(&lower.as_str()) {
            sentiments.push(0.0);
            continue;
        }
        let Some(mut v) = valence(lex, w) else {
            sentiments.push(0.0);
            continue;
        };
        let caps = strip(w);
        if !shouting_text && caps.chars().count() > 1 && caps.chars().all(|c| !c.is_alphabetic() || c.is_uppercase()) {
            v += CAPS_BOOST * v.signum();
        }
        for back in 1..=3 {
            let Some(j) = i.checked_sub(back) else { break };
            let prev = strip(words[j]).to_lowercase();
            // Closer boosters weigh more (VADER damps the 2nd and 3rd word back).
            let damp = [1.0, 0.95, 0.9][back - 1];
            if BOOSTERS_UP.contains(&prev.as_str()) {
                v += BOOST * damp * v.signum();
            } else if BOOSTERS_DOWN.contains(&prev.as_str()) {
                v -= BOOST * damp * v.signum();
            }
            if is_negation(words[j]) {
                v *= NEGATION;
            }
        }
        if let Some(b) = but_at {
            v *= if i < b {
                0.5
            } else if i > b {
                1.5
            } else {
                1.0
            };
        }
        sentiments.push(v);
    }
    let mut sum: f64 = sentiments.iter().sum();
    let bangs = text.matches('!').count().min(4) as f64;
    if sum != 0.0 {
        sum += EXCLAIM * bangs * sum.signum();
    }
    let compound = if sum == 0.0 { 0.0 } else { (sum / (sum * sum + ALPHA).sqrt()).clamp(-1.0, 1.0) };
    let pos: f64 = sentiments.iter().filter(|s| **s > 0.0).map(|s| s + 1.0).sum();
    let neg: f64 = sentiments.iter().filter(|s| **s < 0.0).map(|s| s.abs() + 1.0).sum();
    let neu = sentiments.iter().filter(|s| **s == 0.0).count() as f64;
    let all = pos + neg + neu;
    let share = |x: f64| if all > 0.0 { (x / all * 1000.0).round() / 1000.0 } else { 0.0 };
    Scores {
        compound: (compound * 10_000.0).round() / 10_000.0,
        positive: share(pos),
        negative: share(neg),
        neutral: if all > 0.0 { share(neu) } else { 1.0 },
    }
}

pub struct Sentiment {
    threshold: f64,
}

/// `config` of the stage.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentimentConfig {
    /// A compound score at least this far from 0 is positive or negative.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    threshold: f64,
}

fn default_threshold() -> f64 {
    0.05
}

impl Stage for Sentiment {
    type Config = SentimentConfig;

    fn describe() -> Description {
        Description::new("sentiment", env!("CARGO_PKG_VERSION"), StageKind::Enricher)
            .summary("Lexicon-based sentiment (VADER lexicon): compound score and label")
            .reads(Fields::TEXT)
    }

    fn init(config: SentimentConfig) -> Result<Self, String> {
        let threshold = config.threshold;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(format!("config key `threshold` must be between 0 and 1, got {threshold}"));
        }
        let _ = lexicon();
        Ok(Sentiment { threshold })
    }

    fn process(&mut self, post: &Post) -> Outcome {
        let s = score(post.text());
        let label = if s.compound >= self.threshold {
            "positive"
        } else if s.compound <= -self.threshold {
            "negative"
        } else {
            "neutral"
        };
        Enrichment::new()
            .field("compound", s.compound)
            .field("label", label)
            .field("positive", s.positive)
            .field("negative", s.negative)
            .field("neutral", s.neutral)
            .into()
    }
}

export_stage!(Sentiment);

#[cfg(test)]
mod tests {
    use super::*;
    use traptor_sdk::testing::{PostBuilder, run};

    #[test]
    fn lexicon_loads() {
        assert!(lexicon().len() > 7000);
        assert_eq!(lexicon().get("love"), Some(&3.2));
    }

    #[test]
    fn polarity() {
        assert!(score("I love this, it is great").compound > 0.5);
        assert!(score("This is terrible and I hate it").compound < -0.5);
        assert_eq!(score("The train leaves at nine").compound, 0.0);
    }

    #[test]
    fn negation_flips() {
        assert!(score("I do not love this").compound < 0.0);
        assert!(score("This isn't good").compound < 0.0);
    }

    #[test]
    fn boosters_caps_and_exclamations_intensify() {
        let base = score("The food is good").compound;
        assert!(score("The food is very good").compound > base);
        assert!(score("The food is GOOD").compound > base);
        assert!(score("The food is good!!!").compound > base);
        assert!(score("The food is slightly good").compound < base);
    }

    #[test]
    fn but_shifts_the_weight() {
        assert!(score("The food was great but the service was awful").compound < 0.0);
    }

    #[test]
    fn emoticons_and_slang() {
        assert!(score("see you soon :)").compound > 0.0);
        assert!(score("lol").compound > 0.0);
    }

    #[test]
    fn stage_labels_and_refuses_bad_config() {
        let out = run::<Sentiment>("{}", &[PostBuilder::new("1", "What a wonderful day").build()]).expect("init");
        let Outcome::Enrich(fields) = &out[0] else { panic!("{out:?}") };
        assert!(fields.iter().any(|f| f.name == "label" && f.value == "\"positive\""));
        assert!(run::<Sentiment>(r#"{"threshold": 3}"#, &[]).is_err());
        assert!(run::<Sentiment>(r#"{"treshold": 0.1}"#, &[]).expect_err("typo").contains("treshold"));
    }
}
