//! Reading and writing datasets as CSV.
//!
//! The loader is the only way into a [`Dataset`], so every check that the rest of the system relies
//! on (rectangular, numeric, finite, labels valid for the task) happens here, and every failure names
//! the source, the 1-based line and the column.

use crate::dataset::{Dataset, Schema, TaskKind};
use crate::error::{DataError, Result};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

/// Loads a CSV file with a header row, reading the columns named by `schema`.
///
/// Errors name the file path; the dataset is named after the file stem (`export.csv` -> `export`).
/// Columns not mentioned by the schema (an ID column, say) are ignored, but every row must still
/// have as many cells as the header.
pub fn load_csv(path: &Path, schema: &Schema) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut ds = parse_bytes(&bytes, &path.display().to_string(), schema)?;
    if let Some(stem) = path.file_stem() {
        ds.name = stem.to_string_lossy().into_owned();
    }
    Ok(ds)
}

/// Parses CSV text (header row first) from any reader, reading the columns named by `schema`.
///
/// `source_name` is used in error messages and as the dataset name. Cells are trimmed; blank lines
/// are skipped. The whole input is read into memory first (line numbers are recovered from the raw
/// bytes). Never panics, whatever the input.
pub fn parse_csv<R: Read>(mut reader: R, source_name: &str, schema: &Schema) -> Result<Dataset> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source| DataError::Io {
            path: source_name.into(),
            source,
        })?;
    parse_bytes(&bytes, source_name, schema)
}

/// Upper bound on `Multiclass::classes`: per-class buffers and histograms are allocated up front,
/// so an absurd class count in a schema must be rejected rather than exhaust memory.
pub(crate) const MAX_CLASSES: usize = 1 << 16;

fn parse_bytes(bytes: &[u8], source_name: &str, schema: &Schema) -> Result<Dataset> {
    if let TaskKind::Multiclass { classes } = schema.task {
        if !(2..=MAX_CLASSES).contains(&classes) {
            return Err(DataError::InvalidArgument(format!(
                "a multiclass task needs between 2 and {MAX_CLASSES} classes, got {classes}"
            )));
        }
    }

    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut lines = Lines::new(bytes);
    let mut record = csv::StringRecord::new();
    if !rdr
        .read_record(&mut record)
        .map_err(|e| csv_error(e, source_name, &mut lines))?
    {
        return Err(DataError::Empty {
            source_name: source_name.to_string(),
        });
    }
    let header = read_header(&record, source_name)?;
    let (feature_cols, target_col) = resolve_columns(
        &header,
        schema.features.as_deref(),
        Some(&schema.target),
        source_name,
    )?;
    let target_col = target_col.expect("a target was asked for");

    let mut features = Vec::new();
    let mut targets = Vec::new();
    while rdr
        .read_record(&mut record)
        .map_err(|e| csv_error(e, source_name, &mut lines))?
    {
        // A line holding only whitespace trims to a single empty cell; treat it like a blank line.
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
        if record.len() != header.len() {
            return Err(DataError::RaggedRow {
                source_name: source_name.to_string(),
                line,
                expected: header.len(),
                found: record.len(),
            });
        }
        let cell = |col: usize| Cell {
            source_name,
            line,
            column: &header[col],
            value: &record[col],
        };
        for &col in &feature_cols {
            features.push(cell(col).number()?.1);
        }
        targets.push(cell(target_col).target(schema.task)?);
    }
    if targets.is_empty() {
        return Err(DataError::NoRows {
            source_name: source_name.to_string(),
        });
    }

    Ok(Dataset {
        name: source_name.to_string(),
        feature_names: feature_cols.iter().map(|&c| header[c].clone()).collect(),
        target_name: header[target_col].clone(),
        task: schema.task,
        features,
        targets,
        image: None,
    })
}

