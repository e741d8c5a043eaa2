//! The servers' log lines as structured records (`nanika logs --json`): pure functions from the
//! lines PostgreSQL, Redis and the supervisor write to one record a logical message.
//!
//! A line that does not parse is never dropped: it becomes a record of level
//! [`Level::Unknown`] whose message is the line, with no timestamp (none is invented). A
//! timestamp whose zone cannot be converted without guessing keeps its raw text in
//! `source_timestamp` instead of `timestamp`. Passwords a statement carries
//! (`ALTER ROLE … PASSWORD '…'`) are masked in every text field.

use crate::Service;
use nanika_config::secret::MASK;
use serde::Serialize;

/// What the supervisor starts its remarks in a server's log with.
const SUPERVISOR_PREFIX: &str = "nanika: ";

/// Who wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The PostgreSQL server.
    Postgres,
    /// The Redis server.
    Redis,
    /// nanika's supervisor (a remark in a server's log: a restart, a hard stop).
    Supervisor,
    /// Prometheus (`[monitoring]`).
    Prometheus,
    /// postgres_exporter (`[monitoring]`).
    #[serde(rename = "postgres-exporter")]
    PostgresExporter,
    /// redis_exporter (`[monitoring]`).
    #[serde(rename = "redis-exporter")]
    RedisExporter,
    /// Alertmanager (`[monitoring]`).
    Alertmanager,
}

impl From<Service> for Source {
    fn from(service: Service) -> Self {
        match service.kind() {
            Service::Postgres => Source::Postgres,
            Service::Prometheus => Source::Prometheus,
            Service::PostgresExporter => Source::PostgresExporter,
            Service::RedisExporter => Source::RedisExporter,
            Service::Alertmanager => Source::Alertmanager,
            _ => Source::Redis,
        }
    }
}

/// A record's severity, normalized across the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// PostgreSQL DEBUG1–5, Redis `.`.
    Debug,
    /// PostgreSQL LOG and INFO, Redis `-` (verbose).
    Info,
    /// PostgreSQL NOTICE, Redis `*`.
    Notice,
    /// PostgreSQL WARNING, Redis `#`; the supervisor's remarks.
    Warning,
    /// PostgreSQL ERROR; the supervisor failing to start a server.
    Error,
    /// PostgreSQL FATAL.
    Fatal,
    /// PostgreSQL PANIC.
    Panic,
    /// A line that did not parse.
    Unknown,
}

/// Redis's role character: which kind of process wrote the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisRole {
    /// `M`.
    Master,
    /// `S`.
    Replica,
    /// `C`: a forked child (RDB or AOF rewrite).
    Child,
    /// `X`.
    Sentinel,
}

/// One logical log message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    /// RFC 3339 in UTC with milliseconds (`2026-11-29T20:00:00.123Z`), when the line had a
    /// time in a zone that converts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The line's own time, as written, when its zone does not convert without guessing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_timestamp: Option<String>,
    /// Who wrote it.
    pub service: Source,
    /// Its severity.
    pub level: Level,
    /// The message; continuation lines joined with `\n`.
    pub message: String,
    /// The writing process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Redis: the kind of process that wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<RedisRole>,
    /// PostgreSQL: the statement's run time in milliseconds (`log_min_duration_statement`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// PostgreSQL: the statement (a slow or logged statement, or the STATEMENT line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// PostgreSQL: the DETAIL line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// PostgreSQL: the HINT line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// PostgreSQL: the CONTEXT line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// PostgreSQL: the QUERY line (the internal query an error is in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The supervisor: the service whose log the remark is in, which it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub about: Option<Service>,
    /// PostgreSQL's jsonlog: the record's other fields as the server wrote them (`user`,
    /// `dbname`, `application_name`, `backend_type`, `state_code`, …), passwords masked.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl LogRecord {
    fn new(service: Source, level: Level, message: String) -> Self {
        LogRecord {
            timestamp: None,
            source_timestamp: None,
            service,
            level,
            message,
            pid: None,
            role: None,
            duration_ms: None,
            statement: None,
            detail: None,
            hint: None,
            context: None,
            query: None,
            about: None,
            extra: serde_json::Map::new(),
        }
    }

    /// A line that did not parse, kept whole.
    fn unknown(service: Service, line: &str) -> Self {
        LogRecord::new(service.into(), Level::Unknown, line.to_string())
    }

    /// The record once all its lines are in: the slow-query fields read off its whole message
    /// (a multi-line statement included), and its passwords masked.
    fn finish(mut self) -> Self {
        // Only LOG lines carry a duration or a statement in their message.
        if self.service == Source::Postgres && self.level == Level::Info && self.statement.is_none()
        {
            let (duration, statement) = statement_parts(&self.message);
            self.duration_ms = duration;
            self.statement = statement.map(str::to_string);
        }
        self.mask_secrets()
    }

    fn mask_secrets(mut self) -> Self {
        for text in [
            Some(&mut self.message),
            self.statement.as_mut(),
            self.detail.as_mut(),
            self.hint.as_mut(),
            self.context.as_mut(),
            self.query.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            *text = mask_passwords(text);
        }
        for value in self.extra.values_mut() {
            if let serde_json::Value::String(text) = value {
                *text = mask_passwords(text);
            }
        }
        self
    }
}

/// The zone a server writes times in when its lines do not say (Redis writes local time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalZone {
    /// The server's local time is UTC (a container; a host whose zone is UTC).
    Utc,
    /// Unknown: times stay as written, in `source_timestamp`.
    Unknown,
}

/// A calendar time with milliseconds, as read off a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

