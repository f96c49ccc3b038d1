//! Hospitals' images: a folder of PNG, JPEG or DICOM files plus a labels CSV, read into a
//! [`Dataset`] whose rows are whole images.
//!
//! A hospital exports its images as files and lists them in `labels.csv` (`file,<target>`). Every
//! file is decoded by what it is, not by its name: DICOM (the `DICM` marker at byte 128, read with
//! dicom-rs: rescale slope and intercept applied, MONOCHROME1 turned the right way up, RGB in
//! either planar configuration) or PNG/JPEG (the `image` crate). Every image must have exactly the
//! declared shape and channel count; nothing is resized or converted behind the hospital's back.
//! The first bad file stops the load with its name and the problem, so a dataset is whole or not
//! loaded at all.
//!
//! [`write_png`] and [`write_dicom`] write the same pixels back (the test data, and
//! `fedchain data split --format png|dicom`); what they write reads back equal.

use crate::dataset::{Dataset, ImageShape, Schema, TaskKind};
use crate::error::{DataError, Result};
use crate::loader::{parse_labels, LabelRow, Rows};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{PhotometricInterpretation, PixelDecoder, PixelRepresentation};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};

/// The labels file an image folder holds: a header naming `file` and the target column, then one
/// row per image.
pub const LABELS_FILE: &str = "labels.csv";
/// The column of [`LABELS_FILE`] that names each image file (relative to the folder).
pub const FILE_COLUMN: &str = "file";
/// Largest image file read: a file beyond this is refused, not read into memory.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// The encodings [`write_images`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG, 8-bit (16-bit when a value exceeds 255).
    Png,
    /// DICOM Secondary Capture, Explicit VR Little Endian: grayscale as 16-bit MONOCHROME2 with a
    /// rescale intercept (stored value = pixel + 1024, as CT stores Hounsfield units), RGB as
    /// 8-bit interleaved.
    Dicom,
}

