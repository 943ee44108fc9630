//! Layer-writer throughput: `cargo bench --bench layer -- DIR [REPEAT]` writes DIR as an
//! image layer (walk → tar → gzip → sha256, one streaming pass) into a temporary blob
//! directory and prints the uncompressed MB/s, for bench/build.sh to compare with
//! `tar -c | gzip -6` of the same tree. Run it under `/usr/bin/time -f %M` for peak RSS.

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; only positional arguments are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: cargo bench --bench layer -- DIR [REPEAT]");
        return Ok(());
    };
    let repeat: u32 = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    let blobs = tempfile::tempdir()?;
    let mut best = f64::MAX;
    let mut layer = None;
    for _ in 0..repeat {
        let started = Instant::now();
        let mut tree = ocilambda::tree::Tree::new();
        tree.add_dir_all(std::path::Path::new(dir), "")?;
        let l = ocilambda::layers::write(&tree.prefixed("var/task"), 0, blobs.path())?;
        best = best.min(started.elapsed().as_secs_f64());
        layer = Some(l);
    }
    let l = layer.expect("at least one run");
    println!(
        "layer writer: {} files, {:.1} MB tar -> {:.1} MB gzip in {:.3}s (best of {repeat}): {:.1} MB/s",
        l.files,
        l.uncompressed_size as f64 / 1e6,
        l.size as f64 / 1e6,
        best,
        l.uncompressed_size as f64 / 1e6 / best
    );
    Ok(())
}