impl Civil {
    fn valid(self) -> Option<Self> {
        let ok = (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 61
            && self.millis < 1000;
        ok.then_some(self)
    }

    /// This time, `offset_minutes` east of UTC, as RFC 3339 UTC.
    fn to_utc_rfc3339(self, offset_minutes: i64) -> String {
        let days = days_from_civil(self.year, self.month, self.day);
        let minutes =
            days * 1440 + i64::from(self.hour) * 60 + i64::from(self.minute) - offset_minutes;
        let (days, minute_of_day) = (minutes.div_euclid(1440), minutes.rem_euclid(1440));
        let (year, month, day) = civil_from_days(days);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            minute_of_day / 60,
            minute_of_day % 60,
            self.second,
            self.millis
        )
    }
}

/// Days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Minutes east of UTC of a zone as PostgreSQL prints it: `GMT`, `UTC`, `Z` and numeric
/// offsets (`+09`, `-0330`, `+05:30`). Abbreviations such as `CET` or `IST` are ambiguous
/// without the server's zone database: `None`.
fn zone_offset(zone: &str) -> Option<i64> {
    if matches!(zone, "GMT" | "UTC" | "Z" | "UT") {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = match digits.len() {
        2 => (digits.parse::<i64>().ok()?, 0),
        4 => (digits[..2].parse::<i64>().ok()?, digits[2..].parse().ok()?),
        _ => return None,
    };
    (hours <= 15 && minutes < 60).then_some(sign * (hours * 60 + minutes))
}

/// `HH:MM:SS` or `HH:MM:SS.fff` (any number of fraction digits, kept to milliseconds).
fn parse_clock(text: &str) -> Option<(u32, u32, u32, u32)> {
    let (hms, fraction) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = hms.split(':');
    let mut next = || -> Option<u32> {
        let part = parts.next()?;
        (part.len() == 2).then_some(())?;
        part.parse().ok()
    };
    let (hour, minute, second) = (next()?, next()?, next()?);
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis = format!("{fraction:0<3}")[..3].parse().ok()?;
    Some((hour, minute, second, millis))
}

/// Splits off the first `n` space-separated words of `line`, and the rest after one space.
fn words(line: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut taken = Vec::with_capacity(n);
    let mut rest = line;
    for _ in 0..n {
        let (word, after) = rest.split_once(' ')?;
        if word.is_empty() {
            return None;
        }
        taken.push(word);
        rest = after;
    }
    Some((taken, rest))
}

/// Sets `timestamp`, or `source_timestamp` when the zone does not convert.
fn stamp(record: &mut LogRecord, civil: Civil, offset: Option<i64>, raw: String) {
    match offset {
        Some(offset) => record.timestamp = Some(civil.to_utc_rfc3339(offset)),
        None => record.source_timestamp = Some(raw),
    }
}

/// A PostgreSQL line in the default `log_line_prefix` (`'%m [%p] '`): the time and zone, the
/// pid, the severity and the text.
struct PgLine<'a> {
    civil: Civil,
    zone: &'a str,
    raw_time: String,
    pid: u32,
    severity: &'a str,
    text: &'a str,
}

fn parse_pg_line(line: &str) -> Option<PgLine<'_>> {
    let (taken, rest) = words(line, 4)?;
    let [date, clock, zone, pid]: [&str; 4] = taken.try_into().ok()?;
    let civil = parse_pg_time(date, clock)?;
    let pid = pid.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?;
    let (severity, text) = rest.split_once(':')?;
    if severity.is_empty()
        || !severity
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return None;
    }
    Some(PgLine {
        civil,
        zone,
        raw_time: format!("{date} {clock} {zone}"),
        pid,
        severity,
        text: text.strip_prefix("  ").unwrap_or(text.trim_start()),
    })
}

/// PostgreSQL's `%m` date and clock (`2026-11-29 20:00:00.123`).
fn parse_pg_time(date: &str, clock: &str) -> Option<Civil> {
    let mut ymd = date.split('-');
    let year = ymd.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let month = ymd.next().filter(|m| m.len() == 2)?.parse().ok()?;
    let day = ymd.next().filter(|d| d.len() == 2)?.parse().ok()?;
    let (hour, minute, second, millis) = parse_clock(clock)?;
    Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        millis,
    }
    .valid()
}

/// The jsonlog fields that become the common fields; the others are kept as they are.
const JSONLOG_MAPPED: [&str; 9] = [
    "timestamp",
    "pid",
    "error_severity",
    "message",
    "detail",
    "hint",
    "context",
    "statement",
    "internal_query",
];

/// A line of PostgreSQL's `jsonlog` destination: a JSON object with `error_severity`. `None`
/// for anything else (a text line, another program's JSON).
fn jsonlog_fields(line: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    if !line.starts_with('{') {
        return None;
    }
    match serde_json::from_str(line).ok()? {
        serde_json::Value::Object(fields) if fields.contains_key("error_severity") => Some(fields),
        _ => None,
    }
}

/// A jsonlog line as a record with the common fields (`timestamp`, `level`, `message`, `pid`,
/// `duration_ms`, `statement`, `detail`, `hint`, `context`, `query`) and the record's other
/// fields as written. Passwords are masked by [`LogRecord::finish`], as for text lines.
fn parse_jsonlog(line: &str) -> Option<LogRecord> {
    let mut fields = jsonlog_fields(line)?;
    let text = |name: &str| match fields.get(name) {
        Some(serde_json::Value::String(text)) => Some(text.clone()),
        _ => None,
    };
    let severity = text("error_severity").unwrap_or_default();
    let level = pg_level(&severity).unwrap_or(Level::Unknown);
    let mut record = LogRecord::new(Source::Postgres, level, text("message").unwrap_or_default());
    record.detail = text("detail");
    record.hint = text("hint");
    record.context = text("context");
    record.statement = text("statement");
    record.query = text("internal_query");
    if let Some(time) = text("timestamp") {
        let mut parts = time.splitn(3, ' ');
        let civil = match (parts.next(), parts.next()) {
            (Some(date), Some(clock)) => parse_pg_time(date, clock),
            _ => None,
        };
        match (civil, parts.next()) {
            (Some(civil), Some(zone)) => stamp(&mut record, civil, zone_offset(zone), time.clone()),
            _ => record.source_timestamp = Some(time),
        }
    }
    record.pid = fields
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|pid| u32::try_from(pid).ok());
    // A slow query's LOG message carries its duration whether or not the record has a
    // `statement` field (it has one when `log_min_error_statement` reaches LOG).
    if level == Level::Info {
        let (duration, statement) = statement_parts(&record.message);
        record.duration_ms = duration;
        if record.statement.is_none() {
            record.statement = statement.map(str::to_string);
        }
    }
    for name in JSONLOG_MAPPED {
        fields.remove(name);
    }
    record.extra = fields;
    Some(record)
}

