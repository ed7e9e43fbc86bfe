//! The `stdout` sink: JSON lines on standard output (the default, and what
//! `--test` forces). A reader that closes the pipe (`| head`) stops the run:
//! the input is closed and the run ends with the write error (exit 2), so a
//! script sees that not everything was written.

use std::io::{BufWriter, Stdout};

use serde::Deserialize;

use super::{
    BatchRx, LineSink, LineWriter, RunSink, Sink, SinkComponent, SinkError, SinkFuture, SinkRun, Written, blocking,
    write_all_batches,
};
use crate::component::Problems;
use crate::rules::Collector;

/// `[sink]` with `type = "stdout"`: no keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {}

impl SinkComponent for StdoutConfig {
    fn check(&self, _problems: &mut Problems<'_>) {}

    fn build(&self, _identity: Collector) -> Result<Sink, SinkError> {
        Ok(Sink::new(StdoutSink))
    }
}

/// The running `stdout` sink.
#[derive(Debug)]
pub struct StdoutSink;

fn writer() -> LineWriter<BufWriter<Stdout>> {
    LineWriter::new(BufWriter::with_capacity(1 << 16, std::io::stdout()), "stdout")
}

impl RunSink for StdoutSink {
    fn name(&self) -> String {
        "stdout".into()
    }

    fn check_environment(&self) -> Result<(), SinkError> {
        Ok(())
    }

    fn run(self: Box<Self>, input: BatchRx, run: SinkRun) -> SinkFuture {
        blocking(move || {
            let SinkRun { metrics, dead_letters, confirmed, .. } = run;
            // A failed write (the reader went away: `| head`) closes the
            // input, which stops the pipeline; the run ends with this error
            // (exit 2), reported once.
            let Written { result, mut dead, .. } =
                write_all_batches(&input, &metrics, Box::new(writer()), dead_letters, &confirmed);
            dead.finish().and(result)
        })
    }

    fn into_dead_letters(self: Box<Self>) -> Result<Box<dyn LineSink + Send>, SinkError> {
        Ok(Box::new(writer()))
    }
}
