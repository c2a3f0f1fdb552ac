//! Building multi-row SQL statements with numbered parameters (`$1, $2, …`, which both
//! databases accept through sqlx's Any driver). A leaf.

/// Rows in one multi-row statement: at most 7 parameters a row keeps a statement under 1,000
/// parameters, far below either database's limit.
pub const ROWS_PER_STATEMENT: usize = 128;

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` parameters, each row ending in `tail`.
pub fn placeholders(rows: usize, cols: usize, tail: &str) -> String {
    let mut s = String::with_capacity(rows * (cols * 5 + tail.len() + 4));
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        s.push_str(&numbered(r * cols + 1, cols));
        s.push_str(tail);
        s.push(')');
    }
    s
}

/// `$first, …` for `n` parameters.
pub fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