impl ImageFormat {
    /// The file extension written.
    pub fn extension(&self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Dicom => "dcm",
        }
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Ok(ImageFormat::Png),
            "dicom" | "dcm" => Ok(ImageFormat::Dicom),
            _ => Err(DataError::InvalidArgument(format!(
                "unknown image format '{s}'; choose png or dicom"
            ))),
        }
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> DataError {
    DataError::Image {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The folder and labels file that `path` names: a folder (holding [`LABELS_FILE`]) or the labels
/// file itself.
pub fn image_folder(path: &Path) -> (PathBuf, PathBuf) {
    if path.is_dir() {
        (path.to_path_buf(), path.join(LABELS_FILE))
    } else {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (dir, path.to_path_buf())
    }
}

fn read_labels(labels: &Path, target: Option<(&str, TaskKind)>) -> Result<Vec<LabelRow>> {
    let meta = std::fs::metadata(labels).map_err(|source| DataError::Io {
        path: labels.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_IMAGE_FILE_BYTES {
        return Err(bad(labels, "the labels file is larger than 256 MiB"));
    }
    let bytes = std::fs::read(labels).map_err(|source| DataError::Io {
        path: labels.to_path_buf(),
        source,
    })?;
    parse_labels(&bytes, &labels.display().to_string(), FILE_COLUMN, target)
}

/// The file a labels row names, inside `dir` (no absolute paths, no `..`).
fn file_in(dir: &Path, labels: &Path, row: &LabelRow) -> Result<PathBuf> {
    let rel = Path::new(&row.file);
    let plain = !row.file.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(DataError::Csv {
            source_name: labels.display().to_string(),
            line: row.line,
            message: format!(
                "file {:?} must be a path inside the image folder (no absolute path, no '..')",
                row.file
            ),
        });
    }
    Ok(dir.join(rel))
}

/// Loads the image folder at `path` (a folder holding [`LABELS_FILE`], or that labels file) as
/// `schema` declares it (`schema.image` must be set; `schema.target` names the label column).
///
/// Every image is checked against the declared shape, and every label against the task; the first
/// problem is an error naming the file (or the labels file's line). Images are decoded on every
/// core.
pub fn load_images(path: &Path, schema: &Schema) -> Result<Dataset> {
    load_images_named(path, schema).map(|(ds, _)| ds)
}

/// As [`load_images`], with each row's file name (as the labels file writes it), in row order.
pub fn load_images_named(path: &Path, schema: &Schema) -> Result<(Dataset, Vec<String>)> {
    let shape = schema.image.ok_or_else(|| {
        DataError::InvalidArgument("load_images needs a schema that declares an image shape".into())
    })?;
    shape.check()?;
    if let TaskKind::Multiclass { classes } = schema.task {
        if !(2..=crate::loader::MAX_CLASSES).contains(&classes) {
            return Err(DataError::InvalidArgument(format!(
                "a multiclass task needs between 2 and {} classes, got {classes}",
                crate::loader::MAX_CLASSES
            )));
        }
    }
    let (dir, labels) = image_folder(path);
    let rows = read_labels(&labels, Some((&schema.target, schema.task)))?;
    let files = rows
        .iter()
        .map(|r| file_in(&dir, &labels, r))
        .collect::<Result<Vec<_>>>()?;
    check_unique(&labels, &rows)?;
    let features = decode_all(&files, shape)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let ds = Dataset {
        name,
        feature_names: shape.channel_names(),
        target_name: schema.target.clone(),
        task: schema.task,
        image: Some(shape),
        features,
        targets: rows.iter().map(|r| r.target.unwrap_or(0.0)).collect(),
    };
    Ok((ds, rows.into_iter().map(|r| r.file).collect()))
}

/// Loads a hospital's data as `schema` says: an image folder ([`load_images`]) when it declares
/// images, otherwise a CSV file ([`crate::load_csv`]).
pub fn load_data(path: &Path, schema: &Schema) -> Result<Dataset> {
    match schema.image {
        Some(_) => load_images(path, schema),
        None if path.is_dir() => Err(DataError::InvalidArgument(format!(
            "{}: is a folder, but the schema declares a table (CSV file); image data needs a \
             schema that declares the image shape",
            path.display()
        ))),
        None => crate::load_csv(path, schema),
    }
}

/// Images without labels (what a released model is applied to), each of `shape`: the files
/// [`LABELS_FILE`] lists when the folder has one, otherwise every file in the folder (not its
/// subfolders, hidden files, `DICOMDIR`, or `.csv`, `.txt`, `.md`, `.json`, `.toml` files), in
/// name order. Returns the rows and the file
/// names, in the same order.
pub fn load_image_rows(path: &Path, shape: ImageShape) -> Result<(Rows, Vec<String>)> {
    shape.check()?;
    let (dir, labels) = image_folder(path);
    let names: Vec<String> = if labels.exists() {
        let rows = read_labels(&labels, None)?;
        check_unique(&labels, &rows)?;
        for r in &rows {
            file_in(&dir, &labels, r)?;
        }
        rows.into_iter().map(|r| r.file).collect()
    } else {
        let entries = std::fs::read_dir(&dir).map_err(|source| DataError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(|source| DataError::Io {
                path: dir.clone(),
                source,
            })?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Followed, so a link to an image counts as the image.
            let is_file = std::fs::metadata(e.path()).is_ok_and(|m| m.is_file());
            let lower = name.to_ascii_lowercase();
            let not_an_image = lower == "dicomdir"
                || [".csv", ".txt", ".md", ".json", ".toml"]
                    .iter()
                    .any(|ext| lower.ends_with(ext));
            if is_file && !name.starts_with('.') && !not_an_image {
                names.push(name);
            }
        }
        names.sort();
        names
    };
    if names.is_empty() {
        return Err(DataError::NoRows {
            source_name: dir.display().to_string(),
        });
    }
    let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let features = decode_all(&files, shape)?;
    Ok((
        Rows {
            name: dir.display().to_string(),
            feature_names: shape.channel_names(),
            image: Some(shape),
            features,
        },
        names,
    ))
}

fn check_unique(labels: &Path, rows: &[LabelRow]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for r in rows {
        if let Some(first) = seen.insert(r.file.as_str(), r.line) {
            return Err(DataError::Csv {
                source_name: labels.display().to_string(),
                line: r.line,
                message: format!(
                    "file {:?} is listed again (first on line {first}); each image once",
                    r.file
                ),
            });
        }
    }
    Ok(())
}

/// Most values an image dataset may hold in memory: 2^31 (8 GiB of `f32`).
pub const MAX_DATASET_VALUES: usize = 1 << 31;

/// Decodes every file (in parallel), CHW rows in file order; the first failing file (in order)
/// is the error.
///
/// Memory follows the files, not the declaration: the first file is decoded (and so shown to
/// have the declared shape) before room for all of them is reserved, so a job that declares
/// enormous images costs a hospital nothing but a refusal.
fn decode_all(files: &[PathBuf], shape: ImageShape) -> Result<Vec<f32>> {
    let Some((first, rest)) = files.split_first() else {
        return Ok(Vec::new());
    };
    let n = shape.len();
    let first = decode_file(first, shape)?;
    let total = files
        .len()
        .checked_mul(n)
        .filter(|&t| t <= MAX_DATASET_VALUES)
        .ok_or_else(|| {
            DataError::InvalidArgument(format!(
                "{} images of {shape} are more than {MAX_DATASET_VALUES} values; a worker loads \
                 at most that many into memory",
                files.len()
            ))
        })?;
    let mut features: Vec<f32> = Vec::new();
    features.try_reserve_exact(total).map_err(|_| {
        DataError::InvalidArgument(format!(
            "not enough memory to load {} images of {shape} ({} MiB)",
            files.len(),
            total / (1 << 18)
        ))
    })?;
    features.extend_from_slice(&first);
    features.resize(total, 0.0);
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(rest.len().max(1));
    let chunk = rest.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = rest
            .chunks(chunk)
            .zip(features[n..].chunks_mut(chunk * n))
            .map(|(part, out)| {
                s.spawn(move || {
                    for (f, dst) in part.iter().zip(out.chunks_mut(n)) {
                        let px = decode_file(f, shape)?;
                        if px.len() != n {
                            return Err(bad(f, format!("decoded to {} values, not {n}", px.len())));
                        }
                        dst.copy_from_slice(&px);
                    }
                    Ok(())
                })
            })
            .collect();
        // In file order, so the error is the first bad file's.
        for h in handles {
            h.join().unwrap_or_else(|_| {
                Err(DataError::InvalidArgument(
                    "an image decoder panicked".into(),
                ))
            })?;
        }
        Ok(())
    })?;
    Ok(features)
}

/// One image file as `shape.len()` values, channel by channel (CHW).
pub fn decode_file(path: &Path, shape: ImageShape) -> Result<Vec<f32>> {
    let len = std::fs::metadata(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len > MAX_IMAGE_FILE_BYTES {
        return Err(bad(
            path,
            format!("is {len} bytes; images of up to 256 MiB are read"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_bytes(&bytes, path, shape)
}

/// Decodes one image's bytes (`path` is for messages). A decoder that panics on a malformed file
/// is an error naming the file, not a crash of the worker (the fuzz target `image_files` looks for
/// such inputs).
pub fn decode_bytes(bytes: &[u8], path: &Path, shape: ImageShape) -> Result<Vec<f32>> {
    std::panic::catch_unwind(|| decode_unguarded(bytes, path, shape)).unwrap_or_else(|_| {
        Err(bad(
            path,
            "is malformed: its decoder failed on it (re-export the file)",
        ))
    })
}

/// [`decode_bytes`] without the panic guard, for the fuzz target: a decoder's panic must reach the
/// fuzzer, which reports it.
#[doc(hidden)]
pub fn decode_unguarded(bytes: &[u8], path: &Path, shape: ImageShape) -> Result<Vec<f32>> {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        return decode_dicom(bytes, path, shape);
    }
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) | Ok(image::ImageFormat::Jpeg) => {
            decode_raster(bytes, path, shape)
        }
        Ok(other) => Err(bad(
            path,
            format!("is a {other:?} image; fedchain reads PNG, JPEG and DICOM"),
        )),
        Err(_) => Err(bad(
            path,
            "is not an image: neither PNG, JPEG nor DICOM (no DICM marker at byte 128)",
        )),
    }
}

fn channels_word(c: usize) -> &'static str {
    if c == 3 {
        "3 channels (RGB)"
    } else {
        "1 channel (grayscale)"
    }
}

fn check_size(path: &Path, shape: ImageShape, height: usize, width: usize) -> Result<()> {
    if (height, width) != (shape.height, shape.width) {
        return Err(bad(
            path,
            format!(
                "is {height}x{width} pixels (height x width), but the job declares {}x{}; \
                 images are not resized",
                shape.height, shape.width
            ),
        ));
    }
    Ok(())
}

fn decode_raster(bytes: &[u8], path: &Path, shape: ImageShape) -> Result<Vec<f32>> {
    use image::DynamicImage as D;
    let img =
        image::load_from_memory(bytes).map_err(|e| bad(path, format!("cannot be decoded: {e}")))?;
    check_size(path, shape, img.height() as usize, img.width() as usize)?;
    let color = img.color();
    let has_alpha = color.has_alpha();
    let channels = if color.has_color() { 3 } else { 1 };
    if channels != shape.channels {
        return Err(bad(
            path,
            format!(
                "has {}, but the job declares {}",
                channels_word(channels),
                channels_word(shape.channels)
            ),
        ));
    }
    // Transparency has no meaning for a scan; an alpha channel is accepted only when opaque.
    let opaque = |mut alpha: Box<dyn Iterator<Item = bool> + '_>| {
        if alpha.all(|o| o) {
            Ok(())
        } else {
            Err(bad(
                path,
                "has transparent pixels; export it without an alpha channel",
            ))
        }
    };
    let interleaved: Vec<f32> = match (&img, has_alpha) {
        (D::ImageLuma8(b), _) => b.as_raw().iter().map(|&v| v as f32).collect(),
        (D::ImageLuma16(b), _) => b.as_raw().iter().map(|&v| v as f32).collect(),
        (D::ImageRgb8(b), _) => b.as_raw().iter().map(|&v| v as f32).collect(),
        (D::ImageRgb16(b), _) => b.as_raw().iter().map(|&v| v as f32).collect(),
        (D::ImageLumaA8(b), _) => {
            opaque(Box::new(b.pixels().map(|p| p.0[1] == u8::MAX)))?;
            b.pixels().map(|p| p.0[0] as f32).collect()
        }
        (D::ImageLumaA16(b), _) => {
            opaque(Box::new(b.pixels().map(|p| p.0[1] == u16::MAX)))?;
            b.pixels().map(|p| p.0[0] as f32).collect()
        }
        (D::ImageRgba8(b), _) => {
            opaque(Box::new(b.pixels().map(|p| p.0[3] == u8::MAX)))?;
            b.pixels()
                .flat_map(|p| p.0[..3].to_vec())
                .map(f32::from)
                .collect()
        }
        (D::ImageRgba16(b), _) => {
            opaque(Box::new(b.pixels().map(|p| p.0[3] == u16::MAX)))?;
            b.pixels()
                .flat_map(|p| p.0[..3].to_vec())
                .map(f32::from)
                .collect()
        }
        _ => {
            return Err(bad(
                path,
                format!("has pixel type {color:?}; 8- or 16-bit grayscale or RGB is read"),
            ))
        }
    };
    Ok(to_chw(&interleaved, shape))
}

/// Interleaved pixels (HWC) to channel planes (CHW).
fn to_chw(interleaved: &[f32], shape: ImageShape) -> Vec<f32> {
    let (c, n) = (shape.channels, shape.pixels());
    if c == 1 {
        return interleaved.to_vec();
    }
    let mut out = vec![0f32; c * n];
    for (i, px) in interleaved.chunks_exact(c).enumerate() {
        for (k, &v) in px.iter().enumerate() {
            out[k * n + i] = v;
        }
    }
    out
}

/// Checks, before dicom-rs reads a file, that no top-level element claims more bytes than the file
/// holds: dicom-rs reserves and zeroes an element's declared length before reading it, so one
/// corrupt length would cost up to 4 GiB and a second of a worker's time. Scans the file meta
/// group and, for little-endian transfer syntaxes, the data set up to the first element of
/// undefined length (a sequence or encapsulated pixel data, which dicom-rs reads item by item).
fn dicom_lengths_fit(bytes: &[u8]) -> std::result::Result<(), String> {
    let u16_at = |p: usize| u16::from_le_bytes([bytes[p], bytes[p + 1]]);
    let u32_at =
        |p: usize| u32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]);
    let mut pos = 132;
    let mut ts: &[u8] = b"";
    let mut in_meta = true;
    let mut implicit = false;
    while pos + 8 <= bytes.len() {
        let (group, element) = (u16_at(pos), u16_at(pos + 2));
        if in_meta && group != 0x0002 {
            in_meta = false;
            let ts = std::str::from_utf8(ts)
                .unwrap_or("")
                .trim_end_matches(['\0', ' ']);
            let explicit_le = ts == "1.2.840.10008.1.2.1"
                || ts.starts_with("1.2.840.10008.1.2.4.")
                || ts == "1.2.840.10008.1.2.5";
            if ts == "1.2.840.10008.1.2" {
                implicit = true;
            } else if !explicit_le {
                // Big endian, deflated or unknown: left to dicom-rs.
                return Ok(());
            }
        }
        let vr = &bytes[pos + 4..pos + 6];
        let long = matches!(
            vr,
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"SV"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"UV"
        );
        let (len, header) = if implicit && !in_meta {
            (u32_at(pos + 4), 8)
        } else if long {
            if pos + 12 > bytes.len() {
                return Err(format!("the element at byte {pos} is cut short"));
            }
            (u32_at(pos + 8), 12)
        } else {
            (u16_at(pos + 6) as u32, 8)
        };
        if len == u32::MAX {
            return Ok(());
        }
        let end = (pos + header)
            .checked_add(len as usize)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                format!(
                    "the element ({group:04X},{element:04X}) at byte {pos} declares {len} bytes, \
                     more than the file holds"
                )
            })?;
        if in_meta && element == 0x0010 {
            ts = &bytes[pos + header..end];
        }
        pos = end;
    }
    Ok(())
}

