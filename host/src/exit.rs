//! Exit codes: one enum for every command, and who is at fault for an error
//! ([`ErrorKind`]), which decides the code. The numbers follow sysexits(3)
//! where one fits; 2 is also what clap exits with on a usage error.

use std::process::ExitCode;

/// How `traptor-host` exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, nothing wrong (0).
    Success,
    /// Ran, and found failures the user asked about: `plugin test` cases
    /// that do not match (1).
    Failures,
    /// Something outside failed or could not be reached (a server, the
    /// network, the disk, standard output), or nothing to do; may pass on a
    /// retry (2).
    Unavailable,
    /// A bug in traptor: a task panicked, an impossible state (70, `EX_SOFTWARE`).
    Software,
    /// The configuration is invalid: a file, a rule, a plugin, an argument's
    /// value; fix it, then rerun (78, `EX_CONFIG`).
    Config,
    /// Stopped by a second signal without draining (130, 128 + SIGINT).
    Interrupted,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failures => 1,
            Exit::Unavailable => 2,
            Exit::Software => 70,
            Exit::Config => 78,
            Exit::Interrupted => 130,
        }
    }

    /// Leave the process now with this code (no destructors run).
    pub fn exit_now(self) -> ! {
        std::process::exit(i32::from(self.code()))
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// Who is at fault for an error; every module's error maps to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration (file, rules, plugins, secrets): fix it, then rerun.
    Config,
    /// Something outside at run time (a server, the network, the disk): may pass.
    Runtime,
    /// A bug in traptor (a task panicked, an impossible state).
    Internal,
}

impl ErrorKind {
    pub fn exit(self) -> Exit {
        Exit::from(self)
    }
}

impl From<ErrorKind> for Exit {
    fn from(k: ErrorKind) -> Exit {
        match k {
            ErrorKind::Config => Exit::Config,
            ErrorKind::Runtime => Exit::Unavailable,
            ErrorKind::Internal => Exit::Software,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_documented_code() {
        assert_eq!(ErrorKind::Config.exit().code(), 78);
        assert_eq!(ErrorKind::Runtime.exit().code(), 2);
        assert_eq!(ErrorKind::Internal.exit().code(), 70);
        assert_eq!(Exit::Interrupted.code(), 130);
        assert_eq!(Exit::Failures.code(), 1);
        assert_eq!(Exit::Success.code(), 0);
    }
}
