/// The small closed set of failure kinds every module error maps onto.
///
/// Scripts branch on exit codes, and exit codes are derived only from this
/// kind (see `cli::exit`), so two modules reporting "not found" give a script
/// the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The named object (image, tag, blob, repository) does not exist.
    NotFound,
    /// The registry refused our credentials or demanded some we lack.
    Unauthorized,
    /// The input (reference, flag, config value, archive) is malformed.
    InvalidArgument,
    /// The object exists already and cannot be created again.
    AlreadyExists,
    /// The operation is not allowed in the current state (in use, locked).
    FailedPrecondition,
    /// Data did not match its digest or size.
    DataLoss,
    /// A peer or resource could not be reached (network, registry 5xx).
    Unavailable,
    /// Anything else: I/O errors, bugs, the unexpected.
    Internal,
}