/// A jsonlog line as the text lines PostgreSQL's default `log_line_prefix` (`'%m [%p] '`)
/// would have written to stderr: the message, then its DETAIL, HINT, QUERY, CONTEXT and
/// STATEMENT lines, continuation lines led by a tab. `None` when the line is not jsonlog.
/// The lines are as written: the caller masks them as it masks text lines.
pub fn jsonlog_text(line: &str) -> Option<Vec<String>> {
    let fields = jsonlog_fields(line)?;
    let text = |name: &str| fields.get(name).and_then(serde_json::Value::as_str);
    let prefix = format!(
        "{} [{}] ",
        text("timestamp").unwrap_or("-"),
        fields
            .get("pid")
            .map_or_else(|| "-".to_string(), ToString::to_string)
    );
    let mut lines = Vec::new();
    for (label, name) in [
        (text("error_severity").unwrap_or("LOG"), "message"),
        ("DETAIL", "detail"),
        ("HINT", "hint"),
        ("QUERY", "internal_query"),
        ("CONTEXT", "context"),
        ("STATEMENT", "statement"),
    ] {
        let Some(value) = text(name) else { continue };
        let mut parts = value.split('\n');
        lines.push(format!(
            "{prefix}{label}:  {}",
            parts.next().unwrap_or_default()
        ));
        lines.extend(parts.map(|part| format!("\t{part}")));
    }
    Some(lines)
}

fn pg_level(severity: &str) -> Option<Level> {
    Some(match severity {
        "LOG" | "INFO" => Level::Info,
        "NOTICE" => Level::Notice,
        "WARNING" => Level::Warning,
        "ERROR" => Level::Error,
        "FATAL" => Level::Fatal,
        "PANIC" => Level::Panic,
        s if s.starts_with("DEBUG") => Level::Debug,
        _ => return None,
    })
}

/// Which field of the record before it a PostgreSQL continuation severity fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Message,
    Statement,
    Detail,
    Hint,
    Context,
    Query,
}

impl Slot {
    fn of_continuation(severity: &str) -> Option<Slot> {
        Some(match severity {
            "DETAIL" => Slot::Detail,
            "HINT" => Slot::Hint,
            "STATEMENT" => Slot::Statement,
            "CONTEXT" => Slot::Context,
            "QUERY" => Slot::Query,
            _ => return None,
        })
    }

    /// The optional field this slot fills (none for the message itself).
    fn field(self, record: &mut LogRecord) -> Option<&mut Option<String>> {
        match self {
            Slot::Message => None,
            Slot::Statement => Some(&mut record.statement),
            Slot::Detail => Some(&mut record.detail),
            Slot::Hint => Some(&mut record.hint),
            Slot::Context => Some(&mut record.context),
            Slot::Query => Some(&mut record.query),
        }
    }

    fn set(self, record: &mut LogRecord, text: &str) {
        match self.field(record) {
            Some(field) => *field = Some(text.to_string()),
            None => record.message = text.to_string(),
        }
    }

    /// Appends a continuation line (a tab-led line of a multi-line text) to this slot.
    fn append(self, record: &mut LogRecord, line: &str) {
        let text = match self.field(record) {
            Some(field) => field.get_or_insert_with(String::new),
            None => &mut record.message,
        };
        text.push('\n');
        text.push_str(line);
    }
}

/// The slow-query or logged-statement parts of a LOG message: `duration: 1001.234 ms
/// statement: …`, `duration: 2.1 ms  execute <unnamed>: …`, `statement: …`.
fn statement_parts(message: &str) -> (Option<f64>, Option<&str>) {
    let (duration, rest) = match message.strip_prefix("duration: ") {
        Some(rest) => match rest.split_once(" ms") {
            Some((number, after)) => (number.parse::<f64>().ok(), after.trim_start()),
            None => (None, message),
        },
        None => (None, message),
    };
    let statement = ["statement: ", "execute ", "parse ", "bind "]
        .iter()
        .find_map(|prefix| {
            let body = rest.strip_prefix(prefix)?;
            if *prefix == "statement: " {
                Some(body)
            } else {
                body.split_once(": ").map(|(_, sql)| sql)
            }
        });
    (duration, statement)
}

