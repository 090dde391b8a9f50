//! Atomic output: every file is written to a temporary name in its final folder and renamed
//! into place, so a crash (or a full disk) never leaves a half-written file behind.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::{Error, Result};

mod stream;
pub use stream::{StreamWriter, TensorDecl};

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write `bytes` to `path` atomically (temp file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_parts(path, &[bytes])
}

/// [`write_atomic`] of the concatenation of `parts`, written one after the other (a large
/// file is never gathered into one buffer first).
fn write_atomic_parts(path: &Path, parts: &[&[u8]]) -> Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path);
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Make a rename into `path`'s folder durable (best effort: not every platform syncs folders).
fn sync_parent(path: &Path) {
    if let Some(Ok(d)) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(std::fs::File::open)
    {
        let _ = d.sync_all();
    }
}

/// Fill `buf` from `file` at byte `offset` (a positioned read: no shared cursor, and no
/// memory map, so a file truncated under the reader gives an error, never SIGBUS).
/// `UnexpectedEof` when the file ends first.
pub fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let end = std::io::ErrorKind::UnexpectedEof;
        positioned_all(buf.len(), offset, end, |done, at| {
            std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], at)
        })
    }
}

/// Write all of `buf` into `file` at byte `offset`.
pub fn write_all_at(file: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let end = std::io::ErrorKind::WriteZero;
        positioned_all(buf.len(), offset, end, |done, at| {
            std::os::windows::fs::FileExt::seek_write(file, &buf[done..], at)
        })
    }
}

