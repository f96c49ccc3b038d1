use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can be wrong with a dataset or a request on it.
///
/// Input errors name the source (a file path, or `builtin:NAME`), the 1-based line of the file
/// (the header is line 1) and the column by name, so the message can be acted on without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file has no header row at all.
    #[error("{source_name}: the file is empty; expected a header row naming the columns, then one row per sample")]
    Empty {
        /// File path or built-in name.
        source_name: String,
    },
    /// The header is there, but no data rows follow it.
    #[error("{source_name}: the file has a header but no data rows")]
    NoRows {
        /// File path or built-in name.
        source_name: String,
    },
    /// A column named by the schema is not in the header.
    #[error("{source_name}: line 1: no column named '{column}' (the header has: {available})")]
    MissingColumn {
        /// File path or built-in name.
        source_name: String,
        /// The column the schema asked for.
        column: String,
        /// The header's column names, comma-separated.
        available: String,
    },
    /// Two header cells have the same name, so a column reference would be ambiguous.
    #[error("{source_name}: line 1: column '{column}' appears more than once in the header")]
    DuplicateColumn {
        /// File path or built-in name.
        source_name: String,
        /// The repeated name.
        column: String,
    },
    /// A row has a different number of cells than the header.
    #[error(
        "{source_name}: line {line}: expected {expected} cells (as in the header), found {found}"
    )]
    RaggedRow {
        /// File path or built-in name.
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// Cells in the header.
        expected: usize,
        /// Cells in this row.
        found: usize,
    },
    /// A cell is not a number.
    #[error("{source_name}: line {line}, column '{column}': '{value}' is not a number")]
    NotNumeric {
        /// File path or built-in name.
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: String,
        /// The cell as written.
        value: String,
    },
    /// A cell is NaN or infinite (or overflows f32). Missing values must be imputed or the row
    /// dropped before training; fedchain does not guess.
    #[error("{source_name}: line {line}, column '{column}': '{value}' is not a finite number (missing values must be imputed or the row removed before loading)")]
    NotFinite {
        /// File path or built-in name.
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: String,
        /// The cell as written.
        value: String,
    },
    /// A target is not a valid label for the task (binary: 0 or 1; multiclass: 0..classes).
    #[error("{source_name}: line {line}, column '{column}': '{value}' is not a valid label for {task} (expected {expected})")]
    BadLabel {
        /// File path or built-in name.
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// Target column name.
        column: String,
        /// The cell as written.
        value: String,
        /// The task, as text.
        task: String,
        /// What was expected, as text.
        expected: String,
    },
    /// The CSV itself could not be parsed (for example invalid UTF-8 or a broken quote).
    #[error("{source_name}: line {line}: {message}")]
    Csv {
        /// File path or built-in name.
        source_name: String,
        /// 1-based line number (0 if unknown).
        line: u64,
        /// What the CSV parser reported.
        message: String,
    },
    /// A parameter of a request is out of range (a split fraction, a number of hospitals, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The rows cannot be divided as asked (for example more hospitals than rows, or a skew so
    /// strong that some hospital would get too few rows).
    #[error("cannot partition {dataset}: {reason}")]
    Partition {
        /// Dataset name.
        dataset: String,
        /// Why, and what to change.
        reason: String,
    },
    /// An image file that cannot be used as the job declares: not an image, a shape or channel
    /// count other than declared, pixel data without a decoder, ...
    #[error("{path}: {problem}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and what is read.
        problem: String,
    },
    /// An unknown built-in dataset name.
    #[error("unknown dataset '{0}'; built-in datasets are: breast-cancer, diabetes, digits (or give a CSV file with a schema)")]
    UnknownBuiltin(String),
}
