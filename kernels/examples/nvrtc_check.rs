//! Compiles every CUDA source of `kernels` with NVRTC, the way the worker does at run time, for
//! the architectures given (default `compute_90`), and prints each PTX's size and entry points.
//! Needs libnvrtc only: no driver, no GPU. Built in the CUDA build (`--features cuda`); on a
//! machine without the driver, point the loader at the stub libcuda `deploy/scripts/cuda.sh`
//! makes (the binary links it but this program never calls it):
//!
//! ```sh
//! bash deploy/scripts/nvrtc-check.sh
//! ```

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arches: Vec<&'static str> = if args.is_empty() {
        vec!["compute_90"]
    } else {
        args.into_iter().map(|a| &*Box::leak(a.into_boxed_str())).collect()
    };
    for arch in arches {
        for src in kernels::cuda::ALL {
            let ptx = kernels::cuda::ptx(&src, arch)?;
            let entries: Vec<&str> =
                ptx.lines().filter_map(|l| l.split(".entry ").nth(1)).map(|e| e.trim_end_matches('(')).collect();
            println!("{arch} {}: {} bytes of PTX, entries {entries:?}", src.module, ptx.len());
            if entries.is_empty() {
                return Err(format!("{}: no kernel entry points in the PTX", src.module).into());
            }
        }
    }
    Ok(())
}