/// One row of an image folder's labels CSV.
pub(crate) struct LabelRow {
    /// 1-based line in the labels file.
    pub line: u64,
    /// The image's file name, as written.
    pub file: String,
    /// The label, checked against the task (`None` when the file has no target column and none
    /// was asked for).
    pub target: Option<f32>,
}

/// Reads a labels CSV: the `file_column` and (when `target` is given) the target column, with the
/// same checks and messages as [`load_csv`]'s.
pub(crate) fn parse_labels(
    bytes: &[u8],
    source_name: &str,
    file_column: &str,
    target: Option<(&str, TaskKind)>,
) -> Result<Vec<LabelRow>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut lines = Lines::new(bytes);
    let mut record = csv::StringRecord::new();
    if !rdr
        .read_record(&mut record)
        .map_err(|e| csv_error(e, source_name, &mut lines))?
    {
        return Err(DataError::Empty {
            source_name: source_name.to_string(),
        });
    }
    let header = read_header(&record, source_name)?;
    let find = |column: &str| {
        header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| DataError::MissingColumn {
                source_name: source_name.to_string(),
                column: column.to_string(),
                available: header.join(", "),
            })
    };
    let file_col = find(file_column)?;
    let target_col = target
        .map(|(t, task)| find(t).map(|c| (c, task)))
        .transpose()?;
    let mut rows = Vec::new();
    while rdr
        .read_record(&mut record)
        .map_err(|e| csv_error(e, source_name, &mut lines))?
    {
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
        if record.len() != header.len() {
            return Err(DataError::RaggedRow {
                source_name: source_name.to_string(),
                line,
                expected: header.len(),
                found: record.len(),
            });
        }
        let target = match target_col {
            Some((col, task)) => Some(
                Cell {
                    source_name,
                    line,
                    column: &header[col],
                    value: &record[col],
                }
                .target(task)?,
            ),
            None => None,
        };
        rows.push(LabelRow {
            line,
            file: record[file_col].to_string(),
            target,
        });
    }
    if rows.is_empty() {
        return Err(DataError::NoRows {
            source_name: source_name.to_string(),
        });
    }
    Ok(rows)
}

/// Converts a csv crate error (a broken quote, invalid UTF-8, ...) into ours, with the right line.
fn csv_error(e: csv::Error, source_name: &str, lines: &mut Lines) -> DataError {
    DataError::Csv {
        source_name: source_name.to_string(),
        line: e.position().map_or(0, |p| lines.line_at(p.byte())),
        message: match e.kind() {
            csv::ErrorKind::Utf8 { err, .. } => format!(
                "invalid UTF-8 in field {} (save the file as UTF-8 text)",
                err.field() + 1
            ),
            _ => e.to_string(),
        },
    }
}

/// Maps byte offsets to 1-based line numbers.
///
/// The csv crate's `Position::line` cannot be used: a record's position is where the reader
/// started looking for it, i.e. before any skipped blank lines, and with CRLF line endings it lags
/// one line behind. So lines are counted here from the raw bytes, scanning forward incrementally.
struct Lines<'a> {
    bytes: &'a [u8],
    /// Offset up to which line breaks have been counted.
    offset: usize,
    /// Line number at `offset`.
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Lines {
            bytes,
            offset: 0,
            line: 1,
        }
    }

    /// The line of the record whose read began at byte `start` (skipping line breaks there,
    /// which belong to the previous record or to blank lines).
    fn line_at(&mut self, start: u64) -> u64 {
        let bytes = self.bytes;
        let mut start = usize::try_from(start).map_or(bytes.len(), |s| s.min(bytes.len()));
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start < self.offset {
            // Positions only move forward while reading; restart rather than miscount if not.
            (self.offset, self.line) = (0, 1);
        }
        for i in self.offset..start {
            // "\r\n" counts once (at its '\n'); a lone '\r' also ends a line, as for the csv reader.
            if bytes[i] == b'\n' || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
                self.line += 1;
            }
        }
        self.offset = start;
        self.line
    }
}

