//! `generate`: the synthetic benchmark corpus.

use std::io::Write;
use std::path::PathBuf;

use crate::exit::Exit;
use crate::sources::synthetic::Generator;

#[derive(Debug, clap::Args)]
pub(super) struct GenerateArgs {
    /// How many posts.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Seed; the same seed gives the same posts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file (default: standard output). A name ending in .gz is gzipped.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Why the corpus could not be written.
#[derive(Debug, thiserror::Error)]
enum GenerateError {
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Write(#[from] std::io::Error),
}

pub(super) fn generate(args: GenerateArgs) -> Exit {
    match write_corpus(&args) {
        Ok(()) => Exit::Success,
        Err(GenerateError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Success,
        Err(e) => super::fail(e, Exit::Unavailable),
    }
}

fn write_corpus(args: &GenerateArgs) -> Result<(), GenerateError> {
    let mut out: Box<dyn Write> = match &args.output {
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|source| GenerateError::Create { path: p.clone(), source })?;
            if p.extension().is_some_and(|e| e == "gz") {
                Box::new(flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast()))
            } else {
                Box::new(std::io::BufWriter::with_capacity(1 << 16, f))
            }
        }
    };
    let mut g = Generator::new(args.seed);
    for _ in 0..args.count {
        out.write_all(&g.next_post())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
