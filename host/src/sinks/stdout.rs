//! The `stdout` sink: JSON lines on standard output (the default, and what
//! `--test` forces). A reader that closes the pipe (`| head`) stops the run:
//! the input is closed and the run ends with the write error (exit 2), so a
//! script sees that not everything was written.

use std::io::{BufWriter, Stdout};

use serde::Deserialize;

use super::{
    BatchRx, LineSink, LineWriter, RunSink, Sink, SinkComponent, SinkError, SinkFuture, SinkRun, blocking,
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
            let SinkRun { metrics, mut dead_letters, confirmed, .. } = run;
            let r = write_all_batches(&input, &metrics, &mut writer(), &mut dead_letters, &confirmed);
            if let Err(SinkError::Write { source, .. }) = &r
                && source.kind() == std::io::ErrorKind::BrokenPipe
            {
                // The reader went away (`| head`): stop the pipeline; the run
                // ends with this error (exit 2), reported once.
                input.close();
            }
            dead_letters.finish().and(r)
        })
    }

    fn into_dead_letters(self: Box<Self>) -> Result<Box<dyn LineSink + Send>, SinkError> {
        Ok(Box::new(writer()))
    }
}