fn decode_dicom(bytes: &[u8], path: &Path, shape: ImageShape) -> Result<Vec<f32>> {
    dicom_lengths_fit(bytes)
        .map_err(|e| bad(path, format!("is not a readable DICOM file: {e}")))?;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(bytes)
        .map_err(|e| bad(path, format!("is not a readable DICOM file: {e}")))?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let ts_name = dicom_transfer_syntax_name(&ts);
    if obj.element(tags::PIXEL_DATA).is_err() {
        return Err(bad(path, "is a DICOM file without pixel data"));
    }
    let decoded = obj.decode_pixel_data().map_err(|e| {
        bad(
            path,
            format!(
                "has pixel data this worker cannot decode (transfer syntax {ts}{ts_name}): {e}; \
                 export it uncompressed (Explicit VR Little Endian) or as RLE or baseline JPEG"
            ),
        )
    })?;
    if decoded.number_of_frames() != 1 {
        return Err(bad(
            path,
            format!(
                "holds {} frames; one image per file is read",
                decoded.number_of_frames()
            ),
        ));
    }
    check_size(
        path,
        shape,
        decoded.rows() as usize,
        decoded.columns() as usize,
    )?;
    let samples = decoded.samples_per_pixel() as usize;
    let pi = decoded.photometric_interpretation().clone();
    let channels = match (&pi, samples) {
        (PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2, 1) => 1,
        (PhotometricInterpretation::Rgb, 3) => 3,
        _ => {
            return Err(bad(
                path,
                format!(
                    "has photometric interpretation {pi} with {samples} samples per pixel; \
                     MONOCHROME1, MONOCHROME2 (1 sample) or RGB (3 samples) is read"
                ),
            ))
        }
    };
    if channels != shape.channels {
        return Err(bad(
            path,
            format!(
                "has {}, but the job declares {}",
                channels_word(channels),
                channels_word(shape.channels)
            ),
        ));
    }
    if channels == 3 {
        // Colour: no modality LUT applies. The decoder hands back native samples; either
        // planar configuration is read here (dicom-pixeldata's to_vec refuses planar ones).
        if decoded.bits_allocated() != 8 {
            return Err(bad(
                path,
                format!(
                    "is RGB with {} bits per sample; 8-bit RGB is read",
                    decoded.bits_allocated()
                ),
            ));
        }
        let data = decoded.data();
        if data.len() < shape.len() {
            return Err(bad(
                path,
                "has less pixel data than its rows and columns say",
            ));
        }
        let values: Vec<f32> = data[..shape.len()].iter().map(|&v| v as f32).collect();
        return Ok(match decoded.planar_configuration() {
            dicom_pixeldata::PlanarConfiguration::Standard => to_chw(&values, shape),
            dicom_pixeldata::PlanarConfiguration::PixelFirst => values,
        });
    }
    // Grayscale: the modality LUT (rescale slope and intercept) gives the values in the units the
    // scanner measured; MONOCHROME1 (low values white) is turned into MONOCHROME2's sense. Read
    // here from the native samples rather than through dicom-pixeldata's lookup table, which is
    // built per file for every possible stored value (65,536 for 16 bits).
    let bits = decoded.bits_stored().clamp(1, 32) as u32;
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let (slope, intercept) = decoded
        .rescale()
        .ok()
        .and_then(|r| r.first().copied())
        .map(|r| (r.slope, r.intercept))
        .unwrap_or((1.0, 0.0));
    let width = match decoded.bits_allocated() {
        8 => 1,
        16 => 2,
        32 => 4,
        b => {
            return Err(bad(
                path,
                format!("has {b} bits allocated per sample; 8, 16 or 32 is read"),
            ))
        }
    };
    let data = decoded.data();
    if data.len() < shape.len() * width {
        return Err(bad(
            path,
            "has less pixel data than its rows and columns say",
        ));
    }
    let mask: u64 = if bits == 32 {
        u32::MAX as u64
    } else {
        (1u64 << bits) - 1
    };
    let stored = |raw: u64| -> f64 {
        let v = raw & mask;
        if signed && v >> (bits - 1) & 1 == 1 {
            v as f64 - (1u64 << bits) as f64
        } else {
            v as f64
        }
    };
    let (lo, hi) = if signed {
        (
            -(2f64.powi(bits as i32 - 1)),
            2f64.powi(bits as i32 - 1) - 1.0,
        )
    } else {
        (0.0, mask as f64)
    };
    let flip = (pi == PhotometricInterpretation::Monochrome1).then_some(lo + hi);
    let values: Vec<f32> = data[..shape.len() * width]
        .chunks_exact(width)
        .map(|b| {
            let raw = match width {
                1 => b[0] as u64,
                2 => u16::from_le_bytes([b[0], b[1]]) as u64,
                _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64,
            };
            let v = stored(raw);
            let v = flip.map_or(v, |sum| sum - v);
            (v * slope + intercept) as f32
        })
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(
            path,
            format!("pixel {i} is not a finite number after rescaling"),
        ));
    }
    Ok(values)
}

