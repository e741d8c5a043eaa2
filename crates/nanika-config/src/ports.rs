//! The kernel's ephemeral port range: the ports it hands out as the source port of outgoing
//! connections (and for port 0). A server port inside it can be taken for a while by a client's
//! connection, so lint warns about one and the runtime names that cause when a bind fails.

/// Where Linux keeps its ephemeral port range (two numbers, the lowest and highest port).
pub const EPHEMERAL_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// The lowest port in it.
    pub low: u16,
    /// The highest port in it.
    pub high: u16,
}

impl PortRange {
    /// Reads the range from the text of [`EPHEMERAL_RANGE_FILE`] (`"32768\t60999\n"`); `None`
    /// for anything else, so a caller never acts on a guessed range.
    pub fn parse(text: &str) -> Option<PortRange> {
        let mut numbers = text.split_whitespace().map(|n| n.parse::<u16>().ok());
        match (numbers.next(), numbers.next(), numbers.next()) {
            (Some(Some(low)), Some(Some(high)), None) if low <= high => {
                Some(PortRange { low, high })
            }
            _ => None,
        }
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}–{}", self.low, self.high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_format_is_read_and_anything_else_refused() {
        let range = PortRange::parse("32768\t60999\n").unwrap();
        assert_eq!(
            range,
            PortRange {
                low: 32768,
                high: 60999
            }
        );
        assert!(range.contains(32768) && range.contains(60999) && range.contains(38432));
        assert!(!range.contains(5432) && !range.contains(61000));
        for bad in ["", "32768", "60999 32768", "1 2 3", "a b", "70000 80000"] {
            assert_eq!(PortRange::parse(bad), None, "{bad:?}");
        }
    }
}
