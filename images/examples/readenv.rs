//! Prints the redundant U-Boot env of a raw disk built by devlab-images:
//! `cargo run -p devlab-images --example readenv -- DISK.raw [recipe] [arch]`.
//! A developer convenience; reads only, never writes the disk.
use devlab_images::Arch;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let disk = Path::new(&args[0]);
    let recipe = args.get(1).map(String::as_str).unwrap_or("images/recipes/base.toml");
    let arch = Arch::parse(args.get(2).map(String::as_str).unwrap_or("x86_64")).expect("arch");
    let img = devlab_images::locate(Path::new(recipe), arch).expect("locate");
    let st = img.manifest.read_env(disk).expect("read env");
    for (i, c) in st.copies.iter().enumerate() {
        println!("copy {i}: valid={} flag={} vars={:?}", c.valid, c.flag, c.vars);
    }
    println!("current: {:?}", st.current);
}