fn dicom_transfer_syntax_name(uid: &str) -> String {
    use dicom_encoding::TransferSyntaxIndex;
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(uid)
        .map(|ts| format!(", {}", ts.name()))
        .unwrap_or_default()
}

/// Checks that every value is an integer in `0..=max` (what an image file can hold exactly).
fn integer_pixels(path: &Path, pixels: &[f32], max: f32) -> Result<()> {
    match pixels
        .iter()
        .position(|&v| !(v.fract() == 0.0 && (0.0..=max).contains(&v)))
    {
        None => Ok(()),
        Some(i) => Err(bad(
            path,
            format!(
                "pixel {i} is {}; image files hold integers from 0 to {max}",
                pixels[i]
            ),
        )),
    }
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    bad(path, format!("cannot be written: {e}"))
}

/// Writes one image (CHW values, integers 0..=65535) as PNG: 8-bit when every value fits, else
/// 16-bit.
pub fn write_png(path: &Path, shape: ImageShape, pixels: &[f32]) -> Result<()> {
    let bytes = png_bytes_at(path, shape, pixels)?;
    std::fs::write(path, bytes).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn png_bytes_at(path: &Path, shape: ImageShape, pixels: &[f32]) -> Result<Vec<u8>> {
    shape.check()?;
    if pixels.len() != shape.len() {
        return Err(bad(
            path,
            format!("{} values for {shape} pixels", pixels.len()),
        ));
    }
    integer_pixels(path, pixels, 65535.0)?;
    let (w, h) = (shape.width as u32, shape.height as u32);
    let hwc = to_hwc(pixels, shape);
    let wide = pixels.iter().any(|&v| v > 255.0);
    let img = match (shape.channels, wide) {
        (1, false) => image::DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w, h, hwc.iter().map(|&v| v as u8).collect())
                .ok_or_else(|| write_err(path, "buffer size"))?,
        ),
        (1, true) => image::DynamicImage::ImageLuma16(
            image::ImageBuffer::from_raw(w, h, hwc.iter().map(|&v| v as u16).collect())
                .ok_or_else(|| write_err(path, "buffer size"))?,
        ),
        (_, false) => image::DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(w, h, hwc.iter().map(|&v| v as u8).collect())
                .ok_or_else(|| write_err(path, "buffer size"))?,
        ),
        (_, true) => image::DynamicImage::ImageRgb16(
            image::ImageBuffer::from_raw(w, h, hwc.iter().map(|&v| v as u16).collect())
                .ok_or_else(|| write_err(path, "buffer size"))?,
        ),
    };
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| write_err(path, e))?;
    Ok(bytes.into_inner())
}