/// A Redis line: `PID:R DD Mon YYYY HH:MM:SS.mmm L message`.
fn parse_redis(line: &str, zone: LocalZone) -> Option<LogRecord> {
    let (taken, message) = words(line, 6)?;
    let [pid_role, day, month, year, clock, level]: [&str; 6] = taken.try_into().ok()?;
    let (pid, role) = pid_role.split_once(':')?;
    let role = match role {
        "M" => RedisRole::Master,
        "S" => RedisRole::Replica,
        "C" => RedisRole::Child,
        "X" => RedisRole::Sentinel,
        _ => return None,
    };
    let level = match level {
        "." => Level::Debug,
        "-" => Level::Info,
        "*" => Level::Notice,
        "#" => Level::Warning,
        _ => return None,
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_number = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let (hour, minute, second, millis) = parse_clock(clock)?;
    let civil = Civil {
        year: year.parse().ok().filter(|_| year.len() == 4)?,
        month: month_number,
        day: day.parse().ok()?,
        hour,
        minute,
        second,
        millis,
    }
    .valid()?;
    let mut record = LogRecord::new(Source::Redis, level, message.to_string());
    record.pid = Some(pid.parse().ok()?);
    record.role = Some(role);
    let offset = (zone == LocalZone::Utc).then_some(0);
    stamp(
        &mut record,
        civil,
        offset,
        format!("{day} {month} {year} {clock}"),
    );
    Some(record)
}

/// A line of a Go program of the monitoring stack, in logfmt: `ts=… level=info msg="…" k=v`
/// (Prometheus, postgres_exporter) or `time="…" level=info msg="…"` (redis_exporter). The
/// message is `msg`, with the other fields after it as they were written.
fn parse_logfmt(source: Source, line: &str) -> Option<LogRecord> {
    let fields = logfmt_fields(line)?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let level = match field("level")? {
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" | "warning" => Level::Warning,
        "error" => Level::Error,
        "fatal" | "panic" => Level::Fatal,
        _ => Level::Unknown,
    };
    let mut message = field("msg").unwrap_or_default().to_string();
    for (key, value) in &fields {
        if !["ts", "time", "level", "msg", "caller"].contains(&key.as_str()) {
            message.push_str(&format!(" {key}={value}"));
        }
    }
    let mut record = LogRecord::new(source, level, message.trim().to_string());
    if let Some(time) = field("ts").or_else(|| field("time")) {
        match time.strip_suffix('Z') {
            // UTC already: written with milliseconds, as every record's timestamp is.
            Some(utc) if utc.len() >= 19 => {
                let (seconds, fraction) = utc.split_once('.').unwrap_or((utc, ""));
                let millis: String = fraction.chars().chain("000".chars()).take(3).collect();
                record.timestamp = Some(format!("{seconds}.{millis}Z"));
            }
            _ => record.source_timestamp = Some(time.to_string()),
        }
    }
    Some(record)
}

/// `key=value` pairs of a logfmt line, values unquoted; `None` when the line is not logfmt.
fn logfmt_fields(line: &str) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        if key.is_empty() || key.contains(char::is_whitespace) {
            return None;
        }
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            value.push(next);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        fields.push((key.to_string(), value));
        rest = after.trim_start();
    }
    Some(fields)
}

/// A remark the supervisor wrote into `service`'s log (`nanika: postgres killed by SIGKILL;
/// restarting`). It carries no time of its own.
fn parse_supervisor(service: Service, line: &str) -> Option<LogRecord> {
    let text = line.strip_prefix(SUPERVISOR_PREFIX)?;
    // Every remark is about something that went wrong; failing to start is the worst of them.
    let level = if text.starts_with("cannot ") {
        Level::Error
    } else {
        Level::Warning
    };
    let mut record = LogRecord::new(Source::Supervisor, level, text.to_string());
    record.about = Some(service);
    Some(record)
}

/// Gathers one service's log lines into records: PostgreSQL's DETAIL/HINT/STATEMENT/CONTEXT
/// lines and tab-led continuation lines belong to the record before them, so a record is
/// complete only when the next one starts ([`Records::push`]) or the lines end
/// ([`Records::flush`]).
#[derive(Debug)]
pub struct Records {
    service: Service,
    zone: LocalZone,
    pending: Option<(LogRecord, Slot)>,
}

impl Records {
    /// Records of `service`'s log, whose zoneless times (Redis) are in `zone`.
    pub fn new(service: Service, zone: LocalZone) -> Self {
        Records {
            service,
            zone,
            pending: None,
        }
    }

    /// Takes one line; returns the record it completed, if any.
    pub fn push(&mut self, line: &str) -> Option<LogRecord> {
        if self.absorb(line) {
            return None;
        }
        let (record, slot) = self.parse_start(line);
        self.pending
            .replace((record, slot))
            .map(|(done, _)| done.finish())
    }

    /// Takes `line` into the pending PostgreSQL record when it continues it: a tab-led line of
    /// a multi-line text, or a DETAIL/HINT/… line of the same process.
    fn absorb(&mut self, line: &str) -> bool {
        let Some((record, last)) = self.pending.as_mut() else {
            return false;
        };
        if self.service != Service::Postgres || record.service != Source::Postgres {
            return false;
        }
        if let Some(rest) = line.strip_prefix('\t') {
            last.append(record, rest);
            return true;
        }
        let Some(parsed) = parse_pg_line(line) else {
            return false;
        };
        match Slot::of_continuation(parsed.severity) {
            Some(slot) if record.pid == Some(parsed.pid) => {
                slot.set(record, parsed.text);
                *last = slot;
                true
            }
            _ => false,
        }
    }

    /// A line that starts a record, and the field a tab-led line after it continues.
    fn parse_start(&self, line: &str) -> (LogRecord, Slot) {
        if let Some(record) = parse_supervisor(self.service, line) {
            return (record, Slot::Message);
        }
        let parsed = match self.service.kind() {
            Service::Postgres if line.starts_with('{') => parse_jsonlog(line)
                .map(|r| (r, Slot::Message))
                .or_else(|| parse_postgres(line)),
            Service::Postgres => parse_postgres(line),
            monitor if monitor.is_monitor() => {
                parse_logfmt(monitor.into(), line).map(|r| (r, Slot::Message))
            }
            _ => parse_redis(line, self.zone).map(|r| (r, Slot::Message)),
        };
        parsed.unwrap_or_else(|| (LogRecord::unknown(self.service, line), Slot::Message))
    }

    /// The pending record, at the end of the lines (or when no line came for a while).
    pub fn flush(&mut self) -> Option<LogRecord> {
        self.pending.take().map(|(record, _)| record.finish())
    }
}