/// The loop of a positioned read or write of `len` bytes at byte `offset` where the
/// platform has none: `op(done, at)` moves bytes `done..` of the buffer at file offset
/// `at` and says how many it moved; none moved before the end is the error `end`.
#[cfg(windows)]
fn positioned_all(
    len: usize,
    offset: u64,
    end: std::io::ErrorKind,
    mut op: impl FnMut(usize, u64) -> std::io::Result<usize>,
) -> std::io::Result<()> {
    let mut done = 0;
    while done < len {
        match op(done, offset + done as u64) {
            Ok(0) => return Err(end.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Is `name` a temporary file of `write_atomic` (or of the plot writer)?
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Remove temporary files that a killed process left in `dir` (not recursive). Returns how
/// many were removed. Only names `write_atomic` makes are touched.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name)
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Memory this machine can still give (Linux: MemAvailable of /proc/meminfo), in bytes;
/// None where that is not known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Keep freed memory in the process instead of handing it back to the kernel (glibc
/// only; a no-op elsewhere). The CPU engine allocates its per-step buffers (pre-activations,
/// codes, gradients: 12.6 MB of pre-activations alone at batch 512 x 6144 latents) afresh
/// each step; by default glibc returns them (munmap, or a trimmed heap top), and every step
/// then pays a page fault and a page clear per 4 KiB. Measured at 384 -> 6144, batch 512, 60
/// steps (`perf stat`): 700k page faults and 7.1 s of CPU time by default, 100k and 5.7 s
/// with this. Allocations under glibc's largest mmap threshold (32 MiB) come from the heap,
/// and the heap is never trimmed; larger ones are mapped as before.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called once, at start-up,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// `len` zeros whose pages are mapped before they are written: on Linux (5.14+) each 64 MiB
/// slice is prefaulted by madvise(MADV_POPULATE_WRITE), slices in parallel. A fresh
/// allocation this large is mapped lazily, and each 4 KiB page then costs a fault on its
/// first write; in a virtual machine that fault is dear. Measured on the 2-core VM of the
/// README (a 1 GiB buffer, two threads): written fresh 0.70-0.74 s, populated first
/// 0.27-0.31 s and written 0.19-0.22 s. The values are zeros either way; where the call is
/// refused (older kernels) the pages fault on first write as before.
pub fn prefaulted_zeros(len: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; len];
    const SLICE: usize = 16 << 20; // f32s: 64 MiB
    if len >= SLICE {
        use rayon::prelude::*;
        v.par_chunks_mut(SLICE).for_each(prefault);
    }
    v
}

/// Maps the pages that lie wholly within `s` (madvise(MADV_POPULATE_WRITE), Linux 5.14+),
/// leaving its values as they are: what a first write would fault in, without a fault a
/// page. Refused (older kernels, other systems): nothing happens.
pub fn prefault(s: &mut [f32]) {
    #[cfg(target_os = "linux")]
    {
        let pages = whole_pages(s);
        if !pages.is_empty() {
            // SAFETY: the range lies within `s`, memory the caller lends mutably;
            // MADV_POPULATE_WRITE maps its pages without changing their contents.
            unsafe {
                libc::madvise(
                    pages.start as *mut libc::c_void,
                    pages.len(),
                    libc::MADV_POPULATE_WRITE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = s;
}

/// The system's page size (4 KiB on x86-64; 16 or 64 KiB on some aarch64 kernels), which
/// madvise and mincore ranges must be aligned to.
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// The addresses of the pages that lie wholly within `s`.
#[cfg(target_os = "linux")]
fn whole_pages(s: &[f32]) -> std::ops::Range<usize> {
    let page = page_size();
    let (lo, hi) = (
        s.as_ptr() as usize,
        s.as_ptr() as usize + std::mem::size_of_val(s),
    );
    let start = lo.next_multiple_of(page);
    start..(hi / page * page).max(start)
}

/// Refuse work that needs more host memory than is available, naming what and how much
/// (an allocation failure would otherwise abort the process without a word).
pub fn check_host_memory(what: &str, bytes: u128, advice: &str) -> Result<()> {
    match available_memory() {
        Some(avail) if bytes > avail as u128 => {
            let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
            Err(Error::Device(format!(
                "{what} needs about {:.1} GiB of memory, but this machine has {:.1} GiB available; {advice}",
                gib(bytes),
                gib(avail as u128)
            )))
        }
        _ => Ok(()),
    }
}

/// Refuse, before any work, an output of about `bytes` bytes that the file system holding
/// `dir` (or its nearest existing ancestor) has no room for: it would run until the disk is
/// full and leave an incomplete output. Silent when the free space cannot be read.
pub fn check_disk_space(what: &str, dir: &Path, bytes: u128, advice: &str) -> Result<()> {
    let p = nearest_existing(dir).unwrap_or(Path::new("."));
    match fs4::available_space(p) {
        Ok(free) if bytes > free as u128 => {
            let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
            Err(Error::input(format!(
                "{what} needs about {:.1} GiB on disk, but {} has {:.1} GiB free; {advice}",
                gib(bytes),
                p.display(),
                gib(free as u128)
            )))
        }
        _ => Ok(()),
    }
}

/// Check, before any work, that `--flag path` names a file that can be written: its folder
/// exists and it is not itself a folder.
pub fn check_output_file(flag: &str, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::input(format!(
            "--{flag} {}: folder {} {}",
            path.display(),
            dir.display(),
            if dir.exists() {
                "is a file, not a folder"
            } else {
                "does not exist"
            }
        )));
    }
    if path.is_dir() {
        return Err(Error::input(format!(
            "--{flag} {}: is a folder, expected a file name",
            path.display()
        )));
    }
    Ok(())
}

/// Refuse an output folder `{flag} PATH` (`flag`: "--out", or "OUT" for a positional one)
/// that cannot be created: PATH, or the nearest of its ancestors that exists, is a file.
/// Called before any work, so that a command does not train or evaluate for minutes and
/// then fail to write.
pub fn check_output_dir(flag: &str, path: &Path) -> Result<()> {
    match nearest_existing(path) {
        Some(p) if !p.is_dir() => Err(Error::input(if p == path {
            format!("{flag} {}: is a file, expected a folder", path.display())
        } else {
            format!(
                "{flag} {}: cannot create the folder: {} is a file",
                path.display(),
                p.display()
            )
        })),
        _ => Ok(()),
    }
}

/// `path` or the nearest of its ancestors that exists (None for a relative path none of
/// whose prefixes exists).
fn nearest_existing(path: &Path) -> Option<&Path> {
    path.ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
}

/// The kinds of output a folder can hold, each with a file that shows it: a sweep, a
/// training run, a `synth` dataset. `check_foreign_output` keeps each writer out of the
/// others' folders.
const OUTPUT_KINDS: [(&str, &str); 5] = [
    ("a sweep", "sweep-spec.json"),
    ("a training run", "cfg.json"),
    ("a training run", "config.json"),
    ("a training run", "checkpoint/state.safetensors"),
    ("a synth dataset", "synth.json"),
];

/// Refuse an output folder `{flag} DIR` that holds another kind of output than `mine` (one
/// of "a sweep", "a training run", "a synth dataset"): writing there would mix two
/// commands' files, and `--overwrite` removes only the writer's own kind.
pub fn check_foreign_output(flag: &str, dir: &Path, mine: &str) -> Result<()> {
    if let Some((kind, file)) = OUTPUT_KINDS
        .iter()
        .find(|(kind, file)| *kind != mine && dir.join(file).exists())
    {
        return Err(Error::input(format!(
            "{flag} {}: holds {kind} ({file}), not {mine}; pick another folder",
            dir.display()
        )));
    }
    Ok(())
}

/// Create a folder (and parents), naming it in the error.
pub fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// A tensor to write: name, shape and its little-endian bytes in `dtype`, borrowed from
/// the data where they are its bytes as they are (a checkpoint's 1.6 GB at 2048 -> 32768
/// is not copied to be written).
pub struct OutTensor<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

impl<'a> OutTensor<'a> {
    /// `data`'s bytes as they are, stored as `dtype`.
    fn of<T: bytemuck::Pod>(name: &str, dtype: Dtype, shape: &[usize], data: &'a [T]) -> Self {
        OutTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            bytes: Cow::Borrowed(bytemuck::cast_slice(data)),
        }
    }
    pub fn f32(name: &str, shape: &[usize], data: &'a [f32]) -> Self {
        Self::of(name, Dtype::F32, shape, data)
    }
    pub fn u32(name: &str, shape: &[usize], data: &'a [u32]) -> Self {
        Self::of(name, Dtype::U32, shape, data)
    }
    pub fn i64(name: &str, shape: &[usize], data: &'a [i64]) -> Self {
        Self::of(name, Dtype::I64, shape, data)
    }
    pub fn i32(name: &str, shape: &[usize], data: &'a [i32]) -> Self {
        Self::of(name, Dtype::I32, shape, data)
    }
    /// f32 data stored as f32, f16 or bf16 (the half-precision bytes converted, owned).
    pub fn float(name: &str, shape: &[usize], data: &'a [f32], dtype: Dtype) -> Self {
        let owned = |bytes: &[u8]| OutTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            bytes: Cow::Owned(bytes.to_vec()),
        };
        match dtype {
            Dtype::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                owned(bytemuck::cast_slice(&h))
            }
            Dtype::BF16 => {
                let h: Vec<half::bf16> = data.iter().map(|&x| half::bf16::from_f32(x)).collect();
                owned(bytemuck::cast_slice(&h))
            }
            _ => Self::of(name, dtype, shape, data),
        }
    }
}

/// Write a safetensors file atomically, with a digest of every tensor and of the header in
/// its metadata (see `crate::digest`).
pub fn write_safetensors(
    path: &Path,
    tensors: &[OutTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    write_sealed(path, tensors, metadata, None)
}

/// [`write_safetensors`], returning the digest of the whole file as written.
pub fn write_safetensors_digest(
    path: &Path,
    tensors: &[OutTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<String> {
    let mut whole = crate::digest::Stream::new();
    write_sealed(path, tensors, metadata, Some(&mut whole))?;
    Ok(whole.finish())
}

/// The file `safetensors::serialize` would make of `tensors` (its layout: data by descending
/// dtype, then by name), its header's keys sorted (safetensors serialises the metadata from
/// a HashMap, in an order that changes from process to process, so the same tensors and
/// metadata always give the same bytes), written part by part: the header, then each
/// tensor's bytes where they are. `whole`, when given, is fed the file's bytes.
fn write_sealed(
    path: &Path,
    tensors: &[OutTensor],
    metadata: Option<HashMap<String, String>>,
    whole: Option<&mut crate::digest::Stream>,
) -> Result<()> {
    use safetensors::tensor::{Metadata, TensorInfo};
    let internal = |e: String| Error::Internal(format!("{}: {e}", path.display()));
    let mut order: Vec<&OutTensor> = tensors.iter().collect();
    order.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(&b.name)));
    let mut infos = Vec::with_capacity(order.len());
    let mut offset = 0;
    for t in &order {
        // The length check of safetensors' own views.
        TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
            .map_err(|e| internal(format!("tensor {}: {e}", t.name)))?;
        let info = TensorInfo {
            dtype: t.dtype,
            shape: t.shape.clone(),
            data_offsets: (offset, offset + t.bytes.len()),
        };
        offset += t.bytes.len();
        infos.push((t.name.clone(), info));
    }
    let sealed: Vec<(&str, Dtype, &[usize], String)> = tensors
        .iter()
        .map(|t| {
            let digest = crate::digest::of(&t.bytes);
            (t.name.as_str(), t.dtype, t.shape.as_slice(), digest)
        })
        .collect();
    let metadata = Some(crate::digest::seal(metadata, &sealed));
    let header = Metadata::new(metadata, infos).map_err(|e| internal(e.to_string()))?;
    let header = serde_json::to_value(&header).map_err(|e| internal(e.to_string()))?;
    let mut header = crate::digest::canonical_json(&header).into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let len = (header.len() as u64).to_le_bytes();
    let mut parts: Vec<&[u8]> = vec![&len, &header];
    parts.extend(order.iter().map(|t| &t.bytes[..]));
    write_atomic_parts(path, &parts)?;
    if let Some(d) = whole {
        parts.iter().for_each(|p| d.update(p));
    }
    Ok(())
}

/// Write JSON atomically (pretty-printed, newline-terminated).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

#[cfg(test)]
mod disk_tests {
    use std::path::Path;

    /// A corpus case through `synth` or `demo` cannot test this safely: on a binary without
    /// the check it writes until the disk is full.
    #[test]
    fn check_disk_space_refuses_what_the_disk_cannot_hold() {
        let e = super::check_disk_space("--tokens 9", Path::new("no/such/dir"), u128::MAX, "x")
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(
            m.contains("--tokens 9 needs about") && m.contains("GiB free; x"),
            "{m}"
        );
        assert!(super::check_disk_space("y", Path::new("."), 1, "x").is_ok());
    }
}

#[cfg(test)]
mod safetensors_tests {
    use std::collections::HashMap;

    use safetensors::Dtype;
    use safetensors::tensor::TensorView;

    use super::OutTensor;

    /// The file as it was made before the writer went part by part: safetensors' own
    /// `serialize` into one buffer, then the header re-serialised with sorted keys.
    fn serialized(tensors: &[OutTensor], metadata: HashMap<String, String>) -> Vec<u8> {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|t| {
                let v = TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap();
                (t.name.clone(), v)
            })
            .collect();
        let bytes = safetensors::serialize(views, Some(metadata)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let v: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let mut header = crate::digest::canonical_json(&v).into_bytes();
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&bytes[8 + n..]);
        out
    }

    /// Tensors of three dtypes whose names and dtypes order differently, with metadata: the
    /// same bytes as safetensors' layout gives, and the digest of those bytes.
    #[test]
    fn written_part_by_part_as_serialize_lays_it_out() {
        let (a, b, c) = ([1.5f32, -2.0, 3.25], [7u32, 8], [-1i64, 2, -3, 4]);
        let tensors = [
            OutTensor::f32("zeta", &[3], &a),
            OutTensor::u32("alpha", &[2, 1], &b),
            OutTensor::i64("mid", &[2, 2], &c),
            OutTensor::float("half", &[3], &a, Dtype::F16),
            OutTensor::f32("empty", &[0], &[]),
        ];
        let md = HashMap::from([("k".to_string(), "v".to_string())]);
        let dir = std::env::temp_dir().join(format!("saeforge-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let digest = super::write_safetensors_digest(&path, &tensors, Some(md.clone())).unwrap();
        let got = std::fs::read(&path).unwrap();
        let sealed: Vec<(&str, Dtype, &[usize], String)> = (tensors.iter())
            .map(|t| {
                (
                    t.name.as_str(),
                    t.dtype,
                    &t.shape[..],
                    crate::digest::of(&t.bytes),
                )
            })
            .collect();
        let want = serialized(&tensors, crate::digest::seal(Some(md), &sealed));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(got == want, "the file differs from serialize's layout");
        assert_eq!(digest, crate::digest::of(&got));
    }
}

#[cfg(test)]
mod prefault_tests {
    /// Zeros of the asked length, below one slice, across slices and with a ragged end
    /// (the madvise ranges are rounded inwards to pages; nothing outside them is touched).
    #[test]
    fn prefaulted_zeros_are_zeros_of_the_length_asked() {
        for len in [0, 5, (16 << 20) - 3, (16 << 20) * 2 + 1027] {
            let mut v = super::prefaulted_zeros(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x.to_bits() == 0), "len {len}: not all +0");
            if let Some(last) = v.last_mut() {
                *last = 1.0;
                assert_eq!(v[len - 1], 1.0);
            }
        }
    }

    /// The pages are resident before anything is written (mincore), which is the point:
    /// a plain allocation of this size is not.
    #[cfg(target_os = "linux")]
    #[test]
    fn prefaulted_zeros_are_resident_before_the_first_write() {
        let resident = |v: &[f32]| -> f64 {
            let pages = super::whole_pages(v);
            let mut vec = vec![0u8; pages.len() / super::page_size()];
            // SAFETY: the range lies within v; mincore only reads the page tables.
            let rc = unsafe {
                libc::mincore(
                    pages.start as *mut libc::c_void,
                    pages.len(),
                    vec.as_mut_ptr(),
                )
            };
            assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
            vec.iter().filter(|&&b| b & 1 == 1).count() as f64 / vec.len() as f64
        };
        let len = (16 << 20) * 3;
        let plain = vec![0.0f32; len];
        let fresh = resident(&plain);
        let v = super::prefaulted_zeros(len);
        let pre = resident(&v);
        assert!(
            fresh < 0.5,
            "a plain allocation was already {fresh:.2} resident"
        );
        assert!(
            pre > 0.99,
            "prefaulted_zeros left {:.2} of its pages unmapped",
            1.0 - pre
        );
    }
}