/// The bytes of a PNG file as [`write_png`] writes it.
pub fn png_bytes(shape: ImageShape, pixels: &[f32]) -> Result<Vec<u8>> {
    png_bytes_at(Path::new("image.png"), shape, pixels)
}

/// Channel planes (CHW) to interleaved pixels (HWC).
fn to_hwc(planes: &[f32], shape: ImageShape) -> Vec<f32> {
    let (c, n) = (shape.channels, shape.pixels());
    let mut out = vec![0f32; c * n];
    for k in 0..c {
        for i in 0..n {
            out[i * c + k] = planes[k * n + i];
        }
    }
    out
}

/// How [`write_dicom_as`] lays out the pixels: the defaults are [`write_dicom`]'s; the others
/// exist so that the reader's handling of each is tested against real files.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DicomLayout {
    /// Grayscale: write MONOCHROME1 (stored = max - pixel) instead of MONOCHROME2.
    pub monochrome1: bool,
    /// RGB: channel planes (planar configuration 1) instead of interleaved.
    pub planar: bool,
    /// Grayscale: stored = (pixel - intercept) / slope.
    pub slope: f64,
    /// Grayscale: see `slope`.
    pub intercept: f64,
    /// A transfer syntax to claim (tests of refusal); `None` is Explicit VR Little Endian.
    pub claim_transfer_syntax: Option<&'static str>,
}

impl Default for DicomLayout {
    fn default() -> Self {
        DicomLayout {
            monochrome1: false,
            planar: false,
            slope: 1.0,
            intercept: -1024.0,
            claim_transfer_syntax: None,
        }
    }
}

/// A DICOM UID from a name: `2.25.` and a 128-bit number (ISO/IEC 9834-8), the same for the same
/// name, so that a split written twice is byte-identical.
fn uid(name: &str) -> String {
    let d = Sha256::digest(name.as_bytes());
    let mut n = [0u8; 16];
    n.copy_from_slice(&d[..16]);
    format!("2.25.{}", u128::from_be_bytes(n))
}

/// Writes one image (CHW values) as a DICOM Secondary Capture file that any DICOM reader opens:
/// grayscale as 16-bit MONOCHROME2, stored value = pixel + 1024 with RescaleIntercept -1024
/// (pixels must be integers from -1024 to 64511); RGB as 8-bit interleaved (integers 0..=255).
/// `id` names the image (its UIDs derive from it, and it becomes the patient ID).
pub fn write_dicom(path: &Path, shape: ImageShape, pixels: &[f32], id: &str) -> Result<()> {
    write_dicom_as(path, shape, pixels, id, DicomLayout::default())
}

pub(crate) fn write_dicom_as(
    path: &Path,
    shape: ImageShape,
    pixels: &[f32],
    id: &str,
    layout: DicomLayout,
) -> Result<()> {
    let bytes = dicom_bytes_as(path, shape, pixels, id, layout)?;
    std::fs::write(path, bytes).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn dicom_bytes_as(
    path: &Path,
    shape: ImageShape,
    pixels: &[f32],
    id: &str,
    layout: DicomLayout,
) -> Result<Vec<u8>> {
    shape.check()?;
    if pixels.len() != shape.len() {
        return Err(bad(
            path,
            format!("{} values for {shape} pixels", pixels.len()),
        ));
    }
    let ui = |tag, v: String| DataElement::new(tag, VR::UI, PrimitiveValue::from(v));
    let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    let mut obj = InMemDicomObject::new_empty();
    obj.put(ui(
        tags::SOP_CLASS_UID,
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE.to_string(),
    ));
    obj.put(ui(tags::SOP_INSTANCE_UID, uid(&format!("instance {id}"))));
    obj.put(ui(tags::STUDY_INSTANCE_UID, uid(&format!("study {id}"))));
    obj.put(ui(tags::SERIES_INSTANCE_UID, uid(&format!("series {id}"))));
    obj.put(text(tags::PATIENT_NAME, VR::PN, "Anonymous"));
    obj.put(text(tags::PATIENT_ID, VR::LO, id));
    obj.put(text(tags::MODALITY, VR::CS, "OT"));
    obj.put(text(tags::CONVERSION_TYPE, VR::CS, "WSD"));
    obj.put(us(tags::ROWS, shape.height as u16));
    obj.put(us(tags::COLUMNS, shape.width as u16));
    obj.put(us(tags::SAMPLES_PER_PIXEL, shape.channels as u16));
    obj.put(us(tags::PIXEL_REPRESENTATION, 0));
    if shape.height > u16::MAX as usize || shape.width > u16::MAX as usize {
        return Err(bad(path, "DICOM rows and columns are at most 65535"));
    }
    if shape.channels == 3 {
        integer_pixels(path, pixels, 255.0)?;
        obj.put(text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"));
        obj.put(us(tags::PLANAR_CONFIGURATION, layout.planar as u16));
        obj.put(us(tags::BITS_ALLOCATED, 8));
        obj.put(us(tags::BITS_STORED, 8));
        obj.put(us(tags::HIGH_BIT, 7));
        let data: Vec<u8> = if layout.planar {
            pixels.iter().map(|&v| v as u8).collect()
        } else {
            to_hwc(pixels, shape).iter().map(|&v| v as u8).collect()
        };
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(data),
        ));
    } else {
        let stored: Vec<f64> = pixels
            .iter()
            .map(|&v| (v as f64 - layout.intercept) / layout.slope)
            .map(|s| if layout.monochrome1 { 65535.0 - s } else { s })
            .collect();
        if let Some(i) = stored
            .iter()
            .position(|s| !(s.fract() == 0.0 && (0.0..=65535.0).contains(s)))
        {
            return Err(bad(
                path,
                format!(
                    "pixel {i} is {}, which 16-bit DICOM with rescale intercept {} cannot hold",
                    pixels[i], layout.intercept
                ),
            ));
        }
        let pi = if layout.monochrome1 {
            "MONOCHROME1"
        } else {
            "MONOCHROME2"
        };
        obj.put(text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, pi));
        obj.put(us(tags::BITS_ALLOCATED, 16));
        obj.put(us(tags::BITS_STORED, 16));
        obj.put(us(tags::HIGH_BIT, 15));
        obj.put(text(
            tags::RESCALE_INTERCEPT,
            VR::DS,
            &format!("{}", layout.intercept),
        ));
        obj.put(text(
            tags::RESCALE_SLOPE,
            VR::DS,
            &format!("{}", layout.slope),
        ));
        obj.put(text(tags::RESCALE_TYPE, VR::LO, "US"));
        let data: Vec<u16> = stored.iter().map(|&s| s as u16).collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(data.into()),
        ));
    }
    let ts = layout
        .claim_transfer_syntax
        .unwrap_or(uids::EXPLICIT_VR_LITTLE_ENDIAN);
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .implementation_class_uid(uid("fedchain"))
                .implementation_version_name("FEDCHAIN"),
        )
        .map_err(|e| write_err(path, e))?;
    // write_all writes the preamble and the DICM marker too.
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|e| write_err(path, e))?;
    Ok(bytes)
}

