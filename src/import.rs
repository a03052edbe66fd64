//! `alliance client import`: transfers from a file, posted in batches.
//!
//! The file is JSON lines (one transfer object per line, as `POST
//! /v1/transfers` takes it) or CSV with a header naming the columns (`id`,
//! `debit_account`, `credit_account`, `amount`, and optionally `memo`,
//! `asset`). Every line is read and checked for shape before anything is
//! sent, so a malformed file changes nothing. Batches are not atomic: each
//! transfer stands alone, refused ones are counted by code, and a batch
//! that got no answer is sent again as it was (ids make it idempotent).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::client::ApiClient;

/// Columns a CSV file may have; the first four are required.
const CSV_COLUMNS: [&str; 6] = [
    "id",
    "debit_account",
    "credit_account",
    "amount",
    "memo",
    "asset",
];
/// Times a batch is sent when it gets no answer (or a 503/504).
const ATTEMPTS: usize = 5;
/// Refused transfers listed one by one in the summary.
const REFUSED_SHOWN: usize = 20;

/// One transfer to send, with the line it came from.
pub struct Item {
    pub line: usize,
    pub transfer: Value,
}

/// Reads `path` as JSON lines or, if it ends in `.csv`, as CSV; why not,
/// naming the line.
pub fn read(path: &Path) -> Result<Vec<Item>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let at = |line: usize, e: String| format!("{}:{line}: {e}", path.display());
    let mut items = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let header = if csv {
        let (n, h) = lines.next().ok_or_else(|| at(1, "no header line".into()))?;
        Some(csv_header(h).map_err(|e| at(n, e))?)
    } else {
        None
    };
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let transfer = match &header {
            Some(columns) => csv_row(columns, line),
            None => json_line(line),
        }
        .map_err(|e| at(n, e))?;
        items.push(Item { line: n, transfer });
    }
    if items.is_empty() {
        return Err(format!("{}: no transfers", path.display()));
    }
    Ok(items)
}

fn json_line(line: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    for key in ["id", "debit_account", "credit_account", "amount"] {
        if !obj.contains_key(key) {
            return Err(format!("the transfer has no {key:?}"));
        }
    }
    Ok(v)
}

fn csv_header(line: &str) -> Result<Vec<String>, String> {
    let columns = csv_fields(line)?;
    for c in &columns {
        if !CSV_COLUMNS.contains(&c.as_str()) {
            return Err(format!(
                "unknown column {c:?}: the columns are {}",
                CSV_COLUMNS.join(", ")
            ));
        }
    }
    for required in &CSV_COLUMNS[..4] {
        if !columns.iter().any(|c| c == required) {
            return Err(format!("the header has no {required:?} column"));
        }
    }
    Ok(columns)
}

fn csv_row(columns: &[String], line: &str) -> Result<Value, String> {
    let fields = csv_fields(line)?;
    if fields.len() != columns.len() {
        return Err(format!(
            "{} fields, the header has {} columns",
            fields.len(),
            columns.len()
        ));
    }
    let mut obj = Map::new();
    for (column, field) in columns.iter().zip(fields) {
        if !field.is_empty() {
            obj.insert(column.clone(), Value::String(field));
        }
    }
    Ok(Value::Object(obj))
}

/// The fields of one CSV line: separated by commas, a field in double
/// quotes may hold commas and doubled quotes.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed".into()),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err("text after a quoted field".into());
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != ',') {
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub transfers: usize,
    /// Answered ok: applied now, or by an earlier send of the same id.
    pub applied: usize,
    pub refused: usize,
    pub refused_by_code: BTreeMap<String, usize>,
    /// The first refused transfers, with their line.
    pub refused_first: Vec<Value>,
}

/// Posts `items` in batches of `batch`, printing progress to standard error
/// at most once a second; `Err` when a batch got no answer after
/// [`ATTEMPTS`] sends (what was applied before stays applied).
pub async fn post(api: &ApiClient, items: &[Item], batch: usize) -> Result<Summary, String> {
    let mut summary = Summary {
        transfers: items.len(),
        ..Summary::default()
    };
    let started = Instant::now();
    let mut shown = started;
    for chunk in items.chunks(batch.max(1)) {
        let transfers: Vec<&Value> = chunk.iter().map(|i| &i.transfer).collect();
        let answer = send(api, &transfers).await?;
        let refused = answer["refused"].as_array().cloned().unwrap_or_default();
        summary.applied += answer["applied"].as_u64().unwrap_or(0) as usize;
        summary.refused += refused.len();
        for r in refused {
            let code = r["error"]["code"].as_str().unwrap_or("unknown").to_owned();
            *summary.refused_by_code.entry(code).or_default() += 1;
            if summary.refused_first.len() < REFUSED_SHOWN {
                let index = r["index"].as_u64().unwrap_or(0) as usize;
                let line = chunk.get(index).map_or(0, |i| i.line);
                summary.refused_first.push(serde_json::json!({
                    "line": line, "id": r["id"], "error": r["error"],
                }));
            }
        }
        if shown.elapsed() >= Duration::from_secs(1) {
            shown = Instant::now();
            let done = summary.applied + summary.refused;
            let rate = done as f64 / started.elapsed().as_secs_f64();
            eprintln!(
                "imported {done} of {} ({} refused), {rate:.0}/s",
                summary.transfers, summary.refused
            );
        }
    }
    Ok(summary)
}

/// One batch, sent again while it gets no answer or a 503/504.
async fn send(api: &ApiClient, transfers: &[&Value]) -> Result<Value, String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match api.batch_refused_only(transfers, false).await {
            Ok(r) if r.is_success() => return Ok(r.body),
            Ok(r) if matches!(r.status, 503 | 504) => last = format!("{} {}", r.status, r.body),
            Ok(r) => return Err(format!("the node refused a batch: {} {}", r.status, r.body)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "a batch got no answer after {ATTEMPTS} sends: {last}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_take_quotes_and_commas() {
        assert_eq!(csv_fields("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            csv_fields(r#"x,"in ""q"", and, commas",y"#).unwrap(),
            ["x", r#"in "q", and, commas"#, "y"]
        );
        assert!(csv_fields(r#""open"#).is_err());
        assert!(csv_fields(r#""a"b,c"#).is_err());
    }

    #[test]
    fn a_bad_line_names_itself_and_nothing_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        std::fs::write(
            &csv,
            "id,debit_account,credit_account,amount\norg1.a,org1.x,org2.y,5\norg1.b,org1.x\n",
        )
        .unwrap();
        let e = read(&csv).err().unwrap();
        assert!(
            e.ends_with("t.csv:3: 2 fields, the header has 4 columns"),
            "{e}"
        );
        std::fs::write(&csv, "id,debit,credit_account,amount\n").unwrap();
        assert!(read(&csv)
            .err()
            .unwrap()
            .contains("unknown column \"debit\""));
        let jsonl = dir.path().join("t.jsonl");
        std::fs::write(&jsonl, "{\"id\":\"org1.a\",\"debit_account\":\"a\",\"credit_account\":\"b\",\"amount\":\"1\"}\n[1]\n").unwrap();
        assert!(read(&jsonl)
            .err()
            .unwrap()
            .ends_with("t.jsonl:2: not a JSON object"));
        std::fs::write(
            &csv,
            "id,debit_account,credit_account,amount,memo\norg1.a,org1.x,org2.y,5,\"rent, May\"\n",
        )
        .unwrap();
        let items = read(&csv).unwrap();
        assert_eq!(items[0].transfer["memo"], "rent, May");
        assert_eq!(items[0].line, 2);
    }
}
