//! Builds (or finds) an image from the command line, printing each step:
//! `cargo run -p devlab-images --example build -- images/recipes/base.toml x86_64`.
//! A developer convenience only; `cargo xtask images` is the supported entry.
use devlab_images::Arch;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let recipe = args.first().map(String::as_str).unwrap_or("images/recipes/base.toml");
    let arches: Vec<Arch> = match args.get(1) {
        Some(a) => vec![Arch::parse(a).expect("arch: x86_64 or aarch64")],
        None => Arch::ALL.to_vec(),
    };
    for arch in arches {
        let t = std::time::Instant::now();
        let mut log = |s: &str| eprintln!("[{arch}] {s}");
        match devlab_images::build(Path::new(recipe), arch, &mut log) {
            Ok(img) => println!("{arch}: {} ({:.2}s)", img.disk.display(), t.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("{arch}: {e}");
                std::process::exit(1);
            }
        }
    }
}
