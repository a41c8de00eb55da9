//! Statistics and number formats shared by every section: each figure in BENCHMARKS.md is a
//! median over repetitions with its min–max (these machines are shared and their timing drifts,
//! so a single run says little), and each kind of number is written the same way everywhere.

/// Median, min and max.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// `median (min–max)` with a formatter for each number.
pub fn fmt_summary(values: &[f64], f: impl Fn(f64) -> String) -> String {
    match summarize(values) {
        Some(s) if s.n > 1 => format!("{} ({}–{})", f(s.median), f(s.min), f(s.max)),
        Some(s) => f(s.median),
        None => "–".into(),
    }
}

pub fn ns(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.1} µs", v / 1000.0)
    } else if v.abs() >= 1000.0 {
        format!("{:.2} µs", v / 1000.0)
    } else if v.abs() >= 10.0 {
        format!("{v:.0} ns")
    } else {
        format!("{v:.1} ns")
    }
}

pub fn ratio(v: f64) -> String {
    format!("{v:.2}")
}

pub fn pct(v: f64) -> String {
    format!("{v:.1} %")
}

pub fn secs(v: f64) -> String {
    if v >= 120.0 {
        format!("{:.0} min", v / 60.0)
    } else if v >= 10.0 {
        format!("{v:.1} s")
    } else if v >= 1.0 {
        format!("{v:.2} s")
    } else {
        format!("{:.0} ms", v * 1000.0)
    }
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let s = summarize(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(summarize(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(summarize(&[]).is_none());
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
