mod digest;
pub use digest::{Digest, Hasher, ParseDigestError};