/// A PostgreSQL line starting a record. A DETAIL-like line with no record before it (the tail
/// began after its record) stands alone, its text both the message and its field.
fn parse_postgres(line: &str) -> Option<(LogRecord, Slot)> {
    let parsed = parse_pg_line(line)?;
    let continuation = Slot::of_continuation(parsed.severity);
    let level = match continuation {
        Some(_) => Level::Info,
        None => pg_level(parsed.severity)?,
    };
    let mut record = LogRecord::new(Source::Postgres, level, parsed.text.to_string());
    record.pid = Some(parsed.pid);
    stamp(
        &mut record,
        parsed.civil,
        zone_offset(parsed.zone),
        parsed.raw_time,
    );
    if let Some(slot) = continuation {
        slot.set(&mut record, parsed.text);
        return Some((record, slot));
    }
    Some((record, Slot::Message))
}

/// Parses all of `lines` of `service`'s log into records.
pub fn parse_lines<'a>(
    service: Service,
    zone: LocalZone,
    lines: impl IntoIterator<Item = &'a str>,
) -> Vec<LogRecord> {
    let mut records = Records::new(service, zone);
    let mut out: Vec<LogRecord> = lines.into_iter().filter_map(|l| records.push(l)).collect();
    out.extend(records.flush());
    out
}

