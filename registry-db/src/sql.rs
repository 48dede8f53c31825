//! Pieces of multi-row SQL: numbered parameter lists, row tuples and
//! `CASE` maps, so a batch is a few statements instead of one per row.

/// Rows per multi-row statement (keeps far below the engines' parameter
/// limits).
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;

/// `$first, $first+1, ...`: `count` numbered parameters.
pub(crate) fn params(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($first, ...), (...)`: `rows` tuples of `per_row` parameters, each
/// followed by the `extra` SQL expressions.
pub(crate) fn rows(rows: usize, per_row: usize, first: usize, extra: &[&str]) -> String {
    (0..rows)
        .map(|r| {
            let mut values = params(first + r * per_row, per_row);
            for e in extra {
                values.push_str(", ");
                values.push_str(e);
            }
            format!("({values})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// For `count` (key, value) parameter pairs from `$first` on: `CASE column
/// WHEN $key THEN $value ... END`, and the keys' list for `column IN (...)`.
pub(crate) fn case_map(column: &str, first: usize, count: usize) -> (String, String) {
    let keys: Vec<usize> = (0..count).map(|i| first + 2 * i).collect();
    let cases: String = keys
        .iter()
        .map(|k| format!(" WHEN ${k} THEN ${}", k + 1))
        .collect();
    let list = keys
        .iter()
        .map(|k| format!("${k}"))
        .collect::<Vec<_>>()
        .join(", ");
    (format!("CASE {column}{cases} END"), list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_lists_tuples_and_case_maps() {
        assert_eq!(params(3, 2), "$3, $4");
        assert_eq!(params(1, 0), "");
        assert_eq!(rows(2, 2, 2, &["$1"]), "($2, $3, $1), ($4, $5, $1)");
        assert_eq!(
            case_map("id", 2, 2),
            (
                "CASE id WHEN $2 THEN $3 WHEN $4 THEN $5 END".to_owned(),
                "$2, $4".to_owned()
            )
        );
    }
}
