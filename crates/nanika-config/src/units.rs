//! Sizes and durations with units, in the two dialects the servers speak.
//!
//! PostgreSQL's units are case-sensitive and powers of 1024 (`kB`, `MB`, `GB`, `TB`); Redis's are
//! case-insensitive, with `k`/`m`/`g` meaning powers of 1000 and `kb`/`mb`/`gb` powers of 1024.
//! Both are kept here as plain bytes or milliseconds so the model compares values, not spellings.

use serde::Serialize;
use std::fmt;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

/// An amount of memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MemorySize(pub u64);

impl MemorySize {
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        MemorySize(n * MIB)
    }

    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        MemorySize(n * GIB)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// PostgreSQL's spelling: the largest unit that divides the size exactly (`256MB`, `1GB`).
    pub fn to_postgres(self) -> String {
        for (unit, factor) in [("TB", TIB), ("GB", GIB), ("MB", MIB), ("kB", KIB)] {
            if self.0 != 0 && self.0.is_multiple_of(factor) {
                return format!("{}{unit}", self.0 / factor);
            }
        }
        format!("{}B", self.0)
    }

    /// Redis's spelling: the largest binary unit that divides the size exactly (`512mb`).
    pub fn to_redis(self) -> String {
        for (unit, factor) in [("gb", GIB), ("mb", MIB), ("kb", KIB)] {
            if self.0 != 0 && self.0.is_multiple_of(factor) {
                return format!("{}{unit}", self.0 / factor);
            }
        }
        self.0.to_string()
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_postgres())
    }
}

/// Why a value with a unit could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number at all.
    #[error("`{0}` is not a number")]
    NotANumber(String),
    /// A number followed by a unit this setting does not take.
    #[error("`{unit}` is not a valid unit here; valid units are {valid}")]
    BadUnit {
        /// The unit as written.
        unit: String,
        /// The valid units, ready to print.
        valid: &'static str,
    },
    /// The value does not fit.
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// PostgreSQL's memory units, valid for settings whose base unit is a size.
pub const POSTGRES_MEMORY_UNITS: &str = "B, kB, MB, GB and TB (case-sensitive)";
/// PostgreSQL's time units, valid for settings whose base unit is a time.
pub const POSTGRES_TIME_UNITS: &str = "us, ms, s, min, h and d (case-sensitive)";
/// Redis's memory units.
pub const REDIS_MEMORY_UNITS: &str = "k, kb, m, mb, g and gb (any case)";

/// Splits `1.5 GB` into `(1.5, "GB")`, as PostgreSQL's parser does (space before the unit allowed).
fn split_number(raw: &str) -> Result<(f64, &str), UnitError> {
    let raw = raw.trim();
    let end = raw
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0)))
        .map_or(raw.len(), |(i, _)| i);
    let number: f64 = raw[..end]
        .parse()
        .map_err(|_| UnitError::NotANumber(raw.to_string()))?;
    Ok((number, raw[end..].trim_start()))
}

/// The size in bytes of one PostgreSQL memory unit, `None` for anything else.
pub fn postgres_memory_unit(unit: &str) -> Option<u64> {
    match unit {
        "B" => Some(1),
        "kB" => Some(KIB),
        "MB" => Some(MIB),
        "GB" => Some(GIB),
        "TB" => Some(TIB),
        "8kB" => Some(8 * KIB),
        "16MB" => Some(16 * MIB),
        _ => None,
    }
}

/// The length in microseconds of one PostgreSQL time unit, `None` for anything else.
pub fn postgres_time_unit(unit: &str) -> Option<f64> {
    match unit {
        "us" => Some(1.0),
        "ms" => Some(1e3),
        "s" => Some(1e6),
        "min" => Some(60e6),
        "h" => Some(3600e6),
        "d" => Some(86_400e6),
        _ => None,
    }
}

