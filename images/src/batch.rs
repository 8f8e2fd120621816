//! Many images at once: [`build_all`] builds a list of (recipe, arch) images
//! on a few worker threads (bounded by cores and free memory), longest
//! first by the times recorded in `<cache>/images/build-times.json`, and
//! reports progress with an estimate of what is left: a bar on a terminal,
//! one line per finished image otherwise (CI logs).
//!
//! Invariants: an image already built for the recipe's current inputs costs
//! one [`crate::locate`] (no process); a failure stops handing out work,
//! waits for the builds under way and names the image that failed; shared
//! stores (apt cache, downloads, kernels, OSTree repo, keys) are guarded by
//! their own locks, so any two builds may run side by side.
use crate::{build, cache, locate, Arch, BuiltImage, ImageError};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Memory one build may hold at its peak (the rootfs tree, mke2fs, a disk
/// being assembled): workers beyond free memory / this wait.
const MEMORY_PER_BUILD: u64 = 1536 << 20;
/// The estimate for an image never built on this machine.
const UNKNOWN_SECS: f64 = 15.0;

/// How many images to build at once: `$DEVLAB_BUILD_WORKERS` if set, else
/// the cores, fewer if memory is short.
pub fn default_workers() -> usize {
    if let Some(n) = std::env::var("DEVLAB_BUILD_WORKERS").ok().and_then(|v| v.parse::<usize>().ok()) {
        return n.max(1);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let by_memory = mem_available().map_or(cores, |m| (m / MEMORY_PER_BUILD).max(1) as usize);
    cores.min(by_memory).max(1)
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// `<recipe stem>-<arch>`, the name progress and build times use.
fn label(recipe: &Path, arch: Arch) -> String {
    format!("{}-{arch}", recipe.file_stem().unwrap_or_default().to_string_lossy())
}

fn times_path(root: &Path) -> PathBuf {
    root.join("images").join("build-times.json")
}

/// Seconds each image took to build last time, by [`label`].
fn read_times(root: &Path) -> BTreeMap<String, f64> {
    std::fs::read(times_path(root)).ok().and_then(|t| serde_json::from_slice(&t).ok()).unwrap_or_default()
}

/// Where the builds stand, for the estimate.
struct State {
    left: Vec<usize>,
    running: BTreeMap<usize, Instant>,
    done: usize,
    measured: BTreeMap<String, f64>,
}

/// The progress display: an indicatif bar on a terminal, lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template("images {pos}/{len} [{bar:30}] {wide_msg}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress { bar, total }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn finished(&self, done: usize, text: &str, left_s: f64) {
        let estimate = if done == self.total { String::new() } else { format!(", about {} left", human(left_s)) };
        match &self.bar {
            Some(b) => {
                b.set_position(done as u64);
                b.set_message(format!("{text}{estimate}"));
            }
            None => eprintln!("images {done}/{}: {text}{estimate}", self.total),
        }
    }
}

fn human(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Builds every (recipe, arch) in `jobs` that is not built yet, `workers`
/// at a time; returns the images in the order of `jobs`. `verbose` echoes
/// each build's phase lines.
pub fn build_all(jobs: &[(PathBuf, Arch)], workers: usize, verbose: bool) -> Result<Vec<BuiltImage>, ImageError> {
    // Each image once: two builds of one image would clean up each other.
    let mut unique: Vec<(PathBuf, Arch)> = Vec::new();
    for j in jobs {
        if !unique.contains(j) {
            unique.push(j.clone());
        }
    }
    let built = build_unique(&unique, workers, verbose)?;
    Ok(jobs.iter().map(|j| built[unique.iter().position(|u| u == j).expect("listed")].clone()).collect())
}

fn build_unique(jobs: &[(PathBuf, Arch)], workers: usize, verbose: bool) -> Result<Vec<BuiltImage>, ImageError> {
    let root = cache::cache_root();
    let mut out: Vec<Option<BuiltImage>> = jobs.iter().map(|(r, a)| locate(r, *a).ok()).collect();
    let known = read_times(&root);
    let estimate = |i: usize| known.get(&label(&jobs[i].0, jobs[i].1)).copied().unwrap_or(UNKNOWN_SECS);
    let mut left: Vec<usize> = (0..jobs.len()).filter(|&i| out[i].is_none()).collect();
    if left.is_empty() {
        return Ok(out.into_iter().map(|b| b.expect("all located")).collect());
    }
    // Longest first (ties by order), popped from the end.
    left.sort_by(|&a, &b| estimate(a).total_cmp(&estimate(b)).then(b.cmp(&a)));
    let progress = Progress::new(left.len());
    let workers = workers.clamp(1, left.len());
    progress.line(&format!("building {} image(s), {workers} at a time", left.len()));
    let state = Mutex::new(State { left, running: BTreeMap::new(), done: 0, measured: BTreeMap::new() });
    let results: Mutex<Vec<(usize, Result<BuiltImage, ImageError>)>> = Mutex::new(Vec::new());
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let next = {
                    let mut st = state.lock().expect("state");
                    if failed.load(Ordering::SeqCst) {
                        None
                    } else {
                        st.left.pop().inspect(|&i| {
                            st.running.insert(i, Instant::now());
                        })
                    }
                };
                let Some(i) = next else { break };
                let (recipe, arch) = (&jobs[i].0, jobs[i].1);
                let name = label(recipe, arch);
                let t = Instant::now();
                let since = std::time::SystemTime::now();
                let res = build(recipe, arch, &mut |l: &str| {
                    if verbose {
                        progress.line(&format!("  [{name}] {l}"));
                    }
                });
                let secs = t.elapsed().as_secs_f64();
                let mut st = state.lock().expect("state");
                st.running.remove(&i);
                st.done += 1;
                match &res {
                    Ok(img) => {
                        if built_since(img, since) {
                            // Only a real build's time (not a lookup of an
                            // entry another build made) is an estimate.
                            st.measured.insert(name.clone(), secs);
                        }
                        let left_s = remaining(&st, &estimate, workers);
                        progress.finished(st.done, &format!("{name} ({secs:.1}s)"), left_s);
                    }
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        progress.line(&format!("image {name} failed after {secs:.1}s: {e}"));
                    }
                }
                results.lock().expect("results").push((i, res));
            });
        }
    });
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    let st = state.into_inner().expect("state");
    record_times(&root, known, st.measured);
    for (i, res) in results.into_inner().expect("results") {
        match res {
            Ok(b) => out[i] = Some(b),
            Err(e) => return Err(ImageError::Build { image: label(&jobs[i].0, jobs[i].1), cause: Box::new(e) }),
        }
    }
    Ok(out.into_iter().map(|b| b.expect("every job built")).collect())
}