/// `text` with the string literal after each `PASSWORD` keyword replaced by [`MASK`]
/// (`ALTER ROLE app PASSWORD 'x'` → `ALTER ROLE app PASSWORD '****'`): quoted (`'…'`, `E'…'`)
/// and dollar-quoted (`$$…$$`) literals, to the end of the text when one is not closed.
pub fn mask_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find_keyword(rest) {
        let after_keyword = at + "password".len();
        out.push_str(&rest[..after_keyword]);
        rest = &rest[after_keyword..];
        let spaces = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..spaces]);
        rest = &rest[spaces..];
        if let Some(end) = literal_end(rest) {
            out.push_str(&masked_literal(rest));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Where the next `password` keyword (any case, not inside a longer word) starts.
fn find_keyword(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("password") {
        let at = from + found;
        let before_ok = lower[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let after_ok = lower[at + 8..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + 8;
    }
    None
}

/// The byte length of the SQL string literal `text` starts with, if it starts with one.
fn literal_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    match bytes.first()? {
        b'\'' => Some(quoted_end(text, 1, false)),
        b'E' | b'e' if bytes.get(1) == Some(&b'\'') => Some(quoted_end(text, 2, true)),
        b'$' => {
            let close = text[1..].find('$')? + 1;
            let tag = &text[..=close];
            if !tag[1..tag.len() - 1]
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_')
            {
                return None;
            }
            Some(
                text[tag.len()..]
                    .find(tag)
                    .map_or(text.len(), |end| tag.len() + end + tag.len()),
            )
        }
        _ => None,
    }
}

/// The end of a quoted literal whose text starts at `start`: `''` is a quote inside it, and
/// so is `\'` in an `E'…'` literal.
fn quoted_end(text: &str, start: usize, backslashes: bool) -> usize {
    let bytes = text.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslashes => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// A literal's quotes around [`MASK`].
fn masked_literal(literal: &str) -> String {
    if let Some(after) = literal.strip_prefix('$') {
        let tag = after.find('$').map_or("$", |i| &literal[..i + 2]);
        format!("{tag}{MASK}{tag}")
    } else if literal.starts_with('\'') {
        format!("'{MASK}'")
    } else {
        format!("{}'{MASK}'", &literal[..1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monitoring_stacks_logfmt_lines_are_records() {
        let record = parse_logfmt(
            Source::Prometheus,
            r#"ts=2026-11-30T02:01:52.123Z caller=main.go:512 level=info msg="Starting Prometheus Server" mode=server"#,
        )
        .unwrap();
        assert_eq!(
            record.timestamp.as_deref(),
            Some("2026-11-30T02:01:52.123Z")
        );
        assert_eq!(record.level, Level::Info);
        assert_eq!(record.message, "Starting Prometheus Server mode=server");
        let record = parse_logfmt(
            Source::RedisExporter,
            r#"time="2026-11-30T02:01:52Z" level=error msg="Couldn't connect to redis instance (\"x\")""#,
        )
        .unwrap();
        assert_eq!(
            record.timestamp.as_deref(),
            Some("2026-11-30T02:01:52.000Z")
        );
        assert_eq!(record.level, Level::Error);
        assert_eq!(
            record.message,
            r#"Couldn't connect to redis instance ("x")"#
        );
        assert!(parse_logfmt(Source::Prometheus, "not logfmt at all").is_none());
    }

    fn pg(lines: &[&str]) -> Vec<LogRecord> {
        parse_lines(Service::Postgres, LocalZone::Unknown, lines.iter().copied())
    }

    fn json(record: &LogRecord) -> serde_json::Value {
        serde_json::to_value(record).unwrap()
    }

    #[test]
    fn a_slow_query_has_its_duration_and_statement() {
        let records = pg(&[
            "2026-11-29 20:00:00.123 GMT [1234] LOG:  duration: 1001.234 ms  statement: SELECT pg_sleep(1.1)",
        ]);
        assert_eq!(records.len(), 1);
        let value = json(&records[0]);
        assert_eq!(
            value,
            serde_json::json!({
                "timestamp": "2026-11-29T20:00:00.123Z",
                "service": "postgres",
                "level": "info",
                "message": "duration: 1001.234 ms  statement: SELECT pg_sleep(1.1)",
                "pid": 1234,
                "duration_ms": 1001.234,
                "statement": "SELECT pg_sleep(1.1)",
            })
        );
    }

    #[test]
    fn an_extended_protocol_slow_query_names_its_statement() {
        let records = pg(&[
            "2026-11-29 20:00:00.123 UTC [77] LOG:  duration: 1500.5 ms  execute <unnamed>: SELECT pg_sleep($1)",
            "2026-11-29 20:00:00.124 UTC [77] DETAIL:  parameters: $1 = '1.5'",
        ]);
        assert_eq!(records[0].duration_ms, Some(1500.5));
        assert_eq!(records[0].statement.as_deref(), Some("SELECT pg_sleep($1)"));
        assert_eq!(records[0].detail.as_deref(), Some("parameters: $1 = '1.5'"));
    }

    #[test]
    fn an_error_takes_its_detail_hint_and_statement_lines() {
        let records = pg(&[
            "2026-11-29 20:00:01.500 GMT [4321] ERROR:  duplicate key value violates unique constraint \"users_pkey\"",
            "2026-11-29 20:00:01.500 GMT [4321] DETAIL:  Key (id)=(1) already exists.",
            "2026-11-29 20:00:01.500 GMT [4321] HINT:  Use another id.",
            "2026-11-29 20:00:01.500 GMT [4321] STATEMENT:  INSERT INTO users (id) VALUES (1);",
            "2026-11-29 20:00:02.000 GMT [4321] LOG:  disconnection: session time: 0:00:01.001 user=app database=nanika_game host=127.0.0.1 port=5000",
        ]);
        assert_eq!(records.len(), 2, "{records:#?}");
        let error = &records[0];
        assert_eq!(error.level, Level::Error);
        assert_eq!(
            error.message,
            "duplicate key value violates unique constraint \"users_pkey\""
        );
        assert_eq!(
            error.detail.as_deref(),
            Some("Key (id)=(1) already exists.")
        );
        assert_eq!(error.hint.as_deref(), Some("Use another id."));
        assert_eq!(
            error.statement.as_deref(),
            Some("INSERT INTO users (id) VALUES (1);")
        );
        assert_eq!(error.duration_ms, None);
        assert_eq!(records[1].level, Level::Info);
        assert!(records[1].message.starts_with("disconnection:"));
    }

    #[test]
    fn a_detail_of_another_process_does_not_join_the_record() {
        let records = pg(&[
            "2026-11-29 20:00:01.500 GMT [1] ERROR:  boom",
            "2026-11-29 20:00:01.501 GMT [2] DETAIL:  someone else's",
        ]);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].detail, None);
        assert_eq!(records[1].detail.as_deref(), Some("someone else's"));
        assert_eq!(records[1].message, "someone else's");
    }

    #[test]
    fn fatal_and_panic_and_debug_levels() {
        let records = pg(&[
            "2026-11-29 20:00:03.000 GMT [99] FATAL:  password authentication failed for user \"app\"",
            "2026-11-29 20:00:03.000 GMT [99] DETAIL:  Connection matched pg_hba.conf line 3: \"host all all 127.0.0.1/32 scram-sha-256\"",
            "2026-11-29 20:00:04.000 GMT [1] PANIC:  could not write to file",
            "2026-11-29 20:00:05.000 GMT [1] DEBUG2:  checkpointer updated shared memory",
            "2026-11-29 20:00:06.000 GMT [1] WARNING:  there is no transaction in progress",
            "2026-11-29 20:00:07.000 GMT [1] NOTICE:  relation \"x\" already exists, skipping",
        ]);
        let levels: Vec<Level> = records.iter().map(|r| r.level).collect();
        assert_eq!(
            levels,
            [
                Level::Fatal,
                Level::Panic,
                Level::Debug,
                Level::Warning,
                Level::Notice
            ]
        );
        assert!(
            records[0]
                .detail
                .as_deref()
                .unwrap()
                .contains("pg_hba.conf")
        );
        assert_eq!(json(&records[1])["level"], "panic");
    }

    #[test]
    fn tab_led_lines_continue_the_message_or_the_statement() {
        let records = pg(&[
            "2026-11-29 20:00:00.000 GMT [5] LOG:  duration: 2000.000 ms  statement: SELECT pg_sleep(2)",
            "\tFROM generate_series(1, 1)",
            "2026-11-29 20:00:01.000 GMT [6] ERROR:  syntax error at or near \"FORM\"",
            "2026-11-29 20:00:01.000 GMT [6] STATEMENT:  SELECT 1",
            "\tFORM x",
        ]);
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].message,
            "duration: 2000.000 ms  statement: SELECT pg_sleep(2)\nFROM generate_series(1, 1)"
        );
        assert_eq!(
            records[0].statement.as_deref(),
            Some("SELECT pg_sleep(2)\nFROM generate_series(1, 1)")
        );
        assert_eq!(records[1].statement.as_deref(), Some("SELECT 1\nFORM x"));
    }

    #[test]
    fn zones_convert_to_utc_or_stay_as_written() {
        let records = pg(&[
            "2026-12-31 23:30:00.5 +09 [1] LOG:  numeric offset",
            "2026-01-01 00:15:00 -0330 [1] LOG:  negative offset, no fraction",
            "2026-11-29 21:00:00.123 CET [1] LOG:  an abbreviation",
        ]);
        assert_eq!(
            records[0].timestamp.as_deref(),
            Some("2026-12-31T14:30:00.500Z")
        );
        assert_eq!(
            records[1].timestamp.as_deref(),
            Some("2026-01-01T03:45:00.000Z")
        );
        assert_eq!(records[2].timestamp, None);
        assert_eq!(
            records[2].source_timestamp.as_deref(),
            Some("2026-11-29 21:00:00.123 CET")
        );
        assert_eq!(records[2].level, Level::Info, "the record is kept");
    }

    #[test]
    fn dates_cross_month_and_leap_day_boundaries() {
        let civil = Civil {
            year: 2028,
            month: 3,
            day: 1,
            hour: 1,
            minute: 0,
            second: 59,
            millis: 7,
        };
        assert_eq!(civil.to_utc_rfc3339(120), "2028-02-29T23:00:59.007Z");
        assert_eq!(civil.to_utc_rfc3339(-23 * 60), "2028-03-02T00:00:59.007Z");
    }

    #[test]
    fn redis_lines_for_each_level_and_role() {
        let lines = [
            "1234:M 29 Nov 2026 20:00:00.123 * Ready to accept connections tcp",
            "1234:M 29 Nov 2026 20:00:00.124 # WARNING Memory overcommit must be enabled!",
            "1234:S 29 Nov 2026 20:00:00.125 - Accepted 127.0.0.1:50000",
            "1240:C 29 Nov 2026 20:00:00.126 . DB saved on disk",
            "1:X 29 Nov 2026 20:00:00.127 * Sentinel ID is 0123",
        ];
        let records = parse_lines(Service::Redis, LocalZone::Utc, lines);
        let summary: Vec<(Level, RedisRole, u32)> = records
            .iter()
            .map(|r| (r.level, r.role.unwrap(), r.pid.unwrap()))
            .collect();
        assert_eq!(
            summary,
            [
                (Level::Notice, RedisRole::Master, 1234),
                (Level::Warning, RedisRole::Master, 1234),
                (Level::Info, RedisRole::Replica, 1234),
                (Level::Debug, RedisRole::Child, 1240),
                (Level::Notice, RedisRole::Sentinel, 1),
            ]
        );
        assert_eq!(
            json(&records[0]),
            serde_json::json!({
                "timestamp": "2026-11-29T20:00:00.123Z",
                "service": "redis",
                "level": "notice",
                "message": "Ready to accept connections tcp",
                "pid": 1234,
                "role": "master",
            })
        );
        assert_eq!(json(&records[2])["role"], "replica");
    }

    #[test]
    fn redis_local_time_in_an_unknown_zone_stays_as_written() {
        let records = parse_lines(
            Service::Redis,
            LocalZone::Unknown,
            ["1234:M 29 Nov 2026 20:00:00.123 * Ready to accept connections tcp"],
        );
        assert_eq!(records[0].timestamp, None);
        assert_eq!(
            records[0].source_timestamp.as_deref(),
            Some("29 Nov 2026 20:00:00.123")
        );
    }

    #[test]
    fn supervisor_remarks_name_the_service_they_are_about() {
        let records = parse_lines(
            Service::Redis,
            LocalZone::Utc,
            [
                "nanika: redis killed by SIGKILL; restarting",
                "nanika: cannot start redis (/usr/bin/redis-server): No such file or directory",
            ],
        );
        assert_eq!(
            json(&records[0]),
            serde_json::json!({
                "service": "supervisor",
                "level": "warning",
                "message": "redis killed by SIGKILL; restarting",
                "about": "redis",
            })
        );
        assert_eq!(records[1].level, Level::Error);
        // A remark in the PostgreSQL log is not a continuation of the record before it.
        let records = pg(&[
            "2026-11-29 20:00:00.000 GMT [5] LOG:  database system is ready to accept connections",
            "nanika: postgres exited with code 1; restarting",
        ]);
        assert_eq!(records[1].service, Source::Supervisor);
        assert_eq!(records[1].about, Some(Service::Postgres));
    }

    #[test]
    fn a_line_that_does_not_parse_is_kept_whole_without_a_time() {
        for (service, line) in [
            (Service::Postgres, "waiting for server to start.... garbage"),
            (
                Service::Postgres,
                "2026-13-01 00:00:00.000 GMT [1] LOG:  month 13",
            ),
            (
                Service::Redis,
                "                _._                                   ",
            ),
            (
                Service::Redis,
                "1234:Q 29 Nov 2026 20:00:00.123 * unknown role",
            ),
            (Service::Redis, ""),
        ] {
            let records = parse_lines(service, LocalZone::Utc, [line]);
            assert_eq!(
                json(&records[0]),
                serde_json::json!({
                    "service": service.as_str(),
                    "level": "unknown",
                    "message": line,
                }),
                "{line:?}"
            );
        }
        // A tab-led line with no PostgreSQL record before it is a line of its own.
        assert_eq!(pg(&["\torphan"])[0].level, Level::Unknown);
        let after_remark = pg(&["nanika: postgres exited with code 1; restarting", "\tstray"]);
        assert_eq!(after_remark.len(), 2);
        assert_eq!(after_remark[1].message, "\tstray");
    }

    #[test]
    fn passwords_in_statements_are_masked() {
        let records = pg(&[
            "2026-11-29 20:00:00.000 GMT [5] LOG:  statement: ALTER ROLE app PASSWORD 'hunter2''s'",
            "2026-11-29 20:00:01.000 GMT [6] ERROR:  role \"x\" does not exist",
            "2026-11-29 20:00:01.000 GMT [6] STATEMENT:  CREATE USER y WITH ENCRYPTED password E'a\\'b' LOGIN;",
        ]);
        let out = serde_json::to_string(&records).unwrap();
        assert!(
            !out.contains("hunter2") && !out.contains("a\\\\'b"),
            "{out}"
        );
        assert_eq!(
            records[0].statement.as_deref(),
            Some("ALTER ROLE app PASSWORD '****'")
        );
        assert_eq!(
            records[1].statement.as_deref(),
            Some("CREATE USER y WITH ENCRYPTED password E'****' LOGIN;")
        );
        assert_eq!(
            mask_passwords("ALTER USER a PASSWORD $x$se'cret$x$; -- password_encryption"),
            "ALTER USER a PASSWORD $x$****$x$; -- password_encryption"
        );
        assert_eq!(
            mask_passwords("ALTER ROLE a PASSWORD 'never closed"),
            "ALTER ROLE a PASSWORD '****'"
        );
        assert_eq!(
            mask_passwords("password authentication failed for user \"app\""),
            "password authentication failed for user \"app\""
        );
    }

    #[test]
    fn no_cut_of_a_line_panics() {
        let samples = [
            "2026-11-29 20:00:00.123 +05:30 [1234] LOG:  duration: 1001.234 ms  statement: ALTER ROLE é PASSWORD E'ü\\'x' $tag$",
            "1234:M 29 Nov 2026 20:00:00.123 * Ready to accept connections tcp ✓",
            "nanika: cannot start redis (/usr/bin/redis-server): ✗",
            "password $ab$c",
        ];
        for sample in samples {
            for (end, _) in sample.char_indices() {
                for service in Service::ALL {
                    let cut = &sample[..end];
                    let _ = parse_lines(service, LocalZone::Utc, [cut, "\tmore", cut]);
                    let _ = mask_passwords(cut);
                }
            }
        }
    }

    #[test]
    fn records_wait_for_their_continuations_until_flushed() {
        let mut records = Records::new(Service::Postgres, LocalZone::Unknown);
        assert_eq!(
            records.push("2026-11-29 20:00:01.500 GMT [4321] ERROR:  boom"),
            None
        );
        assert_eq!(
            records.push("2026-11-29 20:00:01.500 GMT [4321] DETAIL:  why"),
            None
        );
        let done = records.flush().unwrap();
        assert_eq!(done.detail.as_deref(), Some("why"));
        assert_eq!(records.flush(), None);
    }

    #[test]
    fn a_jsonlog_slow_query_maps_onto_the_common_fields_and_keeps_the_others() {
        let line = r#"{"timestamp":"2026-11-30 05:00:01.234 UTC","user":"app","dbname":"app","pid":4242,"remote_host":"127.0.0.1","session_id":"6751a.1092","line_num":3,"ps":"SELECT","session_start":"2026-11-30 05:00:00 UTC","vxid":"3/7","txid":0,"error_severity":"LOG","message":"duration: 1101.507 ms  statement: SELECT pg_sleep(1.1)","application_name":"psql","backend_type":"client backend","query_id":0}"#;
        let records = pg(&[line]);
        assert_eq!(records.len(), 1);
        let value = json(&records[0]);
        assert_eq!(value["timestamp"], "2026-11-30T05:00:01.234Z");
        assert_eq!(value["service"], "postgres");
        assert_eq!(value["level"], "info");
        assert_eq!(value["pid"], 4242);
        assert_eq!(value["duration_ms"], 1101.507);
        assert_eq!(value["statement"], "SELECT pg_sleep(1.1)");
        assert_eq!(value["user"], "app");
        assert_eq!(value["dbname"], "app");
        assert_eq!(value["application_name"], "psql");
        assert_eq!(value["backend_type"], "client backend");
        assert_eq!(value["line_num"], 3);
        for mapped in ["error_severity", "internal_query", "source_timestamp"] {
            assert!(value.get(mapped).is_none(), "{mapped} in {value}");
        }
    }

    #[test]
    fn a_jsonlog_error_has_its_parts_its_level_and_its_password_masked() {
        let line = r#"{"timestamp":"2026-11-30 06:00:00.000 +09","pid":7,"error_severity":"ERROR","state_code":"42601","message":"syntax error at or near \"PASWORD\"","detail":"d","hint":"h","context":"c","internal_query":"q","statement":"ALTER ROLE app PASWORD 'x'; ALTER ROLE app PASSWORD 'hunter2'","user":"app"}"#;
        let record = &pg(&[line])[0];
        assert_eq!(record.level, Level::Error);
        assert_eq!(
            record.timestamp.as_deref(),
            Some("2026-11-29T21:00:00.000Z")
        );
        assert_eq!(record.detail.as_deref(), Some("d"));
        assert_eq!(record.hint.as_deref(), Some("h"));
        assert_eq!(record.context.as_deref(), Some("c"));
        assert_eq!(record.query.as_deref(), Some("q"));
        assert_eq!(record.duration_ms, None);
        let text = serde_json::to_string(record).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("PASSWORD '****'"), "{text}");
        assert_eq!(json(record)["state_code"], "42601");

        // A zone abbreviation is kept as written, as for text lines; an unknown severity is
        // `unknown`, not dropped.
        let record = &pg(&[
            r#"{"timestamp":"2026-11-30 06:00:00.000 CET","pid":7,"error_severity":"ODD","message":"m"}"#,
        ])[0];
        assert_eq!(record.timestamp, None);
        assert_eq!(
            record.source_timestamp.as_deref(),
            Some("2026-11-30 06:00:00.000 CET")
        );
        assert_eq!(record.level, Level::Unknown);
        // JSON that is not jsonlog is a line like any other.
        let record = &pg(&[r#"{"a":1}"#])[0];
        assert_eq!(record.level, Level::Unknown);
        assert_eq!(record.message, r#"{"a":1}"#);
    }

    #[test]
    fn a_jsonlog_record_renders_as_the_default_prefix_would() {
        let line = r#"{"timestamp":"2026-11-30 05:00:01.234 UTC","pid":42,"error_severity":"ERROR","message":"boom\nsecond line","detail":"why","statement":"SELECT 1"}"#;
        assert_eq!(
            jsonlog_text(line).unwrap(),
            [
                "2026-11-30 05:00:01.234 UTC [42] ERROR:  boom",
                "\tsecond line",
                "2026-11-30 05:00:01.234 UTC [42] DETAIL:  why",
                "2026-11-30 05:00:01.234 UTC [42] STATEMENT:  SELECT 1",
            ]
        );
        // The rendered lines parse back into the same record as the text parser's.
        let lines = jsonlog_text(line).unwrap();
        let from_text = &pg(&lines.iter().map(String::as_str).collect::<Vec<_>>())[0];
        let from_json = &pg(&[line])[0];
        assert_eq!(from_text.message, from_json.message);
        assert_eq!(from_text.detail, from_json.detail);
        assert_eq!(from_text.statement, from_json.statement);
        assert_eq!(from_text.timestamp, from_json.timestamp);
        assert_eq!(
            jsonlog_text("2026-11-30 05:00:01.234 UTC [42] LOG:  x"),
            None
        );
    }
}
