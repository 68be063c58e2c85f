//! Figures and text as people read them: sizes in binary units (`--bytes`
//! gives the raw numbers), durations, aligned tables, and text from inside
//! a container made safe to print on a terminal.

/// How sizes print: human units, or the raw byte counts (`--bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub raw: bool,
}

impl Sizes {
    pub fn show(self, bytes: u64) -> String {
        if self.raw {
            bytes.to_string()
        } else {
            size(bytes)
        }
    }

    /// A limit: "none" for 0 (no limit), else the size.
    pub fn limit(self, bytes: u64) -> String {
        if bytes == 0 {
            "none".into()
        } else {
            self.show(bytes)
        }
    }
}

/// Bytes in binary units, as `--limit-memory` takes them back: 512B, 64MiB,
/// 1.5GiB (one decimal where the unit does not divide evenly).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut unit = 0;
    let mut scale = 1024u64;
    while unit + 1 < UNITS.len() && bytes / scale >= 1024 {
        unit += 1;
        scale *= 1024;
    }
    if bytes.is_multiple_of(scale) {
        return format!("{}{}", bytes / scale, UNITS[unit]);
    }
    let value = bytes as f64 / scale as f64;
    let text = format!("{value:.1}");
    // 1023.95 KiB rounds to 1024.0: say 1MiB's neighbour as 1.0MiB.
    if text == "1024.0" && unit + 1 < UNITS.len() {
        return format!("1.0{}", UNITS[unit + 1]);
    }
    format!("{text}{}", UNITS[unit])
}

/// A duration as its largest unit or two: 45s, 3m20s, 2h5m, 4d3h.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => two(s / 60, "m", s % 60, "s"),
        3600..=86399 => two(s / 3600, "h", s % 3600 / 60, "m"),
        _ => two(s / 86400, "d", s % 86400 / 3600, "h"),
    }
}

fn two(big: u64, big_unit: &str, small: u64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}

/// CPU time as ps shows it: MM:SS, or H:MM:SS from an hour on.
pub fn cpu_time(millis: u64) -> String {
    let s = millis / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// Text from inside a container, safe to print: control characters (an
/// escape sequence could retitle or rewrite the user's terminal) shown as
/// `\xNN`.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Rows under a header, each column as wide as its widest cell, two spaces
/// apart; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                let pad = widths[i] + 2 - cell.chars().count();
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_the_flags_take_them() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(1023), "1023B");
        assert_eq!(size(1024), "1KiB");
        assert_eq!(size(64 << 20), "64MiB");
        assert_eq!(size(1536 << 20), "1.5GiB");
        assert_eq!(size(12_865_536), "12.3MiB");
        assert_eq!(size((1 << 20) - 1), "1.0MiB");
        assert_eq!(size(u64::MAX), "16.0EiB");
        assert_eq!(Sizes { raw: true }.show(64 << 20), "67108864");
        assert_eq!(Sizes { raw: false }.limit(0), "none");
    }

    #[test]
    fn durations_and_cpu_times() {
        assert_eq!(duration(0.4), "0s");
        assert_eq!(duration(59.9), "59s");
        assert_eq!(duration(200.0), "3m20s");
        assert_eq!(duration(7200.0), "2h");
        assert_eq!(duration(90_000.0), "1d1h");
        assert_eq!(cpu_time(61_500), "01:01");
        assert_eq!(cpu_time(3_723_000), "1:02:03");
    }

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(printable("sh -c 'x'"), "sh -c 'x'");
        assert_eq!(printable("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(printable("tab\there"), "tab\\x09here");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["HANDLE", "STATE"],
            &[
                vec!["web".into(), "active".into()],
                vec!["database".into(), "stopped".into()],
            ],
        );
        assert_eq!(t, "HANDLE    STATE\nweb       active\ndatabase  stopped\n");
    }
}