/// Whether `img` was built at or after `since` (its manifest, written last,
/// is that new), rather than found in the cache.
fn built_since(img: &BuiltImage, since: std::time::SystemTime) -> bool {
    std::fs::metadata(img.dir.join("manifest.json")).and_then(|m| m.modified()).is_ok_and(|m| m >= since)
}

/// Seconds left: the estimates of the images not started and what is left
/// of the running ones, spread over the workers.
fn remaining(st: &State, estimate: &dyn Fn(usize) -> f64, workers: usize) -> f64 {
    let queued: f64 = st.left.iter().map(|&i| estimate(i)).sum();
    let running: f64 = st.running.iter().map(|(&i, t)| (estimate(i) - t.elapsed().as_secs_f64()).max(0.0)).sum();
    (queued + running) / workers as f64
}

/// Merges this batch's measured times into `build-times.json`.
fn record_times(root: &Path, mut known: BTreeMap<String, f64>, measured: BTreeMap<String, f64>) {
    if measured.is_empty() {
        return;
    }
    known.extend(measured);
    if let Ok(json) = serde_json::to_vec_pretty(&known) {
        let _ = cache::write_atomic(&times_path(root), &json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_spread_over_workers_and_labels_name_recipe_and_arch() {
        let st = State { left: vec![0, 1], running: BTreeMap::new(), done: 0, measured: BTreeMap::new() };
        let est = |i: usize| [10.0, 30.0][i];
        assert_eq!(remaining(&st, &est, 2), 20.0);
        assert_eq!(remaining(&st, &est, 1), 40.0);
        assert_eq!(label(Path::new("images/recipes/v2.toml"), Arch::Aarch64), "v2-aarch64");
        assert_eq!(human(75.2), "1m15s");
        assert_eq!(human(9.6), "10s");
    }

    #[test]
    fn workers_are_at_least_one_and_at_most_the_cores() {
        let w = default_workers();
        assert!(w >= 1 && w <= std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
}