/// Reads a PostgreSQL integer setting whose base unit is `base_unit` (`8kB`, `kB`, `ms`, `s`, ...
/// or empty), returning the value in that base unit, rounded as the server rounds it.
pub fn parse_postgres_int(raw: &str, base_unit: &str) -> Result<i64, UnitError> {
    let (number, unit) = split_number(raw)?;
    let in_base = if unit.is_empty() {
        if number.fract() != 0.0 {
            return Err(UnitError::NotANumber(raw.trim().to_string()));
        }
        number
    } else if let Some(base) = postgres_memory_unit(base_unit) {
        let factor = postgres_memory_unit(unit)
            .filter(|_| !matches!(unit, "8kB" | "16MB"))
            .ok_or_else(|| UnitError::BadUnit {
                unit: unit.to_string(),
                valid: POSTGRES_MEMORY_UNITS,
            })?;
        number * factor as f64 / base as f64
    } else if let Some(base) = postgres_time_unit(base_unit) {
        let factor = postgres_time_unit(unit).ok_or_else(|| UnitError::BadUnit {
            unit: unit.to_string(),
            valid: POSTGRES_TIME_UNITS,
        })?;
        number * factor / base
    } else {
        return Err(UnitError::BadUnit {
            unit: unit.to_string(),
            valid: "none (this setting takes a plain number)",
        });
    };
    let rounded = in_base.round();
    if !rounded.is_finite() || rounded.abs() > i64::MAX as f64 / 2.0 {
        return Err(UnitError::Overflow(raw.trim().to_string()));
    }
    Ok(rounded as i64)
}

/// Reads a Redis memory amount (`512mb`, `1g`, `1048576`) in bytes.
pub fn parse_redis_memory(raw: &str) -> Result<MemorySize, UnitError> {
    let lower = raw.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    if digits.is_empty() {
        return Err(UnitError::NotANumber(raw.trim().to_string()));
    }
    let factor = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => KIB,
        "m" => 1000 * 1000,
        "mb" => MIB,
        "g" => 1000 * 1000 * 1000,
        "gb" => GIB,
        _ => {
            return Err(UnitError::BadUnit {
                unit: unit.to_string(),
                valid: REDIS_MEMORY_UNITS,
            });
        }
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| UnitError::Overflow(raw.trim().to_string()))?;
    number
        .checked_mul(factor)
        .map(MemorySize)
        .ok_or_else(|| UnitError::Overflow(raw.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_memory_units_convert_to_the_base_unit() {
        assert_eq!(parse_postgres_int("256MB", "8kB"), Ok(32768));
        assert_eq!(parse_postgres_int("1GB", "8kB"), Ok(131072));
        assert_eq!(parse_postgres_int("4MB", "kB"), Ok(4096));
        assert_eq!(parse_postgres_int("1.5 GB", "kB"), Ok(1_572_864));
        assert_eq!(parse_postgres_int("32768", "8kB"), Ok(32768));
    }

    #[test]
    fn postgres_units_are_case_sensitive() {
        assert!(matches!(
            parse_postgres_int("8M", "kB"),
            Err(UnitError::BadUnit { .. })
        ));
        assert!(matches!(
            parse_postgres_int("256mb", "8kB"),
            Err(UnitError::BadUnit { .. })
        ));
        assert!(matches!(
            parse_postgres_int("256XB", "8kB"),
            Err(UnitError::BadUnit { .. })
        ));
    }

    #[test]
    fn postgres_time_units_convert_to_the_base_unit() {
        assert_eq!(parse_postgres_int("1000", "ms"), Ok(1000));
        assert_eq!(parse_postgres_int("1s", "ms"), Ok(1000));
        assert_eq!(parse_postgres_int("2min", "s"), Ok(120));
        assert!(matches!(
            parse_postgres_int("1MB", "ms"),
            Err(UnitError::BadUnit { .. })
        ));
    }

    #[test]
    fn redis_memory_units_are_case_insensitive_and_decimal_without_b() {
        assert_eq!(parse_redis_memory("512mb"), Ok(MemorySize(536_870_912)));
        assert_eq!(parse_redis_memory("512MB"), Ok(MemorySize(536_870_912)));
        assert_eq!(parse_redis_memory("1m"), Ok(MemorySize(1_000_000)));
        assert_eq!(parse_redis_memory("64mb"), Ok(MemorySize::mib(64)));
        assert!(matches!(
            parse_redis_memory("5xb"),
            Err(UnitError::BadUnit { .. })
        ));
    }

    #[test]
    fn sizes_render_in_the_largest_exact_unit() {
        assert_eq!(MemorySize::mib(256).to_postgres(), "256MB");
        assert_eq!(MemorySize::gib(1).to_postgres(), "1GB");
        assert_eq!(MemorySize::mib(512).to_redis(), "512mb");
        assert_eq!(MemorySize(1_000_000).to_redis(), "1000000");
    }
}
