//! `kernels` will own reelforge's CUDA kernels (`.cu` sources compiled at run time by NVRTC
//! through cudarc) and their Rust launchers. Empty until the custom-kernels issue lands: the
//! workspace and its `cuda` feature exist now so that the dependency direction is fixed
//! (`worker` → `kernels`) and the CPU build never touches CUDA.
