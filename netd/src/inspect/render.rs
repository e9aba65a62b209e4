//! Human output of `netd inspect`: aligned tables and drift lines. JSON output is the views'
//! serde form (see each view's struct); this is only for people.

use super::Drift;
use std::fmt::Write;

/// An aligned table with a header row; nothing (but `empty`) when there are no rows.
pub fn table(out: &mut String, title: &str, headers: &[&str], rows: &[Vec<String>], empty: &str) {
    let _ = writeln!(out, "{title}:");
    if rows.is_empty() {
        let _ = writeln!(out, "  {empty}");
        return;
    }
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut s = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<width$}  ", width = w[i]);
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(out, headers.to_vec());
    for r in rows {
        line(out, r.iter().map(String::as_str).collect());
    }
}

pub fn drift(out: &mut String, drift: &[Drift]) {
    if drift.is_empty() {
        let _ = writeln!(out, "drift: none");
        return;
    }
    let _ = writeln!(out, "drift ({}):", drift.len());
    for d in drift {
        let _ = writeln!(out, "  {d}");
    }
}

pub fn problems(out: &mut String, problems: &[String]) {
    for p in problems {
        let _ = writeln!(out, "PROBLEM: {p}");
    }
}

pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_else(|| "-".into())
}