/// Checks the header row: no empty names, no duplicates.
fn read_header(record: &csv::StringRecord, source_name: &str) -> Result<Vec<String>> {
    let mut header: Vec<String> = record.iter().map(str::to_string).collect();
    // Spreadsheet exports often start with a UTF-8 byte-order mark, which would otherwise become
    // part of the first column's name.
    if let Some(first) = header.first_mut() {
        if let Some(rest) = first.strip_prefix('\u{feff}') {
            *first = rest.trim().to_string();
        }
    }
    let mut seen = HashSet::new();
    for (i, name) in header.iter().enumerate() {
        if name.is_empty() {
            return Err(DataError::Csv {
                source_name: source_name.to_string(),
                line: 1,
                message: format!("header cell {} is empty; every column needs a name", i + 1),
            });
        }
        if !seen.insert(name.as_str()) {
            return Err(DataError::DuplicateColumn {
                source_name: source_name.to_string(),
                column: name.clone(),
            });
        }
    }
    Ok(header)
}

/// Maps the schema's column names to header positions: (feature columns, target column). Without a
/// target (rows a model is applied to), the features must be named.
fn resolve_columns(
    header: &[String],
    features: Option<&[String]>,
    target: Option<&str>,
    source_name: &str,
) -> Result<(Vec<usize>, Option<usize>)> {
    let index: HashMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    let find = |column: &str| {
        index
            .get(column)
            .copied()
            .ok_or_else(|| DataError::MissingColumn {
                source_name: source_name.to_string(),
                column: column.to_string(),
                available: header.join(", "),
            })
    };

    let target = target.map(find).transpose()?;
    let target_name = target.map(|t| header[t].as_str()).unwrap_or("");
    let features = match features {
        Some(names) => {
            let mut seen = HashSet::new();
            let mut cols = Vec::with_capacity(names.len());
            for name in names {
                if target.is_some() && name == target_name {
                    return Err(DataError::InvalidArgument(format!(
                        "{source_name}: column '{name}' is the target, so it cannot also be a feature"
                    )));
                }
                if !seen.insert(name) {
                    return Err(DataError::InvalidArgument(format!(
                        "{source_name}: the schema lists feature '{name}' more than once"
                    )));
                }
                cols.push(find(name)?);
            }
            cols
        }
        None => (0..header.len()).filter(|&c| Some(c) != target).collect(),
    };
    if features.is_empty() {
        return Err(DataError::InvalidArgument(format!(
            "{source_name}: no feature columns; the schema must name at least one besides the target '{target_name}'"
        )));
    }
    Ok((features, target))
}

/// Rows of feature values without a target: what a released model is applied to. Every value is
/// finite; every row has [`Rows::n_features`] values, in the order the model takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub(crate) name: String,
    pub(crate) feature_names: Vec<String>,
    /// For images: the shape of each row; `feature_names` are then its channels.
    pub(crate) image: Option<crate::ImageShape>,
    pub(crate) features: Vec<f32>,
}

impl Rows {
    /// Where the rows came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The feature columns, in order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Values per row.
    pub fn n_features(&self) -> usize {
        match self.image {
            Some(shape) => shape.len(),
            None => self.feature_names.len(),
        }
    }

    /// The shape of every image, for rows that are images.
    pub fn image(&self) -> Option<crate::ImageShape> {
        self.image
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.features.len() / self.n_features().max(1)
    }

    /// True when there are no rows (never, for loaded rows).
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Every value, row-major.
    pub fn features(&self) -> &[f32] {
        &self.features
    }
}

