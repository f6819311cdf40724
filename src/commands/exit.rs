//! The exit codes of every command.

use std::process::ExitCode;

/// How a command ended, as its exit code tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done; for `plan --detailed-exitcode`, nothing to do.
    Success,
    /// 1: the command failed; for `sync`, also when items failed.
    Failed,
    /// 2: a usage or configuration error.
    Usage,
    /// 2: `plan --detailed-exitcode` found changes.
    Changes,
    /// 3: `sync`: the guard held revocations.
    Held,
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Usage | Exit::Changes => 2,
            Exit::Held => 3,
        }
    }

    /// A usage or configuration error. Terraform's convention: with `--detailed-exitcode`, 2
    /// means "changes", so such an error is 1 there.
    pub const fn usage(detailed_exitcode: bool) -> Exit {
        if detailed_exitcode {
            Exit::Failed
        } else {
            Exit::Usage
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_keeps_its_documented_code() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Failed.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::Changes.code(), 2);
        assert_eq!(Exit::Held.code(), 3);
    }

    #[test]
    fn a_usage_error_is_1_under_detailed_exitcode_where_2_means_changes() {
        assert_eq!(Exit::usage(false), Exit::Usage);
        assert_eq!(Exit::usage(true), Exit::Failed);
    }
}