/// The bytes of a DICOM file as [`write_dicom`] writes it.
pub fn dicom_bytes(shape: ImageShape, pixels: &[f32], id: &str) -> Result<Vec<u8>> {
    dicom_bytes_as(Path::new(id), shape, pixels, id, DicomLayout::default())
}

/// Writes `ds` as an image folder at `dir`: one file per row, `NNNNN.png` or `NNNNN.dcm`, and
/// [`LABELS_FILE`] naming them with their labels (under the dataset's target name). The dataset
/// is an image dataset, or a table whose rows are images of `shape` (the bundled digits: 64
/// features, 1x8x8). `id` prefixes the DICOM identifiers (say, the hospital's name).
pub fn write_images(
    ds: &Dataset,
    shape: ImageShape,
    format: ImageFormat,
    dir: &Path,
    id: &str,
) -> Result<()> {
    shape.check()?;
    if ds.n_features() != shape.len() {
        return Err(DataError::InvalidArgument(format!(
            "{}: rows of {} values are not {shape} images ({} values each)",
            ds.name(),
            ds.n_features(),
            shape.len()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let digits = ds.len().to_string().len().max(5);
    let mut labels = format!("{FILE_COLUMN},{}\n", crate::loader::quote(ds.target_name()));
    for i in 0..ds.len() {
        let name = format!("{i:0digits$}.{}", format.extension());
        let path = dir.join(&name);
        match format {
            ImageFormat::Png => write_png(&path, shape, ds.row(i))?,
            ImageFormat::Dicom => write_dicom(&path, shape, ds.row(i), &format!("{id}-{i}"))?,
        }
        let target = ds.targets()[i];
        if ds.task().classes().is_some() {
            labels.push_str(&format!("{name},{}\n", target as u64));
        } else {
            labels.push_str(&format!("{name},{target}\n"));
        }
    }
    let path = dir.join(LABELS_FILE);
    std::fs::write(&path, labels).map_err(|source| DataError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gray(h: usize, w: usize) -> ImageShape {
        ImageShape::new(1, h, w).unwrap()
    }

    fn schema(shape: ImageShape, classes: usize) -> Schema {
        Schema {
            features: None,
            target: "label".into(),
            task: TaskKind::Multiclass { classes },
            image: Some(shape),
        }
    }

    fn labels(dir: &Path, rows: &[(&str, &str)]) {
        let mut text = String::from("file,label\n");
        for (f, l) in rows {
            text.push_str(&format!("{f},{l}\n"));
        }
        std::fs::write(dir.join(LABELS_FILE), text).unwrap();
    }

    fn err_text(r: Result<Dataset>) -> String {
        r.expect_err("the folder must be refused").to_string()
    }

    #[test]
    fn png_and_dicom_folders_load_the_same_pixels_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let shape = gray(3, 4);
        let a: Vec<f32> = (0..12).map(|v| v as f32 * 20.0).collect();
        let b: Vec<f32> = (0..12).rev().map(|v| v as f32).collect();
        write_png(&dir.path().join("a.png"), shape, &a).unwrap();
        write_dicom(&dir.path().join("b.dcm"), shape, &b, "b").unwrap();
        labels(dir.path(), &[("a.png", "1"), ("b.dcm", "0")]);
        let ds = load_images(dir.path(), &schema(shape, 2)).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.n_features(), 12);
        assert_eq!(ds.row(0), a.as_slice());
        assert_eq!(ds.row(1), b.as_slice());
        assert_eq!(ds.targets(), &[1.0, 0.0]);
        assert_eq!(ds.feature_names(), &["gray".to_string()]);
        assert_eq!(ds.image(), Some(shape));
        // The labels file itself names the folder too.
        let again = load_images(&dir.path().join(LABELS_FILE), &schema(shape, 2)).unwrap();
        assert_eq!(again, ds);
    }

    #[test]
    fn rgb_in_png_and_in_both_dicom_planar_configurations_reads_as_channel_planes() {
        let dir = tempfile::tempdir().unwrap();
        let shape = ImageShape::new(3, 2, 3).unwrap();
        let chw: Vec<f32> = (0..18).map(|v| (v * 13 % 256) as f32).collect();
        write_png(&dir.path().join("a.png"), shape, &chw).unwrap();
        write_dicom(&dir.path().join("b.dcm"), shape, &chw, "b").unwrap();
        let planar = DicomLayout {
            planar: true,
            ..Default::default()
        };
        write_dicom_as(&dir.path().join("c.dcm"), shape, &chw, "c", planar).unwrap();
        labels(
            dir.path(),
            &[("a.png", "0"), ("b.dcm", "1"), ("c.dcm", "2")],
        );
        let ds = load_images(dir.path(), &schema(shape, 3)).unwrap();
        for i in 0..3 {
            assert_eq!(ds.row(i), chw.as_slice(), "row {i}");
        }
        assert_eq!(ds.feature_names().len(), 3);
    }

    #[test]
    fn dicom_rescale_and_monochrome1_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let shape = gray(2, 2);
        let px = [0.0, 10.0, 250.0, 1000.0];
        let scaled = DicomLayout {
            slope: 2.0,
            intercept: -100.0,
            ..Default::default()
        };
        write_dicom_as(&dir.path().join("s.dcm"), shape, &px, "s", scaled).unwrap();
        let inverted = DicomLayout {
            monochrome1: true,
            ..Default::default()
        };
        write_dicom_as(&dir.path().join("m.dcm"), shape, &px, "m", inverted).unwrap();
        // A raw read of the stored values proves the file really holds something else.
        let obj = dicom_object::open_file(dir.path().join("s.dcm")).unwrap();
        let stored: Vec<u16> = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .value()
            .to_multi_int()
            .unwrap();
        assert_eq!(stored, vec![50, 55, 175, 550]);
        let obj = dicom_object::open_file(dir.path().join("m.dcm")).unwrap();
        let stored: Vec<u16> = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .value()
            .to_multi_int()
            .unwrap();
        // MONOCHROME1: the brightest pixel is stored lowest.
        assert_eq!(stored, vec![64511, 64501, 64261, 63511]);
        let pi = obj.element(tags::PHOTOMETRIC_INTERPRETATION).unwrap();
        assert_eq!(pi.to_str().unwrap().trim(), "MONOCHROME1");
        for f in ["s.dcm", "m.dcm"] {
            let got = decode_file(&dir.path().join(f), shape).unwrap();
            assert_eq!(got, px, "{f}");
        }
    }

    #[test]
    fn every_bad_file_is_named_with_its_problem_and_nothing_loads() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let shape = gray(4, 4);
        let px = vec![7.0; 16];
        write_png(&d.join("ok.png"), shape, &px).unwrap();
        let check = |rows: &[(&str, &str)], want: &[&str]| {
            labels(d, rows);
            let msg = err_text(load_images(d, &schema(shape, 3)));
            for w in want {
                assert!(msg.contains(w), "{msg:?} lacks {w:?}");
            }
        };
        // Not an image at all.
        std::fs::write(d.join("notes.png"), b"patient notes, not pixels").unwrap();
        check(
            &[("ok.png", "0"), ("notes.png", "1")],
            &["notes.png", "not an image"],
        );
        // The wrong shape.
        write_png(&d.join("big.png"), gray(4, 6), &[1.0; 24]).unwrap();
        check(&[("big.png", "0")], &["big.png", "4x6", "declares 4x4"]);
        // The wrong channel count.
        let rgb = ImageShape::new(3, 4, 4).unwrap();
        write_png(&d.join("rgb.png"), rgb, &[3.0; 48]).unwrap();
        check(
            &[("rgb.png", "0")],
            &["rgb.png", "3 channels", "declares 1 channel"],
        );
        write_dicom(&d.join("rgb.dcm"), rgb, &[3.0; 48], "x").unwrap();
        check(&[("rgb.dcm", "0")], &["rgb.dcm", "3 channels"]);
        write_dicom(&d.join("small.dcm"), gray(2, 4), &[3.0; 8], "x").unwrap();
        check(&[("small.dcm", "0")], &["small.dcm", "2x4"]);
        // A compressed transfer syntax without a decoder (JPEG 2000).
        let j2k = DicomLayout {
            claim_transfer_syntax: Some(uids::JPEG2000_LOSSLESS),
            ..Default::default()
        };
        write_dicom_as(&d.join("j2k.dcm"), shape, &px, "j", j2k).unwrap();
        check(
            &[("ok.png", "0"), ("j2k.dcm", "0")],
            &["j2k.dcm", "1.2.840.10008.1.2.4.90", "cannot decode"],
        );
        // A label outside the task.
        check(
            &[("ok.png", "0"), ("ok.png", "7")],
            &["labels.csv", "line 3", "'7'", "0 to 2"],
        );
        // Listed twice, missing, outside the folder.
        check(
            &[("ok.png", "0"), ("ok.png", "1")],
            &["line 3", "listed again"],
        );
        check(&[("gone.png", "0")], &["gone.png"]);
        check(&[("../ok.png", "0")], &["inside the image folder"]);
        // A PNG with transparency.
        let mut la = image::GrayAlphaImage::from_pixel(4, 4, image::LumaA([5, 255]));
        la.put_pixel(1, 1, image::LumaA([1, 100]));
        la.save(d.join("alpha.png")).unwrap();
        check(&[("alpha.png", "0")], &["alpha.png", "transparent"]);
        // No labels file.
        std::fs::remove_file(d.join(LABELS_FILE)).unwrap();
        let msg = err_text(load_images(d, &schema(rgb, 3)));
        assert!(msg.contains(LABELS_FILE), "{msg}");
    }

    #[test]
    fn a_corrupt_dicom_length_is_refused_before_anything_is_reserved() {
        let shape = gray(4, 4);
        let good = dicom_bytes(shape, &[3.0; 16], "x").unwrap();
        // The first data set element after the meta group: its 2-byte length, made huge
        // for a 4-byte-length VR by turning it into OB with length 0xFFFFFFF0.
        let meta_len = u32::from_le_bytes(good[140..144].try_into().unwrap()) as usize;
        let first = 144 + meta_len;
        let mut bad_len = good[..first].to_vec();
        bad_len.extend_from_slice(&good[first..first + 4]);
        bad_len.extend_from_slice(b"OB\0\0");
        bad_len.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        bad_len.extend_from_slice(&good[first + 8..]);
        let t = std::time::Instant::now();
        let e = decode_bytes(&bad_len, Path::new("corrupt.dcm"), shape).unwrap_err();
        assert!(e.to_string().contains("more than the file holds"), "{e}");
        assert!(t.elapsed().as_millis() < 100, "{:?}", t.elapsed());
        assert!(dicom_lengths_fit(&good).is_ok());
        assert_eq!(
            decode_bytes(&good, Path::new("x"), shape).unwrap(),
            vec![3.0; 16]
        );
    }

    #[test]
    fn jpeg_files_are_read_by_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::GrayImage::from_fn(8, 6, |x, y| image::Luma([(x * 30 + y) as u8]));
        // A JPEG named .png: read by what it is.
        let path = dir.path().join("scan.png");
        img.save_with_format(&path, image::ImageFormat::Jpeg)
            .unwrap();
        let px = decode_file(&path, gray(6, 8)).unwrap();
        assert_eq!(px.len(), 48);
        // Lossy, but close to the source.
        let worst = px
            .iter()
            .zip(img.as_raw())
            .map(|(a, &b)| (a - b as f32).abs())
            .fold(0f32, f32::max);
        assert!(worst < 12.0, "{worst}");
        let msg = decode_file(&path, gray(8, 6)).unwrap_err().to_string();
        assert!(msg.contains("scan.png") && msg.contains("6x8"), "{msg}");
    }

    #[test]
    fn an_opaque_alpha_channel_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mut rgba = image::RgbaImage::from_pixel(2, 2, image::Rgba([9, 8, 7, 255]));
        rgba.put_pixel(1, 0, image::Rgba([1, 2, 3, 255]));
        let path = dir.path().join("a.png");
        rgba.save(&path).unwrap();
        let got = decode_file(&path, ImageShape::new(3, 2, 2).unwrap()).unwrap();
        assert_eq!(got, [9., 1., 9., 9., 8., 2., 8., 8., 7., 3., 7., 7.]);
    }

    #[test]
    fn unlabeled_folders_are_read_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let shape = gray(2, 2);
        write_png(&dir.path().join("b.png"), shape, &[2.0; 4]).unwrap();
        write_dicom(&dir.path().join("a.dcm"), shape, &[1.0; 4], "a").unwrap();
        std::fs::write(dir.path().join("notes.csv"), "x\n1\n").unwrap();
        let (rows, names) = load_image_rows(dir.path(), shape).unwrap();
        assert_eq!(names, ["a.dcm", "b.png"]);
        assert_eq!(rows.features(), &[1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn dicom_files_written_twice_are_identical() {
        let dir = tempfile::tempdir().unwrap();
        let shape = gray(2, 2);
        let (a, b) = (dir.path().join("a.dcm"), dir.path().join("b.dcm"));
        write_dicom(&a, shape, &[1.0, 2.0, 3.0, 4.0], "h1-0").unwrap();
        write_dicom(&b, shape, &[1.0, 2.0, 3.0, 4.0], "h1-0").unwrap();
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }

    #[test]
    fn image_scaling_is_per_channel_and_equals_pooling_every_pixel() {
        let dir = tempfile::tempdir().unwrap();
        let shape = ImageShape::new(3, 2, 2).unwrap();
        let a: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let b: Vec<f32> = (0..12).map(|v| (v * v) as f32).collect();
        write_png(&dir.path().join("a.png"), shape, &a).unwrap();
        write_png(&dir.path().join("b.png"), shape, &b).unwrap();
        labels(dir.path(), &[("a.png", "0"), ("b.png", "1")]);
        let ds = load_images(dir.path(), &schema(shape, 2)).unwrap();
        let s = crate::Standardizer::fit(&ds);
        assert_eq!(s.image, Some(shape));
        for c in 0..3 {
            let px: Vec<f64> = [&a, &b]
                .iter()
                .flat_map(|r| r[c * 4..c * 4 + 4].iter().map(|&v| v as f64))
                .collect();
            let mean = px.iter().sum::<f64>() / 8.0;
            let var = px.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 8.0;
            assert!((s.means[c] as f64 - mean).abs() < 1e-4, "channel {c}");
            assert!((s.stds[c] as f64 - var.sqrt()).abs() < 1e-3, "channel {c}");
        }
        // The pooled moments a job's round 0 averages give the same scaling.
        let m = crate::FeatureSums::of(&ds).moments().unwrap();
        let pooled = crate::Standardizer::from_moments(ds.feature_names(), false, &m)
            .unwrap()
            .with_image(Some(shape));
        assert_eq!(pooled, s);
        let scaled = s.apply(&ds).unwrap();
        let mean0: f32 = (0..2)
            .map(|i| scaled.row(i)[..4].iter().sum::<f32>())
            .sum::<f32>();
        assert!(mean0.abs() < 1e-4);
        // Table scaling does not apply to images, nor the reverse.
        let table = crate::Standardizer::from_moments(ds.feature_names(), false, &m).unwrap();
        assert!(table.apply(&ds).unwrap_err().to_string().contains("images"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// PNG and DICOM writes of the same pixels load identically (and equal the pixels).
        #[test]
        fn png_and_dicom_writes_of_the_same_pixels_load_identically(
            rgb in any::<bool>(),
            h in 1usize..9,
            w in 1usize..9,
            seed in any::<u64>(),
            wide in any::<bool>(),
        ) {
            let shape = ImageShape::new(if rgb { 3 } else { 1 }, h, w).unwrap();
            // RGB DICOM holds 8 bits; grayscale goes up to 16 in both.
            let max = if wide && !rgb { 60000u64 } else { 255 };
            let px: Vec<f32> = (0..shape.len() as u64)
                .map(|i| ((seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % (max + 1)) as f32)
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let (p, d) = (dir.path().join("x.png"), dir.path().join("x.dcm"));
            write_png(&p, shape, &px).unwrap();
            write_dicom(&d, shape, &px, "x").unwrap();
            let from_png = decode_file(&p, shape).unwrap();
            let from_dicom = decode_file(&d, shape).unwrap();
            prop_assert_eq!(&from_png, &px);
            prop_assert_eq!(&from_dicom, &px);
        }
    }
}
