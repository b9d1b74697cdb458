//! Library member of the benchmark workspace: uses serde (derive), serde_json, regex, rayon,
//! thiserror and anyhow so that all of them are real inputs of a workspace crate.

use rayon::prelude::*;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// One parsed word count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordCount {
    pub word: String,
    pub count: usize,
}

/// Errors of this library.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid pattern: {0}")]
    Pattern(#[from] regex::Error),
    #[error("invalid json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Counts the words of `text` that match `pattern`, in parallel, sorted by word.
pub fn count_words(text: &str, pattern: &str) -> Result<Vec<WordCount>, BenchError> {
    let re = Regex::new(pattern)?;
    let mut words: Vec<&str> = re.find_iter(text).map(|m| m.as_str()).collect();
    words.par_sort_unstable();
    let mut out: Vec<WordCount> = Vec::new();
    for w in words {
        match out.last_mut() {
            Some(last) if last.word == w => last.count += 1,
            _ => out.push(WordCount { word: w.to_string(), count: 1 }),
        }
    }
    Ok(out)
}

/// Serializes counts to JSON.
pub fn to_json(counts: &[WordCount]) -> Result<String, BenchError> {
    Ok(serde_json::to_string(counts)?)
}

/// Parses counts from JSON, with context on failure.
pub fn from_json(text: &str) -> anyhow::Result<Vec<WordCount>> {
    use anyhow::Context;
    let v = serde_json::from_str(text).context("parsing word counts")?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_round_trips() {
        let counts = count_words("b a b c b", r"\w+").unwrap();
        assert_eq!(counts[1], WordCount { word: "b".into(), count: 3 });
        let json = to_json(&counts).unwrap();
        assert_eq!(from_json(&json).unwrap(), counts);
    }
}
