//! `completions SHELL` and `manpage`: the command line describing itself.

use super::{Cli, fail};
use crate::exit::Exit;

pub(super) fn completions(shell: clap_complete::Shell) -> Exit {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "traptor-host", &mut std::io::stdout());
    Exit::Success
}

pub(super) fn manpage() -> Exit {
    match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout()) {
        Ok(()) => Exit::Success,
        Err(e) => fail(format_args!("cannot write the manual page: {e}"), Exit::Unavailable),
    }
}
