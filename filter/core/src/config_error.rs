//! The error of configuration validation, naming the field.
//!
//! A module of its own so that the parsers `config` calls for parts of the configuration
//! (`constraints`) return it without importing `config` back.

use std::fmt;

/// A configuration error, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid missiongate config: {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The error about `field`.
pub(crate) fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}
