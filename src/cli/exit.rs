//! Exit codes, the same for every berth binary, so scripts can branch on
//! them. Documented in README.md and each man page.

use crate::ErrorKind;

pub const SUCCESS: i32 = 0;
/// Any failure without a more specific code.
pub const FAILURE: i32 = 1;
/// Bad flags or arguments (clap uses 2 as well).
pub const USAGE: i32 = 2;
/// The image, tag, blob or object named does not exist.
pub const NOT_FOUND: i32 = 3;
/// The registry refused the credentials, or wants some we do not have.
pub const UNAUTHORIZED: i32 = 4;

/// The text man pages and `--help` show under EXIT STATUS.
pub const EXIT_STATUS_HELP: &str = "Exit status:
  0  success
  1  failure (network, registry, store or data error)
  2  usage error (bad flag, argument, reference or config)
  3  not found (image, tag, platform or blob does not exist)
  4  unauthorized (credentials refused or missing)";

pub fn code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Unauthorized => UNAUTHORIZED,
        ErrorKind::InvalidArgument => USAGE,
        ErrorKind::AlreadyExists
        | ErrorKind::FailedPrecondition
        | ErrorKind::DataLoss
        | ErrorKind::Unavailable
        | ErrorKind::Internal => FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_kinds() {
        assert_eq!(code(ErrorKind::InvalidArgument), USAGE);
        assert_eq!(code(ErrorKind::NotFound), 3);
        assert_eq!(code(ErrorKind::Unauthorized), 4);
        assert_eq!(code(ErrorKind::DataLoss), 1);
        assert_eq!(code(ErrorKind::Internal), 1);
    }
}
