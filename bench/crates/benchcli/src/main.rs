//! Binary member of the benchmark workspace: clap (derive) front end, tokio runtime.

use clap::Parser;

/// Counts words in a text, prints them as JSON with a checksum.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Text to analyse.
    #[arg(default_value = "the quick brown fox jumps over the lazy dog the end")]
    text: String,
    /// Regular expression selecting the words.
    #[arg(long, default_value = r"\w+")]
    pattern: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = args.text.clone();
    let pattern = args.pattern.clone();
    let counts = tokio::task::spawn_blocking(move || benchlib::count_words(&text, &pattern))
        .await??;
    let json = benchlib::to_json(&counts)?;
    let sum = benchnative::adler32(json.as_bytes());
    let out = serde_json::json!({ "counts": counts, "adler32": sum });
    println!("{out}");
    Ok(())
}