/// Loads the columns `features`, in this order, of the CSV file at `path`: other columns (a
/// target, identifiers) are ignored. Errors name the file, line and column as [`load_csv`]'s do.
pub fn load_rows(path: &Path, features: &[String]) -> Result<Rows> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let source_name = path.display().to_string();
    let source_name = source_name.as_str();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let mut lines = Lines::new(&bytes);
    let mut record = csv::StringRecord::new();
    if !rdr
        .read_record(&mut record)
        .map_err(|e| csv_error(e, source_name, &mut lines))?
    {
        return Err(DataError::Empty {
            source_name: source_name.to_string(),
        });
    }
    let header = read_header(&record, source_name)?;
    let (feature_cols, _) = resolve_columns(&header, Some(features), None, source_name)?;
    let mut values = Vec::new();
    while rdr
        .read_record(&mut record)
        .map_err(|e| csv_error(e, source_name, &mut lines))?
    {
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
        if record.len() != header.len() {
            return Err(DataError::RaggedRow {
                source_name: source_name.to_string(),
                line,
                expected: header.len(),
                found: record.len(),
            });
        }
        for &col in &feature_cols {
            let cell = Cell {
                source_name,
                line,
                column: &header[col],
                value: &record[col],
            };
            values.push(cell.number()?.1);
        }
    }
    if values.is_empty() {
        return Err(DataError::NoRows {
            source_name: source_name.to_string(),
        });
    }
    Ok(Rows {
        image: None,
        name: source_name.to_string(),
        feature_names: feature_cols.iter().map(|&c| header[c].clone()).collect(),
        features: values,
    })
}

/// One cell with enough context to build an error message about it.
struct Cell<'a> {
    source_name: &'a str,
    line: u64,
    column: &'a str,
    value: &'a str,
}

impl Cell<'_> {
    /// The cell as `f64` (for exact label checks) and as `f32` (parsed directly, not via `f64`, so a
    /// value written by [`Dataset::write_csv`] reads back bit-identical: no double rounding).
    fn number(&self) -> Result<(f64, f32)> {
        let (Ok(wide), Ok(narrow)) = (self.value.parse::<f64>(), self.value.parse::<f32>()) else {
            return Err(DataError::NotNumeric {
                source_name: self.source_name.to_string(),
                line: self.line,
                column: self.column.to_string(),
                value: self.value.to_string(),
            });
        };
        // `parse` accepts "NaN" and "inf", and turns 1e400 (or 1e39 for f32) into infinity.
        if !wide.is_finite() || !narrow.is_finite() {
            return Err(DataError::NotFinite {
                source_name: self.source_name.to_string(),
                line: self.line,
                column: self.column.to_string(),
                value: self.value.to_string(),
            });
        }
        Ok((wide, narrow))
    }

    /// The cell as a target for `task`; class labels are returned normalised (so "-0" and "1.0"
    /// become 0.0 and 1.0).
    fn target(&self, task: TaskKind) -> Result<f32> {
        let (wide, narrow) = self.number()?;
        let classes = match task {
            TaskKind::Regression => return Ok(narrow),
            TaskKind::Binary => 2,
            TaskKind::Multiclass { classes } => classes,
        };
        if wide.fract() == 0.0 && wide >= 0.0 && wide < classes as f64 {
            return Ok(wide as f32);
        }
        Err(DataError::BadLabel {
            source_name: self.source_name.to_string(),
            line: self.line,
            column: self.column.to_string(),
            value: self.value.to_string(),
            task: task.to_string(),
            expected: match task {
                TaskKind::Binary => "0 or 1".to_string(),
                _ => format!("an integer from 0 to {}", classes - 1),
            },
        })
    }
}

