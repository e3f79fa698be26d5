//! A small reader of the Prometheus text exposition format (what `GET /metrics` returns).

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

/// Parses one sample line; `None` for comments, blank and malformed lines.
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut end = None;
        loop {
            // label name
            let mut key = String::new();
            let mut open = false;
            for (i, c) in chars.by_ref() {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    '=' => {
                        open = true;
                        break;
                    }
                    ',' | ' ' => {}
                    c => key.push(c),
                }
            }
            if end.is_some() || !open {
                break;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                match (escaped, c) {
                    (true, 'n') => {
                        value.push('\n');
                        escaped = false;
                    }
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (false, c) => value.push(c),
                }
            }
            labels.push((key, value));
        }
        rest = &inner[end? + 1..];
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Every sample of the exposition.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

/// The samples called exactly `name`.
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    parse(text).into_iter().filter(|s| s.name == name).collect()
}

/// The sum of every sample called `name` over all label sets; `None` when there is none.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    let samples = samples(text, name);
    (!samples.is_empty()).then(|| samples.iter().map(|s| s.value).sum())
}

/// How much [`sum`] of `name` grew from the snapshot `before` to `after` (an absent
/// metric counts as 0).
pub fn increase(before: &str, after: &str, name: &str) -> f64 {
    sum(after, name).unwrap_or(0.0) - sum(before, name).unwrap_or(0.0)
}

/// A histogram's observations: (count of observations ≤ `le`, total count), each summed
/// over the histogram's other labels. `None` when the histogram or that bucket is absent.
pub fn histogram_at_most(text: &str, name: &str, le: f64) -> Option<(f64, f64)> {
    let buckets: Vec<Sample> = samples(text, &format!("{name}_bucket"))
        .into_iter()
        .filter(|s| s.label("le").and_then(parse_value) == Some(le))
        .collect();
    if buckets.is_empty() {
        return None;
    }
    let at_most = buckets.iter().map(|s| s.value).sum();
    let count = sum(text, &format!("{name}_count"))?;
    Some((at_most, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP steno_requests_total Requests.
# TYPE steno_requests_total counter
steno_requests_total{route="/v1/audio/transcriptions",status="200"} 3
steno_requests_total{route="/health",status="200"} 2
steno_worker_healthy 1
steno_batch_rows_bucket{le="1"} 4
steno_batch_rows_bucket{le="2.0"} 6
steno_batch_rows_bucket{le="+Inf"} 7
steno_batch_rows_sum 12
steno_batch_rows_count 7
odd{msg="a \"quoted\", value",x="y"} 1.5e3 1700000000
"#;

    #[test]
    fn reads_samples_and_labels() {
        assert_eq!(sum(TEXT, "steno_requests_total"), Some(5.0));
        assert_eq!(sum(TEXT, "steno_worker_healthy"), Some(1.0));
        assert_eq!(sum(TEXT, "absent"), None);
        let odd = &samples(TEXT, "odd")[0];
        assert_eq!(odd.label("msg"), Some("a \"quoted\", value"));
        assert_eq!(odd.label("x"), Some("y"));
        assert_eq!(odd.value, 1500.0);
    }

    #[test]
    fn reads_histogram_buckets() {
        assert_eq!(
            histogram_at_most(TEXT, "steno_batch_rows", 1.0),
            Some((4.0, 7.0))
        );
        assert_eq!(
            histogram_at_most(TEXT, "steno_batch_rows", 2.0),
            Some((6.0, 7.0))
        );
        assert_eq!(histogram_at_most(TEXT, "steno_batch_rows", 3.0), None);
    }
}
