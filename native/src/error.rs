//! Errors of the core. The Python layer maps `Type` to `TypeError`, `Value` to `ValueError`,
//! `Memory` to `MemoryError` and `Io` to `OSError`; nothing in the core panics on bad input.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    Type(String),
    Value(String),
    Memory(String),
    Io(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Type(m) | CoreError::Value(m) | CoreError::Memory(m) | CoreError::Io(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for CoreError {}

/// Shorthand for a `ValueError`-class failure.
pub fn value_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(CoreError::Value(msg.into()))
}

/// `vec![value; n]` that reports a failed allocation as `MemoryError` instead of aborting.
pub fn try_vec<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        CoreError::Memory(format!(
            "cannot allocate {what}: {n} elements of {} bytes",
            std::mem::size_of::<T>()
        ))
    })?;
    v.resize(n, value);
    Ok(v)
}