impl Dataset {
    /// Writes the dataset as CSV: header = feature names then the target name; one row per sample.
    ///
    /// Features (and regression targets) use the shortest text that parses back to the same `f32`,
    /// so [`load_csv`] with [`Dataset::schema`] returns a dataset equal to this one, bit for bit.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        if let Some(shape) = self.image {
            return Err(DataError::InvalidArgument(format!(
                "{}: a dataset of {shape} images is written as an image folder, not as CSV",
                self.name
            )));
        }
        std::fs::write(path, self.to_csv_string()).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The text [`Dataset::write_csv`] writes.
    pub fn to_csv_string(&self) -> String {
        let mut out = String::new();
        let names = self.feature_names.iter().chain([&self.target_name]);
        let header: Vec<String> = names.map(|n| quote(n)).collect();
        out.push_str(&header.join(","));
        out.push('\n');
        let is_class = self.task.classes().is_some();
        // `write!` into a String cannot fail, so its Result is ignored throughout.
        for (i, &target) in self.targets.iter().enumerate() {
            for &v in self.row(i) {
                let _ = write!(out, "{v},");
            }
            if is_class {
                let _ = writeln!(out, "{}", target as u64);
            } else {
                let _ = writeln!(out, "{target}");
            }
        }
        out
    }
}

/// Quotes a header name if the CSV reader would otherwise split it differently.
pub(crate) fn quote(name: &str) -> String {
    if name.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn binary_schema() -> Schema {
        Schema {
            features: Some(vec!["age".into(), "bmi".into()]),
            target: "sick".into(),
            task: TaskKind::Binary,
            image: None,
        }
    }

    fn parse(text: &str, schema: &Schema) -> Result<Dataset> {
        parse_csv(text.as_bytes(), "export.csv", schema)
    }

    /// Writes `bytes` to a real temp file and loads it, so messages carry a real path.
    fn load_bytes(bytes: &[u8], schema: &Schema) -> (tempfile::TempDir, String, Result<Dataset>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ward7.csv");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(bytes))
            .expect("write temp file");
        let result = load_csv(&path, schema);
        (dir, path.display().to_string(), result)
    }

    /// Asserts the message names the source, the line and (if given) the column.
    fn assert_message(err: &DataError, source: &str, line: u64, column: Option<&str>) {
        let msg = err.to_string();
        assert!(msg.contains(source), "{msg:?} lacks source {source:?}");
        assert!(
            msg.contains(&format!("line {line}")),
            "{msg:?} lacks line {line}"
        );
        if let Some(column) = column {
            assert!(
                msg.contains(&format!("'{column}'")),
                "{msg:?} lacks column {column:?}"
            );
        }
    }

    #[test]
    fn parses_valid_file_with_extra_columns_whitespace_and_blank_lines() {
        let text = "id, age ,bmi,sick\n7, 40 ,22.5,1\n\n8,51,30,0.0\n   \n";
        let ds = parse(text, &binary_schema()).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.feature_names(), ["age", "bmi"]);
        assert_eq!(ds.features(), [40.0, 22.5, 51.0, 30.0]);
        assert_eq!(ds.targets(), [1.0, 0.0]);
        assert_eq!(ds.name(), "export.csv");
    }

    #[test]
    fn features_default_to_all_but_target_in_file_order() {
        let schema = Schema {
            features: None,
            target: "y".into(),
            task: TaskKind::Regression,
            image: None,
        };
        let ds = parse("b,y,a\n1,2.5,3\n", &schema).unwrap();
        assert_eq!(ds.feature_names(), ["b", "a"]);
        assert_eq!(ds.features(), [1.0, 3.0]);
        assert_eq!(ds.targets(), [2.5]);
    }

    #[test]
    fn strips_byte_order_mark_and_accepts_crlf() {
        let ds = parse("\u{feff}age,bmi,sick\r\n1,2,1\r\n", &binary_schema()).unwrap();
        assert_eq!(ds.feature_names(), ["age", "bmi"]);
        assert_eq!(ds.len(), 1);
    }

    #[test]
    fn line_numbers_survive_crlf_blank_lines_and_quoted_newlines() {
        // The csv crate's own positions get every one of these wrong; see `Lines`.
        let cases: [(&str, u64); 5] = [
            ("age,bmi,sick\r\n1,2,0\r\n3,x,1\r\n", 3),
            ("age,bmi,sick\n1,2,0\n\n\n3,x,1\n", 5),
            ("age,bmi,sick\r\n\r\n1,2,0\r\n\r\n3,x,1\r\n", 5),
            ("age,bmi,sick\n1,2,\"0\n\"\n3,x,1\n", 4),
            ("age,bmi,sick\r1,2,0\r   \r3,x,1\r", 4),
        ];
        for (text, line) in cases {
            let err = parse(text, &binary_schema()).unwrap_err();
            assert!(
                matches!(&err, DataError::NotNumeric { line: l, column, .. } if *l == line && column == "bmi"),
                "{text:?}: {err:?}"
            );
        }
    }

    #[test]
    fn missing_column_lists_available_columns() {
        let (_dir, path, result) = load_bytes(b"age,weight,sick\n1,2,0\n", &binary_schema());
        let err = result.unwrap_err();
        assert!(
            matches!(&err, DataError::MissingColumn { column, available, .. }
                if column == "bmi" && available == "age, weight, sick"),
            "{err:?}"
        );
        assert_message(&err, &path, 1, Some("bmi"));
        assert!(err.to_string().contains("age, weight, sick"));
    }

    #[test]
    fn missing_target_column() {
        let err = parse("age,bmi,outcome\n1,2,0\n", &binary_schema()).unwrap_err();
        assert!(matches!(&err, DataError::MissingColumn { column, .. } if column == "sick"));
        assert_message(&err, "export.csv", 1, Some("sick"));
    }

    #[test]
    fn non_numeric_cell() {
        let (_dir, path, result) =
            load_bytes(b"age,bmi,sick\n1,2,0\n3,4,1\n5,abc,0\n", &binary_schema());
        let err = result.unwrap_err();
        assert!(
            matches!(&err, DataError::NotNumeric { line: 4, column, value, .. }
                if column == "bmi" && value == "abc"),
            "{err:?}"
        );
        assert_message(&err, &path, 4, Some("bmi"));
        assert!(err.to_string().contains("'abc'"));
    }

    #[test]
    fn empty_cell_is_not_numeric() {
        let err = parse("age,bmi,sick\n1,2,0\n,4,1\n", &binary_schema()).unwrap_err();
        assert!(
            matches!(&err, DataError::NotNumeric { line: 3, column, value, .. }
                if column == "age" && value.is_empty()),
            "{err:?}"
        );
        assert_message(&err, "export.csv", 3, Some("age"));
    }

    #[test]
    fn ragged_row_with_too_few_cells() {
        let (_dir, path, result) = load_bytes(b"age,bmi,sick\n1,2,0\n3,4\n", &binary_schema());
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                DataError::RaggedRow {
                    line: 3,
                    expected: 3,
                    found: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_message(&err, &path, 3, None);
        assert!(err.to_string().contains("expected 3 cells"));
    }

    #[test]
    fn ragged_row_with_too_many_cells() {
        let err = parse("age,bmi,sick\n1,2,0\n\n3,4,1,9\n", &binary_schema()).unwrap_err();
        // The blank line 3 is skipped but still counted.
        assert!(
            matches!(
                err,
                DataError::RaggedRow {
                    line: 4,
                    expected: 3,
                    found: 4,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_message(&err, "export.csv", 4, None);
    }

    #[test]
    fn empty_file() {
        let (_dir, path, result) = load_bytes(b"", &binary_schema());
        let err = result.unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
        assert!(err.to_string().contains(&path));
        // Blank lines only count as empty too.
        let err = parse("\n\n", &binary_schema()).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
    }

    #[test]
    fn header_only_file() {
        let (_dir, path, result) = load_bytes(b"age,bmi,sick\n\n", &binary_schema());
        let err = result.unwrap_err();
        assert!(matches!(err, DataError::NoRows { .. }), "{err:?}");
        assert!(err.to_string().contains(&path));
        assert!(err.to_string().contains("no data rows"));
    }

    #[test]
    fn nan_cell_is_not_finite() {
        let (_dir, path, result) = load_bytes(b"age,bmi,sick\n1,NaN,0\n", &binary_schema());
        let err = result.unwrap_err();
        assert!(
            matches!(&err, DataError::NotFinite { line: 2, column, value, .. }
                if column == "bmi" && value == "NaN"),
            "{err:?}"
        );
        assert_message(&err, &path, 2, Some("bmi"));
    }

    #[test]
    fn infinite_cells_are_not_finite() {
        // Written infinities, an f64 overflow and a value that only overflows f32.
        for (value, line) in [("inf", 2), ("-Infinity", 3), ("1e400", 4), ("1e39", 5)] {
            let mut text = "age,bmi,sick\n".to_string();
            for _ in 2..line {
                text.push_str("1,2,0\n");
            }
            text.push_str(&format!("{value},2,0\n"));
            let err = parse(&text, &binary_schema()).unwrap_err();
            assert!(
                matches!(&err, DataError::NotFinite { line: l, column, value: v, .. }
                    if *l == line && column == "age" && v == value),
                "{value}: {err:?}"
            );
            assert_message(&err, "export.csv", line, Some("age"));
        }
    }

    #[test]
    fn bad_binary_label() {
        let (_dir, path, result) = load_bytes(b"age,bmi,sick\n1,2,0\n1,2,2\n", &binary_schema());
        let err = result.unwrap_err();
        assert!(
            matches!(&err, DataError::BadLabel { line: 3, column, value, .. }
                if column == "sick" && value == "2"),
            "{err:?}"
        );
        assert_message(&err, &path, 3, Some("sick"));
        assert!(err.to_string().contains("0 or 1"));
        let err = parse("age,bmi,sick\n1,2,0.5\n", &binary_schema()).unwrap_err();
        assert!(
            matches!(err, DataError::BadLabel { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn bad_multiclass_labels() {
        let schema = Schema {
            features: None,
            target: "label".into(),
            task: TaskKind::Multiclass { classes: 10 },
            image: None,
        };
        let ok = parse("px0,label\n1,0\n2,9\n3,4.0\n", &schema).unwrap();
        assert_eq!(ok.targets(), [0.0, 9.0, 4.0]);
        for (value, line) in [("1.5", 3), ("10", 3), ("-1", 3)] {
            let text = format!("px0,label\n1,3\n2,{value}\n");
            let err = parse(&text, &schema).unwrap_err();
            assert!(
                matches!(&err, DataError::BadLabel { line: l, column, value: v, .. }
                    if *l == line && column == "label" && v == value),
                "{value}: {err:?}"
            );
            assert_message(&err, "export.csv", line, Some("label"));
            assert!(err.to_string().contains("0 to 9"), "{err}");
        }
    }

    #[test]
    fn multiclass_class_count_must_be_sane() {
        for classes in [0, 1, usize::MAX] {
            let schema = Schema {
                features: None,
                target: "label".into(),
                task: TaskKind::Multiclass { classes },
                image: None,
            };
            let err = parse("a,label\n1,0\n", &schema).unwrap_err();
            assert!(matches!(err, DataError::InvalidArgument(_)), "{err:?}");
        }
    }

    #[test]
    fn duplicate_header() {
        let (_dir, path, result) = load_bytes(b"age,bmi,age,sick\n1,2,3,0\n", &binary_schema());
        let err = result.unwrap_err();
        assert!(
            matches!(&err, DataError::DuplicateColumn { column, .. } if column == "age"),
            "{err:?}"
        );
        assert_message(&err, &path, 1, Some("age"));
    }

    #[test]
    fn invalid_utf8() {
        let (_dir, path, result) =
            load_bytes(b"age,bmi,sick\n1,2,0\n1,\xff\xfe,0\n", &binary_schema());
        let err = result.unwrap_err();
        assert!(matches!(err, DataError::Csv { line: 3, .. }), "{err:?}");
        assert_message(&err, &path, 3, None);
        assert!(err.to_string().contains("UTF-8"), "{err}");
        // Windows line endings and blank lines before the bad line.
        let bytes = b"age,bmi,sick\r\n1,2,0\r\n\r\n\r\n1,\xff,0\r\n";
        let err = parse_csv(&bytes[..], "export.csv", &binary_schema()).unwrap_err();
        assert!(matches!(err, DataError::Csv { line: 5, .. }), "{err:?}");
    }

    #[test]
    fn io_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.csv");
        let err = load_csv(&path, &binary_schema()).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.csv"));
    }

    #[test]
    fn schema_naming_target_as_feature_is_rejected() {
        let schema = Schema {
            features: Some(vec!["age".into(), "sick".into()]),
            target: "sick".into(),
            task: TaskKind::Binary,
            image: None,
        };
        let err = parse("age,sick\n1,0\n", &schema).unwrap_err();
        assert!(matches!(err, DataError::InvalidArgument(_)), "{err:?}");
    }

    #[test]
    fn write_then_load_is_bit_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("round.csv");
        // Awkward values: tiny, huge, negative zero, many digits, a name needing quotes.
        let ds = Dataset {
            name: "round".into(),
            feature_names: vec!["a".into(), "b, with comma".into(), "c \"q\"".into()],
            target_name: "y".into(),
            task: TaskKind::Regression,
            features: vec![
                0.1,
                1e-30,
                f32::MAX,
                -0.0,
                f32::MIN_POSITIVE,
                1.0 / 3.0,
                f32::from_bits(1),
                -123456.79,
                7.0,
            ],
            targets: vec![2.5, -1e20, std::f32::consts::PI],
            image: None,
        };
        ds.write_csv(&path).unwrap();
        let back = load_csv(&path, &ds.schema()).unwrap();
        assert_eq!(back.name(), "round");
        assert_eq!(back.feature_names(), ds.feature_names());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(back.features()), bits(ds.features()));
        assert_eq!(bits(back.targets()), bits(ds.targets()));
        assert_eq!(back, ds);
    }

    #[test]
    fn classification_targets_are_written_as_integers() {
        let ds = parse("age,bmi,sick\n1,2,1.0\n3,4,0\n", &binary_schema()).unwrap();
        assert_eq!(ds.to_csv_string(), "age,bmi,sick\n1,2,1\n3,4,0\n");
    }

    #[test]
    fn rows_take_the_named_features_in_order_and_ignore_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new-patients.csv");
        std::fs::write(
            &path,
            "id,bmi,sick,age
A,22.5,1,40
B,31,0,55
",
        )
        .unwrap();
        let rows = load_rows(&path, &["age".into(), "bmi".into()]).unwrap();
        assert_eq!(rows.feature_names(), ["age", "bmi"]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.features(), [40.0, 22.5, 55.0, 31.0]);
        // The same rows without the target column load alike.
        std::fs::write(
            &path,
            "bmi,age
22.5,40
31,55
",
        )
        .unwrap();
        assert_eq!(
            load_rows(&path, &["age".into(), "bmi".into()])
                .unwrap()
                .features(),
            rows.features()
        );
    }

    #[test]
    fn rows_errors_name_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new-patients.csv");
        let names = ["age".to_string(), "bmi".to_string()];
        std::fs::write(
            &path,
            "age,weight
40,80
",
        )
        .unwrap();
        let err = load_rows(&path, &names).unwrap_err();
        assert!(err.to_string().contains("bmi"), "{err}");
        std::fs::write(
            &path,
            "age,bmi
40,22
41,n/a
",
        )
        .unwrap();
        let err = load_rows(&path, &names).unwrap_err();
        assert_message(&err, &path.display().to_string(), 3, Some("bmi"));
        std::fs::write(
            &path, "age,bmi
",
        )
        .unwrap();
        assert!(load_rows(&path, &names).is_err(), "no rows");
    }
}
